"""Drive the sans-IO HTTP/1.1 parsers from asyncio streams; pooled upstream connections."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as _ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from proxy.http1 import Event, ProtocolError, ResponseParser
from proxy.http1.stream import StreamParser  # typed so: a union of two parsers is a generic call
from proxy.transport import tls

_now: Final = time.monotonic  # a static in the compiled core, not time's attribute per call

READ_SIZE = 65536


class ByteReader(Protocol):
    """What the byte relays read from: a Channel or an asyncio.StreamReader."""

    async def read(self, n: int = -1) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...


class ByteWriter(Protocol):
    """What the byte relays write to: a Channel or an asyncio.StreamWriter."""

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def close(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...


class PeerClosed(Exception):
    """The other side closed the connection between messages."""


class BodyTimeout(Exception):
    """A request body stalled: no piece of it for the body idle timeout, or not whole by the
    request timeout (proxy.downstream.http1 sets both per connection). Answered 408, flag SI."""


def body_wait_s(idle_s: float, deadline: float, now: float) -> float | None:
    """How long the next wait for a piece of request body may last: the idle timeout (Envoy's
    stream_idle_timeout, applied while the body is read), cut to what is left before the
    whole-request deadline (Envoy's request_timeout); 0 or less: over; None: no bound. A
    setting of 0 switches its timer off, as in Envoy."""
    wait = idle_s if idle_s > 0 else None
    if deadline > 0 and (wait is None or deadline - now < wait):
        wait = deadline - now
    return wait


async def next_body(down: EventStream) -> Event | Marker:
    """The next event of a request body, within the stream's body timeouts (BodyTimeout).

    Only a wait costs a timer: a piece already parsed is returned at once.
    """
    ev = down.poll()
    if ev is not None:
        return ev
    wait = body_wait_s(down.body_idle_s, down.body_deadline, _now())
    if wait is None:
        return await down.next()
    if wait <= 0:
        raise BodyTimeout()
    try:
        async with asyncio.timeout(wait):
            return await down.next()
    except TimeoutError:
        raise BodyTimeout() from None


class Channel(asyncio.Protocol):
    """One connection as an asyncio Protocol: reader, writer and, when an HTTP parser is
    attached, the parser's feeder, in one object.

    Why not StreamReader/StreamWriter: on the request path every arrival of bytes went
    through five pure-Python StreamReader steps (feed, wake, wait, copy, resume) before
    the parser saw them. Here `data_received` feeds the attached parser directly and wakes
    the coroutine only when it waits for an event; with no parser attached (opaque TCP,
    protocol sniffing, after an Upgrade) bytes are buffered for `read`/`readexactly`, the
    subset of StreamReader the relays use. The writer side is the subset of StreamWriter
    the proxy uses (write, drain, close, write_eof, get_extra_info).
    """

    def __init__(self, limit: int = 2**16) -> None:
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._limit = limit
        self._buffer = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._paused_writing = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self.events: EventStream | None = None  # the attached parser's stream, if any
        self._half_close = True
        # The same object as `transport` when it is proxy.transport.tls's: called natively in the
        # compiled core (through `transport`, a generic method call: ~300 instructions).
        self._tls: tls.TLSTransport | None = None

    # -- protocol callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if isinstance(transport, tls.TLSTransport):
            self._tls = transport
        # TLS cannot half-close: its transport closes after EOF whatever eof_received
        # answers, and asyncio warns when it answers True (once per connection closed).
        self._half_close = transport.get_extra_info("sslcontext") is None

    def data_received(self, data: bytes) -> None:
        events = self.events
        if events is not None:
            raw = events.raw
            if raw is not None and raw(data):
                return  # the fast path took a whole response as it came (proxy.downstream.fastpath)
            events.feed(data)
            if len(events.pending) > 64 and not self._paused_reading:
                self._paused_reading = True  # a slow consumer: stop reading until it catches up
                self.transport.pause_reading()
            if events.listener is not None:
                events.listener()  # the fast path (proxy.downstream.fastpath) takes it from here
                return
        else:
            self._buffer += data
            if len(self._buffer) > 2 * self._limit and not self._paused_reading:
                self._paused_reading = True
                self.transport.pause_reading()
        self.wake()

    def eof_received(self) -> bool:
        self._set_eof()
        # Keep the write side open: half-close is the relays' to pass on (plain TCP only).
        return self._half_close

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self._error is None:
            self._error = exc
        self._set_eof()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            if exc is None:
                self._drain_waiter.set_result(None)
            else:
                self._drain_waiter.set_exception(ConnectionResetError(str(exc)))
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _set_eof(self) -> None:
        if self._eof:
            return
        self._eof = True
        events = self.events
        if events is not None:
            events.feed(b"")
            if events.listener is not None:
                events.listener()
                return
        self.wake()

    def wake(self) -> None:
        """Resume the coroutine waiting in `wait`, if any."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- reading -----------------------------------------------------------------------

    def resume(self) -> None:
        """Read again if a backlog had paused reading (the consumer caught up)."""
        if self._paused_reading:
            self._paused_reading = False
            self.transport.resume_reading()

    async def wait(self) -> None:
        """Until more bytes (or events), EOF or an error arrive."""
        self.resume()
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        await waiter

    def attach(self, events: EventStream) -> None:
        """Feed bytes to `events`' parser from now on, starting with what is buffered."""
        self.events = events
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            events.feed(data)
        if self._eof:
            events.feed(b"")

    def detach(self, remaining: bytes = b"") -> None:
        """Back to raw bytes (after an Upgrade): `remaining` is what the parser held."""
        self.events = None
        if remaining:
            self._buffer[:0] = remaining

    def at_eof(self) -> bool:
        return self._eof and not self._buffer

    def exception(self) -> BaseException | None:
        return self._error

    async def read(self, n: int = -1) -> bytes:
        while not self._buffer and not self._eof:
            await self.wait()
        if not self._buffer:
            return b""
        return self._take(n if 0 <= n < len(self._buffer) else len(self._buffer))

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if self._eof:
                partial = bytes(self._buffer)
                self._buffer.clear()
                raise asyncio.IncompleteReadError(partial, n)
            await self.wait()
        return self._take(n)

    def _take(self, n: int) -> bytes:
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        if self._paused_reading and len(self._buffer) <= self._limit:
            self._paused_reading = False
            self.transport.resume_reading()
        return data

    # -- writing (the StreamWriter subset) ---------------------------------------------

    def write(self, data: bytes) -> None:
        t = self._tls
        if t is not None:
            t.write(data)
        else:
            self.transport.write(data)

    async def drain(self) -> None:
        if self.transport.is_closing():
            await asyncio.sleep(0)  # let connection_lost run, as StreamWriter.drain does
            if self._error is not None:
                raise ConnectionResetError("connection lost")
        if self._paused_writing:
            waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
            await waiter

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def write_eof(self) -> None:
        self.transport.write_eof()

    def is_closing(self) -> bool:
        t = self._tls
        return t.is_closing() if t is not None else self.transport.is_closing()

    def close(self) -> None:
        self.transport.close()

    async def wait_closed(self) -> None:
        if self.transport.is_closing() and self._closed is None and self._eof:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await self._closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)


