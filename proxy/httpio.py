"""HTTP/1.1 over asyncio streams for the proxy's side channels, not its request path.

One small client and one small server serve the admin and Prometheus listeners
(proxy/admin.py), the registry client (proxy/control/client.py: join, renew, the
full-duplex config stream) and the OTLP exporter (proxy/tracing/otlp.py). Framing is the
proxy's own sans-IO core (proxy/http1: the parsers the data path uses, chunked bodies
included), so the proxy process needs no HTTP library of its own: aiohttp alone cost the
sidecar ~13 MiB of RSS.

Every failure a caller can meet is an OSError: a refused or reset connection, a TLS
error (ssl.SSLError), or `HttpError` for broken framing or a body over its limit; a
budget that runs out raises TimeoutError. Callers catch `(OSError, TimeoutError)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from common.aio import spawn
from proxy.http1 import (
    LAST_CHUNK,
    Data,
    EndOfMessage,
    Event,
    Headers,
    ProtocolError,
    RequestParser,
    Response,
    ResponseParser,
    encode_chunk,
    render_request_head,
    render_response_head,
)
from proxy.http1 import Request as RequestHead

log = logging.getLogger("meshctl.proxy.http")
READ_SIZE = 64 * 1024
MAX_BODY = 64 * 1024 * 1024  # a response read whole (a join answer, a /v1/ack answer)
MAX_LINE = 64 * 1024 * 1024  # a line of a streamed body: a registry view of a large mesh
MAX_REQUEST_BODY = 1024 * 1024  # what the admin listeners accept: they serve GETs
KEEPALIVE_S = 75.0  # an idle server connection is closed after this (aiohttp's default)
IDLE_CONNECTIONS = 2  # kept-alive client connections per origin


class HttpError(OSError):
    """An HTTP exchange failed: broken framing, or a body over its limit."""


# -- the client ------------------------------------------------------------------------


@dataclass(slots=True)
class ClientResponse:
    """A response read whole."""

    status: int
    headers: Headers
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError if it is not JSON."""
        return json.loads(self.body)


