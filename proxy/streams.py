"""Drive the sans-IO HTTP/1.1 parsers from asyncio streams; pooled upstream connections."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from proxy.http1 import Event, RequestParser, ResponseParser

READ_SIZE = 65536


class PeerClosed(Exception):
    """The other side closed the connection between messages."""


class EventStream:
    """Events from a parser fed by a StreamReader, one at a time, reading only when needed."""

    __slots__ = ("eof", "parser", "pending", "reader", "timed_out")

    def __init__(
        self, reader: asyncio.StreamReader, parser: RequestParser | ResponseParser
    ) -> None:
        self.reader = reader
        self.parser = parser
        self.pending: deque[Event] = deque()
        self.eof = False
        self.timed_out = False  # cut off by the header timeout (proxy.downstream.HeadWatch)

    def poll(self) -> Event | None:
        """The next event if one is already parsed, without a coroutine (the hot path asks
        this first: a whole small request or response usually arrives in one read)."""
        pending = self.pending
        return pending.popleft() if pending else None

    async def next(self) -> Event:
        pending = self.pending
        while not pending:
            if self.eof:
                raise PeerClosed()
            data = await self.reader.read(READ_SIZE)
            if not data:
                self.eof = True
            pending.extend(self.parser.feed(data))
            if self.eof and not pending:
                raise PeerClosed()
        return pending.popleft()


@dataclass(slots=True)
class Conn:
    """One upstream connection with its response parser; reusable while both ends keep it alive."""

    key: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    events: EventStream
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    requests: int = 0
    limiter: ConnLimiter | None = None
    sent_at: float = 0.0  # when the request in flight was written (latency samples)

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
        return (
            not self.events.eof
            and not self.events.pending
            and not self.writer.is_closing()
            and not self.reader.at_eof()
            and not getattr(self.reader, "_buffer", b"")
        )


Connector = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


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
        c = self.take_idle(key, idle_timeout_s)
        if c is not None:
            return c, True
        deadline = time.monotonic() + timeout
        max_idle_age = idle_timeout_s or self.idle_timeout_s
        while True:
            idle = self._idle.get(key)
            now = time.monotonic()
            while idle:
                c = idle.pop()
                if c.reusable() and now - c.last_used < max_idle_age:
                    return c, True
                c.close()
            if limiter is None or limiter.try_open():
                break
            await limiter.wait(max(0.001, deadline - now))
        try:
            reader, writer = await asyncio.wait_for(
                connect(), max(0.001, deadline - time.monotonic())
            )
        except BaseException:
            if limiter is not None:
                limiter.closed()
            raise
        self.opened += 1
        return Conn(
            key, reader, writer, EventStream(reader, ResponseParser()), limiter=limiter
        ), False

    def take_idle(self, key: str, idle_timeout_s: float | None = None) -> Conn | None:
        """An idle connection for `key` that is still good, without a coroutine (the hot
        path tries this before `get`), or None."""
        idle = self._idle.get(key)
        if not idle:
            return None
        max_idle_age = idle_timeout_s or self.idle_timeout_s
        now = time.monotonic()
        while idle:
            c = idle.pop()
            if c.reusable() and now - c.last_used < max_idle_age:
                return c
            c.close()
        return None

    def put(self, conn: Conn, max_requests: int = 0) -> None:
        conn.requests += 1
        conn.last_used = time.monotonic()
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