class Marker:
    """Queued among a stream's events for its reader by proxy.downstream.fastpath (Handover,
    Close)."""

    __slots__ = ()


class EventStream:
    """Events from a parser that its Channel feeds as bytes arrive, one at a time."""

    __slots__ = (
        "body_deadline",
        "body_idle_s",
        "busy",
        "channel",
        "eof",
        "error",
        "listener",
        "parser",
        "pending",
        "raw",
        "timed_out",
    )

    def __init__(self, channel: Channel, parser: StreamParser, initial: bytes = b"") -> None:
        self.channel = channel
        self.parser = parser
        # A list, not a deque: in the compiled core indexing, extend and clear on a list are
        # native; on a deque each is a generic method call. It stays short (reading pauses
        # past 64 events), so taking from the front costs nothing that matters.
        self.pending: list[Event | Marker] = []
        self.eof = False
        self.error: ProtocolError | None = None
        self.timed_out = False  # cut off by the header timeout (proxy.transport.headwatch)
        # Called instead of waking the reader when bytes or EOF arrive (proxy.downstream.fastpath).
        self.listener: Callable[[], None] | None = None
        # Offered the bytes before the parser; True: it took them all (proxy.downstream.fastpath).
        self.raw: Callable[[bytes], bool] | None = None
        # A request of this stream is in the fast path's hands: the reader waits, whatever
        # is queued (pipelined requests are the fast path's to take next, in order).
        self.busy = False
        # Request body timeouts (next_body): set by proxy.downstream.http1; 0 means none.
        self.body_idle_s = 0.0
        self.body_deadline = 0.0  # time.monotonic() by which the request must be whole
        if initial:  # what protocol detection read: before anything the channel buffered
            self.feed(initial)
        channel.attach(self)

    @property
    def reader(self) -> Channel:
        return self.channel

    def feed(self, data: bytes) -> None:
        """Called by the channel: bytes (b"" at EOF) into the parser, events queued. A
        framing error is kept and raised to the reader after the events before it."""
        if self.error is not None or self.eof:
            return
        if not data:
            self.eof = True
        try:
            self.parser.feed_into(data, self.pending)
        except ProtocolError as exc:
            self.error = exc

    def poll(self) -> Event | Marker | None:
        """The next event if one is already parsed, without a coroutine (the hot path asks
        this first: a whole small request or response usually arrives in one read)."""
        pending = self.pending
        return pending.pop(0) if pending else None

    async def next(self) -> Event | Marker:
        pending = self.pending
        while not pending or self.busy:
            if not self.busy:
                if self.error is not None:
                    raise self.error
                if self.eof:
                    exc = self.channel.exception()
                    if isinstance(exc, ConnectionError):
                        raise exc
                    raise PeerClosed()
            await self.channel.wait()
        return pending.pop(0)