class _Conn:
    """One client connection: a stream pair and the ResponseParser that frames its replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = ResponseParser()
        self.events: list[Event] = []
        self.received = False  # any byte of a response seen on this connection

    async def next_event(self, timeout: float | None = None) -> Event:
        while not self.events:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation
            # that arrives as the read completes (a view pushed as the proxy stops), and
            # the task it should have ended reads on.
            async with asyncio.timeout(timeout):
                data = await self.reader.read(READ_SIZE)
            self.received = self.received or bool(data)
            try:
                self.events = self.parser.feed(data)
            except ProtocolError as exc:
                raise HttpError(f"bad response: {exc.reason}") from None
            if not data and not self.events:
                raise HttpError("connection closed before the response ended")
        return self.events.pop(0)

    async def head(self, timeout: float | None = None) -> Response:
        """The final response head (interim 1xx skipped)."""
        while True:
            ev = await self.next_event(timeout)
            if isinstance(ev, Response) and not ev.informational:
                return ev

    def close(self) -> None:
        self.writer.close()


class Client:
    """Requests to one origin (`http://` or `https://` host:port), keeping connections alive.

    `ssl_ctx` verifies an `https` origin (a registry: its CA bundle, and this proxy's SVID
    when it has one); without one, the system's default verification applies.
    """

    def __init__(
        self, base_url: str, ssl_ctx: ssl.SSLContext | None = None, connect_timeout: float = 5.0
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        try:  # ASCII, as every registry or collector address is: no idna codec to import
            self.authority = parts.netloc.encode("ascii")
        except UnicodeEncodeError:
            self.authority = parts.netloc.encode("idna")
        self.ssl_ctx = (ssl_ctx or ssl.create_default_context()) if self.tls else None
        self.connect_timeout = connect_timeout
        self._idle: list[_Conn] = []

    async def _connect(self) -> _Conn:
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self.ssl_ctx,
                server_hostname=self.host if self.tls else None,
            )
        return _Conn(reader, writer)

    def _head(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        length: int | None,
    ) -> bytes:
        target = self.prefix + path + ("?" + urlencode(query) if query else "")
        fields: Headers = [(b"Host", self.authority)]
        fields += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        if length is None:
            fields.append((b"Transfer-Encoding", b"chunked"))
        elif length or method not in ("GET", "HEAD", "DELETE"):
            fields.append((b"Content-Length", b"%d" % length))
        return render_request_head(method.encode(), target.encode(), fields)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> ClientResponse:
        """One exchange, its response read whole, all within `timeout` seconds."""
        hdrs = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        head = self._head(method, path, query, hdrs, len(body))
        async with asyncio.timeout(timeout):
            while True:
                reused = bool(self._idle)
                conn = self._idle.pop() if reused else await self._connect()
                try:
                    resp = await self._exchange(conn, method, head + body)
                except OSError:
                    conn.close()
                    # A kept-alive connection the server closed meanwhile: nothing of this
                    # request was answered, so send it again on a fresh one (once per idle).
                    if reused and not conn.received:
                        continue
                    raise
                except BaseException:
                    conn.close()
                    raise
                return resp

    async def _exchange(self, conn: _Conn, method: str, data: bytes) -> ClientResponse:
        conn.parser.expect(method.encode())
        conn.writer.write(data)
        await conn.writer.drain()
        head = await conn.head()
        chunks: list[bytes] = []
        size = 0
        while not isinstance(ev := await conn.next_event(), EndOfMessage):
            if isinstance(ev, Data):
                size += len(ev.data)
                if size > MAX_BODY:
                    raise HttpError(f"response body over {MAX_BODY} bytes")
                chunks.append(ev.data)
        if head.keep_alive and len(self._idle) < IDLE_CONNECTIONS:
            conn.received = False
            self._idle.append(conn)
        else:
            conn.close()
        return ClientResponse(head.status, head.headers, b"".join(chunks))

    async def open_stream(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        duplex: bool = False,
        timeout: float = 10.0,
    ) -> Stream:
        """A request whose response body is read as it comes (`Stream.lines`). With
        `duplex`, the request body stays open too: chunks sent with `Stream.send` while the
        response streams (the registry's POST /v1/stream). `timeout` bounds the connection
        and the response head."""
        head = self._head(method, path, query, headers, None if duplex else 0)
        async with asyncio.timeout(timeout):
            conn = await self._connect()
            try:
                conn.parser.expect(method.encode())
                conn.writer.write(head)
                await conn.writer.drain()
                resp = await conn.head()
            except BaseException:
                conn.close()
                raise
        return Stream(conn, resp)

    async def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class Stream:
    """An open exchange: the response head, then its body as lines; maybe a body to send."""

    def __init__(self, conn: _Conn, head: Response) -> None:
        self._conn = conn
        self.status = head.status
        self.headers = head.headers
        self._done = False

    def socket(self) -> Any:
        """The connection's socket (asyncio's TransportSocket), for its options."""
        return self._conn.writer.get_extra_info("socket")

    async def send(self, data: bytes) -> None:
        """One chunk of the (chunked) request body."""
        self._conn.writer.write(encode_chunk(data))
        await self._conn.writer.drain()

    async def lines(
        self, read_timeout: float | None = None, max_line: int = MAX_LINE
    ) -> AsyncIterator[bytes]:
        """Each line of the response body, `\\n` included; a last line without one too. A
        read that waits more than `read_timeout` seconds raises TimeoutError."""
        buf = bytearray()
        while not self._done:
            ev = await self._conn.next_event(read_timeout)
            if isinstance(ev, EndOfMessage):
                self._done = True
                break
            if not isinstance(ev, Data):
                continue
            start = len(buf)
            buf += ev.data
            end = buf.find(b"\n", start)
            while end >= 0:
                yield bytes(buf[: end + 1])
                del buf[: end + 1]
                end = buf.find(b"\n")
            if len(buf) > max_line:
                raise HttpError(f"a line of the response body is over {max_line} bytes")
        if buf:
            yield bytes(buf)

    async def read(self, limit: int = 4096, timeout: float = 5.0) -> bytes:
        """Up to `limit` bytes of the body (an error's text), then the stream is done with."""
        out = b""
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(timeout):
                async for line in self.lines(max_line=limit):
                    out += line
                    if len(out) >= limit:
                        break
        return out[:limit]

    def close(self) -> None:
        self._conn.close()

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.close()


# -- the server ------------------------------------------------------------------------


@dataclass(slots=True)
class ServerRequest:
    method: str
    path: str
    query: dict[str, str]  # the first value of each parameter, as aiohttp's `query.get`
    headers: Headers
    body: bytes


class ChunkWriter:
    """The body of a streamed reply: each `write` is one chunk, sent at once."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("the client went away")
        self._writer.write(encode_chunk(data))
        await self._writer.drain()


@dataclass(slots=True)
class Reply:
    """What a handler answers: a whole body, or (`stream`) a chunked body it writes itself.
    A streamed reply's writer is cancelled when the client goes away."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    stream: Callable[[ChunkWriter], Awaitable[None]] | None = None
    headers: Headers = field(default_factory=list)


def json_reply(obj: Any, status: int = 200, indent: int | None = None) -> Reply:
    return Reply(status, json.dumps(obj, indent=indent).encode(), "application/json")


def text_reply(text: str, status: int = 200, content_type: str = "text/plain") -> Reply:
    return Reply(status, text.encode(), f"{content_type}; charset=utf-8")


Handler = Callable[[ServerRequest], Awaitable[Reply]]


class Server:
    """GET (and HEAD) routes by exact path on one listener; keep-alive, one request at a
    time per connection, as the admin endpoints need."""

    def __init__(self, routes: Mapping[str, Handler], name: str = "http") -> None:
        self.routes = dict(routes)
        self.name = name
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._serve, host, port, reuse_address=True, limit=READ_SIZE
        )

    @property
    def address(self) -> tuple[str, int] | None:
        """The (host, port) bound, once started."""
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        parser = RequestParser()
        events: list[Event] = []
        try:
            while True:
                try:
                    req, keep_alive = await self._read_request(reader, parser, events)
                except ProtocolError as exc:
                    await _send(writer, text_reply(f"{exc.reason}\n", exc.status), False, False)
                    return
                if req is None:
                    return
                reply = await self._handle(req)
                if reply.stream is None:
                    await _send(writer, reply, keep_alive, req.method == "HEAD")
                    if not keep_alive:
                        return
                else:
                    await self._stream(reader, writer, reply, reply.stream)
                    return
        except (OSError, TimeoutError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def _read_request(
        self, reader: asyncio.StreamReader, parser: RequestParser, events: list[Event]
    ) -> tuple[ServerRequest | None, bool]:
        head: RequestHead | None = None
        body: list[bytes] = []
        size = 0
        while True:
            while events:
                ev = events.pop(0)
                if isinstance(ev, RequestHead):
                    head = ev
                elif isinstance(ev, Data):
                    size += len(ev.data)
                    if size > MAX_REQUEST_BODY:
                        raise ProtocolError(413, f"request body over {MAX_REQUEST_BODY} bytes")
                    body.append(ev.data)
                elif head is not None:  # EndOfMessage
                    target = head.target.decode("latin-1")
                    path, _, qs = target.partition("?")
                    query: dict[str, str] = {}
                    for k, v in parse_qsl(qs, keep_blank_values=True):
                        query.setdefault(k, v)
                    req = ServerRequest(
                        head.method.decode("latin-1"), path, query, head.headers, b"".join(body)
                    )
                    return req, head.keep_alive
            async with asyncio.timeout(KEEPALIVE_S):
                data = await reader.read(READ_SIZE)
            events.extend(parser.feed(data))
            if not data and not events:
                return None, False

    async def _handle(self, req: ServerRequest) -> Reply:
        handler = self.routes.get(req.path)
        if handler is None:
            return text_reply("404: Not Found", 404)
        if req.method not in ("GET", "HEAD"):
            reply = text_reply("405: Method Not Allowed", 405)
            reply.headers.append((b"Allow", b"GET,HEAD"))
            return reply
        try:
            return await handler(req)
        except Exception:
            log.exception("%s: %s %s failed", self.name, req.method, req.path)
            return text_reply("500 Internal Server Error\n", 500)

    async def _stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reply: Reply,
        produce: Callable[[ChunkWriter], Awaitable[None]],
    ) -> None:
        fields: Headers = [(b"Content-Type", reply.content_type.encode())]
        fields += [*reply.headers, (b"Transfer-Encoding", b"chunked")]
        writer.write(render_response_head(reply.status, _reason(reply.status), fields))
        # The client sends nothing more: an EOF (or reset) from it means it went away, and
        # the producer is cancelled at once rather than at its next write.
        producer = spawn(_run(produce, ChunkWriter(writer)))
        gone = spawn(reader.read(1))
        try:
            await asyncio.wait((producer, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (producer, gone):
                t.cancel()
            await asyncio.gather(producer, gone, return_exceptions=True)
        if producer.done() and not producer.cancelled() and producer.exception() is None:
            writer.write(LAST_CHUNK)
            await writer.drain()


async def _run(produce: Callable[[ChunkWriter], Awaitable[None]], w: ChunkWriter) -> None:
    await produce(w)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


async def _send(writer: asyncio.StreamWriter, reply: Reply, keep_alive: bool, head: bool) -> None:
    fields: Headers = [
        (b"Content-Type", reply.content_type.encode()),
        (b"Content-Length", b"%d" % len(reply.body)),
        *reply.headers,
    ]
    if not keep_alive:
        fields.append((b"Connection", b"close"))
    writer.write(render_response_head(reply.status, _reason(reply.status), fields))
    if not head:
        writer.write(reply.body)
    await writer.drain()
