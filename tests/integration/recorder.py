"""A recording upstream: raw TCP on 127.0.0.1 that keeps the exact bytes of every connection.

It stands where an app would, behind a proxy's ``--app``. Each accepted connection gets a
thread; every byte received is appended to that connection's record *before* anything is
parsed, so a test sees what reached the upstream even when it is garbage. Requests are
delimited with ``proxy.http1.RequestParser`` only to know when to answer; the answer is
whatever ``Recorder.reply`` says (a canned ``Reply``, possibly malformed on purpose, or a
function of the request). A ``Reply`` with ``upgrade=True`` turns the connection into an
echo of raw bytes after it is written (a WebSocket stand-in).

Threads rather than asyncio: the tests drive the proxies with blocking sockets, and the
recorder must keep answering while a test blocks on one of them.

Also here, shared by test_framing.py and test_http_semantics.py: a raw client (``exchange``,
``read``: bytes out, responses parsed back with the strict ResponseParser, and whether the
peer closed) and ``two_hop``, the mesh they run through: a registry over fixtures/framing,
echo's proxy in front of a Recorder, and client's proxy with an explicit listener for echo.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.http1 import (
    Data,
    EndOfMessage,
    ProtocolError,
    Request,
    RequestParser,
    Response,
    ResponseParser,
)
from tests.integration.harness import Mesh, free_port, http_get, wait_until


@dataclass(frozen=True, slots=True)
class Reply:
    """What to write after a complete request: ``data`` then, optionally, ``late`` a bit later.

    ``close``: close the connection after writing (a body delimited by close).
    ``upgrade``: after writing, echo every further byte back (for a 101).
    ``late``: bytes written ``late_delay_s`` after ``data``, as a separate segment (an
    upstream that answers one request twice).
    """

    data: bytes
    close: bool = False
    upgrade: bool = False
    late: bytes = b""
    late_delay_s: float = 0.2


@dataclass(slots=True)
class Seen:
    """One request as the recorder parsed it: head, body length and digest."""

    request: Request
    body_len: int = 0
    sha256: str = ""


@dataclass(slots=True)
class Conn:
    """One accepted connection: the bytes it carried, the requests in them, whether it ended."""

    index: int
    data: bytearray = field(default_factory=bytearray)
    requests: list[Seen] = field(default_factory=list)
    error: str | None = None  # the recorder's own parser refused the bytes
    closed: threading.Event = field(default_factory=threading.Event)
    late_sent: threading.Event = field(default_factory=threading.Event)  # Reply.late written


Responder = Callable[[Seen], Reply]


def ok_reply(seen: Seen) -> Reply:
    """The default answer: 200 naming what arrived (method, target, body length, digest)."""
    r = seen.request
    body = b"%s %s %d %s" % (r.method, r.target, seen.body_len, seen.sha256.encode())
    return Reply(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class Recorder:
    """Listen on 127.0.0.1 at a free port; ``with Recorder() as rec: ... rec.port``."""

    def __init__(self) -> None:
        self._lsock = socket.socket()
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(128)
        self.port: int = self._lsock.getsockname()[1]
        self.reply: Reply | Responder = ok_reply
        self._lock = threading.Lock()
        self._conns: list[Conn] = []
        self._opened = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []

    # -- control ------------------------------------------------------------------------

    def __enter__(self) -> Recorder:
        t = threading.Thread(target=self._accept, name="recorder-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._lsock.shutdown(socket.SHUT_RDWR)
        self._lsock.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)

    def clear(self, reply: Reply | Responder = ok_reply) -> None:
        """Start a new case: forget what closed connections carried, empty open ones' records.

        Open connections stay open (the proxy may have them pooled); a test then sees only
        bytes that arrived after this call.
        """
        with self._lock:
            self._conns = [c for c in self._conns if not c.closed.is_set()]
            for c in self._conns:
                c.data.clear()
                c.requests.clear()
                c.error = None
            self._opened = 0
            self.reply = reply

    @property
    def conns(self) -> list[Conn]:
        """Connections that were open at the last clear() or opened since, in accept order."""
        with self._lock:
            return list(self._conns)

    @property
    def opened(self) -> int:
        """Connections accepted since the last clear()."""
        return self._opened

    def used(self) -> list[Conn]:
        """The connections that carried at least one byte since the last clear()."""
        return [c for c in self.conns if c.data]

    def received(self) -> bytes:
        """Every byte received since the last clear(), connections concatenated in order."""
        return b"".join(bytes(c.data) for c in self.conns)

    def requests(self) -> list[Seen]:
        """Every complete request received since the last clear()."""
        return [s for c in self.conns for s in c.requests]

    def wait_requests(self, n: int, timeout: float = 10.0) -> list[Seen]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.requests()
            if len(seen) >= n:
                return seen
            time.sleep(0.02)
        raise AssertionError(f"recorder got {len(self.requests())} requests, expected {n}")

    # -- the server ---------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping:
            try:
                sock, _ = self._lsock.accept()
            except OSError:
                return
            with self._lock:
                conn = Conn(len(self._socks))
                self._conns.append(conn)
                self._socks.append(sock)
                self._opened += 1
            t = threading.Thread(target=self._serve, args=(sock, conn), daemon=True,
                                 name=f"recorder-{conn.index}")
            t.start()
            self._threads.append(t)

    def _serve(self, sock: socket.socket, conn: Conn) -> None:
        parser = RequestParser()
        current: Seen | None = None
        digest = hashlib.sha256()
        echo = False
        try:
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                with self._lock:
                    conn.data += data
                if echo:
                    if not data:
                        return
                    sock.sendall(data)
                    continue
                try:
                    events = parser.feed(data)
                except ProtocolError as exc:
                    conn.error = str(exc)
                    return
                for ev in events:
                    if isinstance(ev, Request):
                        current, digest = Seen(ev), hashlib.sha256()
                    elif isinstance(ev, Data) and current is not None:
                        current.body_len += len(ev.data)
                        digest.update(ev.data)
                    elif isinstance(ev, EndOfMessage) and current is not None:
                        current.sha256 = digest.hexdigest()[:16]
                        with self._lock:
                            conn.requests.append(current)
                        reply = self.reply if isinstance(self.reply, Reply) else self.reply(current)
                        sock.sendall(reply.data)
                        if reply.late:
                            time.sleep(reply.late_delay_s)
                            sock.sendall(reply.late)
                            conn.late_sent.set()
                        if reply.close or not current.request.keep_alive:
                            return
                        if reply.upgrade:
                            echo = True
                            rest = parser.take_remaining()
                            if rest:
                                sock.sendall(rest)
                        current = None
                if not data:
                    return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            conn.closed.set()


# -- the client side: raw bytes to a proxy's listener, responses parsed back ---------------


@dataclass(slots=True)
class Answer:
    """What a raw client got: each response head with its body, and whether the peer closed."""

    responses: list[tuple[Response, bytes]]
    closed: bool
    raw: bytes

    @property
    def statuses(self) -> list[int]:
        return [r.status for r, _ in self.responses]

    @property
    def final(self) -> list[tuple[Response, bytes]]:
        """The responses without the informational (1xx but 101) ones."""
        return [(r, b) for r, b in self.responses if not r.informational]


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def send(sock: socket.socket, data: bytes) -> None:
    """Send, ignoring a peer that already refused and closed (its answer is still readable)."""
    with contextlib.suppress(OSError):
        sock.sendall(data)


def read(sock: socket.socket, methods: list[bytes], *, until_close: bool = False,
         timeout: float = 10.0) -> Answer:
    """Read the final responses to ``methods`` (requests sent in that order).

    With ``until_close``, keep reading until the peer closes or ``timeout`` passes; ``closed``
    says which. A reset counts as closed. The client-side parser is the proxy's own
    ResponseParser: anything it refuses fails the test with the raw bytes.
    """
    parser = ResponseParser()
    for m in methods:
        parser.expect(m)
    responses: list[tuple[Response, bytes]] = []
    body = bytearray()
    raw = bytearray()
    finals = 0
    closed = False
    deadline = time.monotonic() + timeout
    while not closed and (until_close or finals < len(methods)):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:
            data = b""
        raw += data
        closed = not data
        try:
            events = parser.feed(data)
        except ProtocolError as exc:
            if closed:  # closed mid-response: what arrived is in `responses`, incomplete
                break
            raise AssertionError(f"client could not parse {bytes(raw)[:300]!r}: {exc}") from exc
        for ev in events:
            if isinstance(ev, Response):
                responses.append((ev, b""))
                body.clear()
                if ev.informational:
                    continue
            elif isinstance(ev, Data):
                body += ev.data
            elif isinstance(ev, EndOfMessage):
                head, _ = responses[-1]
                responses[-1] = (head, bytes(body))
                finals += 1
    return Answer(responses, closed, bytes(raw))


def exchange(port: int, data: bytes, methods: list[bytes] | None = None, *,
             until_close: bool = False, timeout: float = 10.0) -> Answer:
    """One new connection: send ``data``, read the responses, close."""
    with connect(port, timeout) as sock:
        send(sock, data)
        return read(sock, methods or [b"GET"], until_close=until_close, timeout=timeout)


def count_requests(data: bytes) -> int:
    """Requests whose head parses in ``data``, by the strict parser (stops at its first refusal)."""
    parser = RequestParser()
    n = 0
    try:
        for ev in parser.feed(data):
            n += isinstance(ev, Request)
    except ProtocolError:
        pass
    return n


# -- the two-hop mesh around a recorder ---------------------------------------------------

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "framing"


@dataclass(slots=True)
class TwoHop:
    """client socket -> client's proxy (explicit listener ``port``) -> mTLS -> echo's proxy
    -> recorder."""

    mesh: Mesh
    recorder: Recorder
    port: int
    client_proxy: dict[str, Any]
    echo_proxy: dict[str, Any]

    def new_case(self, reply: Reply | Responder = ok_reply) -> Recorder:
        self.recorder.clear(reply)
        return self.recorder


@contextlib.contextmanager
def two_hop(tmp: Path, env: dict[str, str] | None = None) -> Iterator[TwoHop]:
    """A registry over fixtures/framing, echo's proxy in front of a Recorder, client's proxy
    (`env`: extra environment for them all, e.g. MESH_FASTPATH=0)."""
    with Recorder() as rec:
        mesh = Mesh(tmp, FIXTURE)
        mesh.env.update(env or {})
        try:
            mesh.start_registry()
            echo = mesh.proxy("echo", "v1", app_port=rec.port)
            local = free_port()
            client = mesh.proxy("client", "v1", upstreams={"echo:8080": local})
            wait_until(lambda: http_get(f"http://127.0.0.1:{local}/ready")[0] == 200,
                       timeout=30, what="a first request through both proxies")
            yield TwoHop(mesh, rec, local, client, echo)
        finally:
            mesh.close()