@dataclass(slots=True)
class Conn:
    """One upstream connection with its response parser; reusable while both ends keep it alive."""

    key: str
    reader: Channel  # reader and writer are the same Channel (StreamReader/Writer names kept)
    writer: Channel
    events: EventStream
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    requests: int = 0
    limiter: ConnLimiter | None = None
    sent_at: float = 0.0  # when the request in flight was written (latency samples)
    # The upstream answered before the request's body was all sent (proxy.forwarding.forward
    # _stream_body): the rest would be read as the next request, so it is never reused.
    cut: bool = False

    @property
    def parser(self) -> ResponseParser:
        p = self.events.parser
        assert isinstance(p, ResponseParser)
        return p

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        if self.limiter is not None:
            self.limiter.closed()
            self.limiter = None

    def reusable(self) -> bool:
        """Idle and clean: no event or byte pending. Bytes that arrived while the connection
        sat idle are an unsolicited response (a desync attempt or a broken upstream): such
        a connection is never reused, as Envoy closes it."""
        events = self.events
        return (
            not events.eof
            and not self.cut
            and events.error is None  # the parser refuses any byte with no request out
            and not events.pending
            and not self.writer.is_closing()
        )


Connector = Callable[[], Awaitable[Channel]]


class PoolOverflow(Exception):
    """Connection limit reached and the pending queue full or timed out (Envoy flag UO)."""


class ConnLimiter:
    """Istio connectionPool.tcp.maxConnections with http1MaxPendingRequests waiting for a slot.

    A request that finds no idle connection and no room for a new one waits (counted as
    pending) until a connection is returned or closed; past the pending limit it overflows
    at once: a fast 503, not a growing queue.
    """

    def __init__(self, max_connections: int, max_pending: int) -> None:
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.open = 0
        self.pending = 0
        self.overflows = 0
        self._event = asyncio.Event()

    def try_open(self) -> bool:
        if self.open < self.max_connections:
            self.open += 1
            return True
        return False

    def closed(self) -> None:
        self.open = max(0, self.open - 1)
        self.notify()

    def notify(self) -> None:
        if self.pending:
            old, self._event = self._event, asyncio.Event()
            old.set()

    async def wait(self, timeout: float) -> None:
        if self.pending >= self.max_pending:
            self.overflows += 1
            raise PoolOverflow("pending requests over http1MaxPendingRequests")
        self.pending += 1
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            self.overflows += 1
            raise PoolOverflow("no connection became free in time") from None
        finally:
            self.pending -= 1


