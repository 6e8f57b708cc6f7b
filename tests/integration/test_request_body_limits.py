"""Request bodies that stall or are too large, through real proxies (issue 19, item 10).

client socket -> client's proxy (explicit listener) -> mTLS -> echo's proxy -> upstream.

- A body that stops arriving is cut by the proxy whose body timeout runs out first:
  `--body-idle-timeout` (no piece of body for that long; Envoy's stream_idle_timeout) or
  `--request-timeout` (head to end of body; Envoy's request_timeout, what cuts a trickle).
  The client gets 408 and its connection closed, the request is counted with flag SI, and
  an upstream that had part of the body sees its connection closed with no whole request.
  On the outbound side (the client's proxy times out) and on the inbound side (echo's proxy
  does; the client's proxy relays its 408 while it is still streaming the body).
- A body over the app's limit: the app answers 413 before reading it, and that 413 is what
  the client gets (it used to be a 503: the proxy failed writing the rest of the body to
  an app that had answered and closed).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Mesh, free_port, http_get, wait_until
from tests.integration.recorder import FIXTURE, Answer, Recorder, connect, read, send

pytestmark = pytest.mark.slow

FAST = ("--body-idle-timeout", "1", "--request-timeout", "3")


class Hop:
    def __init__(self, mesh: Mesh, port: int, client: dict[str, object],
                 echo: dict[str, object], rec: Recorder | None) -> None:
        self.mesh, self.port, self.client, self.echo, self.rec = mesh, port, client, echo, rec

    def new_case(self) -> Recorder:
        """The upstream recorder, cleared for a new case."""
        assert self.rec is not None
        self.rec.clear()
        return self.rec

    def metrics(self, who: dict[str, object]) -> str:
        return http_get(f"http://127.0.0.1:{who['metrics']}/metrics")[1].decode()


@contextlib.contextmanager
def _hop(tmp: Path, *, client: tuple[str, ...] = (), echo: tuple[str, ...] = (),
         shop: bool = False, app: int | None = None) -> Iterator[Hop]:
    """The two proxies in front of a Recorder, the example shop app or a server at `app`."""
    with contextlib.ExitStack() as stack:
        rec = None if shop or app else stack.enter_context(Recorder())
        mesh = Mesh(tmp, FIXTURE)
        stack.callback(mesh.close)
        mesh.start_registry()
        app_port = mesh.app("echo")[1] if shop else app or rec.port  # type: ignore[union-attr]
        e = mesh.proxy("echo", "v1", app_port=app_port, extra=echo)
        local = free_port()
        c = mesh.proxy("client", "v1", upstreams={"echo:8080": local}, extra=client)
        wait_until(lambda: http_get(f"http://127.0.0.1:{local}/healthz")[0] == 200
                   if shop else http_get(f"http://127.0.0.1:{local}/ready")[0] == 200,
                   timeout=30, what="a first request through both proxies")
        if rec is not None:
            rec.clear()
        yield Hop(mesh, local, c, e, rec)


class EarlyAnswer:
    """An upstream that answers a POST with 413 as soon as its head arrives, keeping the
    connection open (no `Connection: close`), then counts what else arrives until EOF; GETs
    get 200. A proxy must not reuse such a connection: the rest of the cut body would be read
    as the next request."""

    def __init__(self) -> None:
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.cut: list[threading.Event] = []  # per POST: set when its connection ends
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = self.lsock.accept()
                threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        buf = b""
        with sock, contextlib.suppress(OSError):
            sock.settimeout(30)
            while b"\r\n\r\n" not in buf or buf.startswith(b"GET"):
                if b"\r\n\r\n" in buf:  # a GET: answer it, keep reading
                    buf = buf.split(b"\r\n\r\n", 1)[1]
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    continue
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            ended = threading.Event()
            self.cut.append(ended)
            sock.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
            while sock.recv(65536):
                pass
            ended.set()

    def close(self) -> None:
        self.lsock.close()


@pytest.fixture(scope="module")
def early(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hop, EarlyAnswer]]:
    server = EarlyAnswer()
    try:
        with _hop(tmp_path_factory.mktemp("body-early"), app=server.port) as h:
            yield h, server
    finally:
        server.close()


@pytest.fixture(scope="module")
def outbound_cuts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hop]:
    """The client's proxy has the short body timeouts; echo's proxy the defaults."""
    with _hop(tmp_path_factory.mktemp("body-out"), client=FAST) as h:
        yield h


@pytest.fixture(scope="module")
def inbound_cuts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hop]:
    """Echo's proxy has the short body timeouts; the client's proxy the defaults."""
    with _hop(tmp_path_factory.mktemp("body-in"), echo=FAST) as h:
        yield h


@pytest.fixture(scope="module")
def shop_hop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hop]:
    """Default proxies in front of the example shop app (64 MiB request body limit)."""
    with _hop(tmp_path_factory.mktemp("body-413"), shop=True) as h:
        yield h


def _post(length: int) -> bytes:
    return b"POST /upload HTTP/1.1\r\nHost: echo\r\nContent-Length: %d\r\n\r\n" % length


def _warm(sock: socket.socket) -> None:
    """One whole request first: the next head then arrives while the connection waits for
    it (the fast path's listener is on), not with the connection's first read."""
    send(sock, b"GET /first HTTP/1.1\r\nHost: echo\r\n\r\n")
    assert read(sock, [b"GET"]).statuses == [200]


def _stall(port: int, head: bytes, body: bytes) -> Answer:
    """Send a head and part of its body, then nothing: the proxy must answer and close."""
    with connect(port, timeout=20) as sock:
        _warm(sock)
        send(sock, head + body)
        return read(sock, [b"POST"], until_close=True, timeout=20)


def _assert_408(ans: Answer) -> None:
    assert ans.statuses == [408], f"expected 408, got {ans.raw[:300]!r}"
    assert ans.final[0][1] == b"stream timeout"
    assert ans.closed, "the connection must close: the rest of the body is never read"


def _upstream_saw_no_whole_request(rec: Recorder) -> None:
    """What reached the upstream (if anything) was a partial request, on a connection that
    was then closed."""
    used = rec.used()
    wait_until(lambda: all(c.closed.is_set() for c in used if b"POST" in c.data), timeout=15,
               what="the upstream connection that had part of the body to be closed")
    assert [s.request.target for s in rec.requests()] == [b"/first"], \
        "a stalled request must never arrive whole"


def test_a_stalled_small_body_is_408_and_never_reaches_the_upstream(outbound_cuts: Hop) -> None:
    """10 bytes of a 1000-byte body, then nothing: 408 `SI` from the client's proxy, counted."""
    rec = outbound_cuts.new_case()
    ans = _stall(outbound_cuts.port, _post(1000), b"x" * 10)
    _assert_408(ans)
    assert b"POST" not in rec.received(), "held in the replay buffer: nothing went upstream"
    assert 'response_code="408"' in outbound_cuts.metrics(outbound_cuts.client)
    assert 'response_flags="SI"' in outbound_cuts.metrics(outbound_cuts.client)


def test_a_body_that_never_starts_is_408(outbound_cuts: Hop) -> None:
    """A head announcing 1000 bytes, then nothing: the body idle timeout, not the (longer,
    silent) header timeout, ends it."""
    rec = outbound_cuts.new_case()
    _assert_408(_stall(outbound_cuts.port, _post(1000), b""))
    assert b"POST" not in rec.received()


def test_a_stalled_streamed_body_is_408_and_the_upstream_is_cut(outbound_cuts: Hop) -> None:
    """Past the 64 KiB replay buffer the head and the body's start are already upstream."""
    rec = outbound_cuts.new_case()
    ans = _stall(outbound_cuts.port, _post(1_000_000), b"x" * 200_000)
    _assert_408(ans)
    wait_until(lambda: b"POST /upload" in rec.received(), timeout=10,
               what="the streamed head at the upstream")
    _upstream_saw_no_whole_request(rec)


def test_a_chunked_trickle_is_cut_by_the_request_timeout(outbound_cuts: Hop) -> None:
    """One byte every 0.4 s never trips the 1 s idle timeout; the 3 s request timeout cuts it."""
    rec = outbound_cuts.new_case()
    with connect(outbound_cuts.port, timeout=20) as sock:
        _warm(sock)
        send(sock, b"POST /trickle HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n")
        ans: Answer | None = None
        for _ in range(50):  # 20 s at most; the proxy answers after about 3 s
            send(sock, b"1\r\nx\r\n")
            sock.settimeout(0.4)
            try:
                data = sock.recv(65536, 2)  # MSG_PEEK: leave it for read()
            except TimeoutError:
                continue
            if data:
                ans = read(sock, [b"POST"], until_close=True, timeout=10)
                break
    assert ans is not None, "the trickle was never cut"
    _assert_408(ans)
    assert [s.request.target for s in rec.requests()] == [b"/first"]


def test_the_inbound_proxy_cuts_a_stalled_body_and_the_client_gets_its_408(
    inbound_cuts: Hop,
) -> None:
    """Echo's proxy times out while the client's proxy still streams the body to it: the
    client's proxy relays that early answer, not a 503 for its failed write."""
    rec = inbound_cuts.new_case()
    ans = _stall(inbound_cuts.port, _post(1_000_000), b"x" * 200_000)
    _assert_408(ans)
    _upstream_saw_no_whole_request(rec)
    assert 'response_flags="SI"' in inbound_cuts.metrics(inbound_cuts.echo)


def test_an_early_answer_is_relayed_and_its_connection_never_reused(
    early: tuple[Hop, EarlyAnswer],
) -> None:
    """The upstream answers 413 mid-body and keeps its connection open: the client gets the
    413, and the proxy closes that upstream connection instead of pooling it (its next
    request would be read as the rest of the cut body)."""
    hop, server = early
    with connect(hop.port, timeout=20) as sock:
        send(sock, _post(10_000_000) + b"x" * 200_000)
        ans = read(sock, [b"POST"], until_close=True, timeout=20)
    assert ans.statuses == [413] and ans.final[0][1] == b"big", ans.raw[:300]
    assert ans.closed
    assert len(server.cut) == 1
    assert server.cut[0].wait(15), "the upstream connection of the cut request was kept open"
    with connect(hop.port) as sock:  # and the mesh serves the next request normally
        send(sock, b"GET /after HTTP/1.1\r\nHost: echo\r\n\r\n")
        assert read(sock, [b"GET"]).statuses == [200]


def test_a_client_still_sending_reads_the_early_answer(early: tuple[Hop, EarlyAnswer]) -> None:
    """The client keeps sending its body while the answer comes back: the proxy drops the
    rest for a moment before it closes (Envoy's delayed_close_timeout), so that its close is
    not a reset that destroys the 413 before the client reads it."""
    hop, _ = early
    with connect(hop.port, timeout=20) as sock:
        stop = threading.Event()

        def sender() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(_post(50_000_000))
                for _ in range(250):  # 50 MB at most
                    if stop.is_set():
                        return
                    sock.sendall(b"x" * 200_000)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        try:
            ans = read(sock, [b"POST"], timeout=20)
        finally:
            stop.set()
        t.join(20)
    assert ans.statuses == [413], f"the client lost the answer: {ans.raw[:300]!r}"


@pytest.mark.parametrize("sent", [100_000, 1_000_000])
def test_a_body_over_the_apps_limit_gets_the_apps_413(shop_hop: Hop, sent: int) -> None:
    """The app refuses a 100 MiB Content-Length before reading the body; the client, still
    sending, gets that 413 through both proxies."""
    with connect(shop_hop.port, timeout=20) as sock:
        send(sock, _post(100 * 1024 * 1024) + b"x" * sent)
        time.sleep(0.2)  # the client keeps its connection open and sends no more
        ans = read(sock, [b"POST"], until_close=True, timeout=20)
    assert ans.statuses == [413], f"expected the app's 413, got {ans.raw[:300]!r}"
    assert b"Content-Length must be" in ans.final[0][1]
    assert ans.closed, "the unread rest of the body leaves the connection unusable"
