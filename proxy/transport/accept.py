"""Listening sockets and accepted connections as asyncio streams, with an optional TLS sniff."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from common.aio import spawn
from proxy.telemetry import Telemetry
from proxy.transport.streams import Channel, accept_channel


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # IPv4 has its own socket
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        raise
    s.listen(backlog)
    s.setblocking(False)
    return s


# ip6tables REDIRECT sends a captured IPv6 connection to the same port over IPv6 (to ::1
# for the app's own, to the interface's address for a peer's), so a transparent listener
# on the IPv4 wildcard or loopback needs its IPv6 twin, or IPv6 would be refused there.
_IPV6_TWIN = {"0.0.0.0": "::", "127.0.0.1": "::1"}


def listen_both(host: str, port: int, backlog: int = 1024) -> list[socket.socket]:
    """`listen(host, port)`, plus its IPv6 twin for 0.0.0.0 (::) and 127.0.0.1 (::1) on the
    same port. No twin where the namespace has no IPv6 (no ::1, or IPv6 off): no IPv6
    connection can be made there either."""
    first = listen(host, port, backlog)
    twin = _IPV6_TWIN.get(host)
    if twin is None:
        return [first]
    try:
        return [first, listen(twin, first.getsockname()[1], backlog)]
    except OSError as exc:
        if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            first.close()
            raise
        return [first]


async def streams_for(
    sock: socket.socket, tls: ssl.SSLContext | None, handshake_timeout: float = 10.0
) -> tuple[Channel, Channel]:
    """(reader, writer) of an accepted connection: one Channel, as both."""
    channel = await accept_channel(sock, tls, handshake_timeout)
    return channel, channel


async def first_byte(sock: socket.socket, timeout: float) -> bytes:
    """Peek at the first byte without consuming it (b"" on EOF): a TLS ClientHello is 0x16."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        await asyncio.wait_for(fut, timeout)
    finally:
        loop.remove_reader(sock.fileno())
    return sock.recv(1, socket.MSG_PEEK)


class Connections:
    """The open downstream connections of one listener, with a ceiling and, on inbound, a
    ceiling per source address. Past either a new connection is accepted and closed at
    once, so the ones already open keep being served. Each listener has its own: a flood of
    the inbound port cannot use up the app's outbound listeners (issue 19, item 6), and
    one source cannot use up the inbound port for the others."""

    __slots__ = ("by_source", "limit", "open", "per_source")

    def __init__(self, limit: int, per_source: int = 0) -> None:
        self.limit = limit
        self.per_source = per_source  # 0: no limit per source
        self.open = 0
        # Source address -> its open connections; only sources with one open (bounded by
        # `limit`), so a sweep of addresses leaves nothing behind.
        self.by_source: dict[str, int] = {}

    def admit(self, source: str, counters: dict[str, float]) -> bool:
        if self.open >= self.limit:
            counters["meshctl_proxy_connections_refused_total"] += 1
            return False
        if self.per_source:
            held = self.by_source.get(source, 0)
            if held >= self.per_source:
                counters["meshctl_proxy_connections_refused_total"] += 1
                counters["meshctl_proxy_connections_source_refused_total"] += 1
                return False
            self.by_source[source] = held + 1
        self.open += 1
        return True

    def release(self, source: str) -> None:
        self.open -= 1
        if self.per_source:
            held = self.by_source.pop(source) - 1
            if held:
                self.by_source[source] = held


async def _tracked(conns: Connections, source: str, coro: Coroutine[Any, Any, None]) -> None:
    try:
        await coro
    finally:
        conns.release(source)


async def accept_loop(
    lsock: socket.socket,
    on_conn: Callable[[socket.socket], Coroutine[Any, Any, None]],
    conns: Connections,
    telemetry: Telemetry,
) -> None:
    """Accept forever; each connection is served by its own task."""
    loop = asyncio.get_running_loop()
    counters = telemetry.counters
    while True:
        try:
            conn, addr = await loop.sock_accept(lsock)
        except OSError:  # EMFILE and friends: back off instead of spinning
            counters["meshctl_proxy_accept_errors_total"] += 1
            await asyncio.sleep(0.05)
            continue
        source = addr[0] if isinstance(addr, tuple) else ""
        if not conns.admit(source, counters):
            conn.close()
            continue
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        spawn(_tracked(conns, source, on_conn(conn)))