class Pool:
    """Idle upstream connections by key (an endpoint), LIFO so warm ones are reused first."""

    def __init__(self, max_idle_per_key: int = 64, idle_timeout_s: float = 60.0) -> None:
        self._idle: dict[str, list[Conn]] = {}
        self.max_idle = max_idle_per_key
        self.idle_timeout_s = idle_timeout_s
        self.opened = 0

    async def get(
        self,
        key: str,
        connect: Connector,
        timeout: float,
        limiter: ConnLimiter | None = None,
        idle_timeout_s: float | None = None,
    ) -> tuple[Conn, bool]:
        """A connection for `key`: (conn, reused). Connect errors and PoolOverflow propagate."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.take_idle(key, idle_timeout_s)
            if c is not None:
                return c, True
            if limiter is None or limiter.try_open():
                break
            await limiter.wait(max(0.001, deadline - time.monotonic()))
        try:
            channel = await asyncio.wait_for(connect(), max(0.001, deadline - time.monotonic()))
        except BaseException:
            if limiter is not None:
                limiter.closed()
            raise
        self.opened += 1
        return Conn(
            key, channel, channel, EventStream(channel, ResponseParser()), limiter=limiter
        ), False

    def take_idle(
        self, key: str, idle_timeout_s: float | None = None, now: float = -1.0
    ) -> Conn | None:
        """An idle connection for `key` that is still good, without a coroutine (the hot
        path tries this before `get`), or None. ``now``: the caller's clock reading, if
        it has one (one read per callback)."""
        idle = self._idle.get(key)
        if not idle:
            return None
        max_idle_age = idle_timeout_s or self.idle_timeout_s
        if now < 0.0:
            now = _now()
        while idle:
            c = idle.pop()
            if c.reusable() and now - c.last_used < max_idle_age:
                return c
            c.close()
        return None

    def put(self, conn: Conn, max_requests: int = 0, now: float = -1.0) -> None:
        conn.requests += 1
        conn.last_used = now if now >= 0.0 else _now()
        if not conn.reusable() or (max_requests and conn.requests >= max_requests):
            conn.close()
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self.max_idle:
            conn.close()
            return
        idle.append(conn)
        if conn.limiter is not None:
            conn.limiter.notify()

    def close_all(self) -> None:
        for idle in self._idle.values():
            for c in idle:
                c.close()
        self._idle.clear()


async def open_channel(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    resume: tls.Resumption | None = None,
) -> Channel:
    """asyncio.open_connection, as one Channel (TCP_NODELAY, as asyncio sets it too); over
    TLS (`ssl`) after the handshake, with proxy.transport.tls's transport, resuming the session
    `resume` holds and leaving this connection's there for the next."""
    channel = Channel()
    if ssl is not None and tls.ENABLED:
        session = resume.session() if resume is not None else None
        await tls.connect(host, port, ssl, server_hostname, channel, 60.0, session)
        if resume is not None:
            resume.last = channel.get_extra_info("ssl_object")
        return channel
    await asyncio.get_running_loop().create_connection(
        lambda: channel, host, port, ssl=ssl, server_hostname=server_hostname
    )
    return channel


async def accept_channel(
    sock: socket.socket, ctx: _ssl.SSLContext | None, handshake_timeout: float = 10.0
) -> Channel:
    """An accepted socket as a Channel, after the TLS handshake when `ctx` is given."""
    channel = Channel()
    if ctx is not None and tls.ENABLED:
        await tls.accept(sock, ctx, channel, handshake_timeout)
        return channel
    await asyncio.get_running_loop().connect_accepted_socket(
        lambda: channel, sock, ssl=ctx, ssl_handshake_timeout=handshake_timeout if ctx else None
    )
    return channel
