"""The DNS listener (UDP and TCP on 127.0.0.1:15053) and the forwarder: the thin I/O part.

Each query goes through `answer.decide` against the current snapshot's table; what is
not a mesh name is relayed, bytes unchanged (id included), to the upstream resolvers
read from /etc/resolv.conf when the proxy started, one after the other, each given
`timeout_s`. The proxy's own queries leave without coming back here: they run as the
proxy's uid, which the interception rules exclude (as Istio's uid 1337).

Bounds (hostile input, docs/hostile-input.md): at most `max_inflight` forwards at once
(past it: SERVFAIL at once); at most `max_tcp` TCP clients, each message at most
MAX_TCP_QUERY bytes (a larger length prefix closes the connection), a connection idle
for TCP_IDLE_S closed (RFC 7766 6.2.3); an upstream reply must carry the query's id
and come from the address the query went to (a connected socket), else it is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import struct
from collections import defaultdict
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Final, cast

from common.aio import spawn
from proxy.dns.answer import EMPTY, FORWARD, NameTable, Reply, decide, servfail

log = logging.getLogger("meshctl.proxy.dns")

MAX_TCP_QUERY: Final = 4096  # a query is a name and a few options; 64 KiB ones are abuse
TCP_IDLE_S: Final = 10.0
MAX_UPSTREAMS: Final = 3  # glibc's MAXNS: later nameserver lines are ignored by libc too
DEFAULT_UPSTREAM: Final = ("127.0.0.1", 53)  # resolv.conf(5): no nameserver line


def upstreams_from(text: str) -> tuple[tuple[str, int], ...]:
    """The `nameserver` addresses of a resolv.conf text, in order (at most 3)."""
    found: list[tuple[str, int]] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            addr = words[1].split("%", 1)[0]  # fe80::1%eth0: the scope is not ours to use
            with contextlib.suppress(ValueError):
                found.append((str(ipaddress.ip_address(addr)), 53))
    return tuple(found[:MAX_UPSTREAMS]) or (DEFAULT_UPSTREAM,)


def read_upstreams(path: Path = Path("/etc/resolv.conf")) -> tuple[tuple[str, int], ...]:
    try:
        return upstreams_from(path.read_text())
    except OSError:
        return (DEFAULT_UPSTREAM,)


def _send(udp: asyncio.DatagramTransport, data: bytes | None, addr: Any) -> None:
    if data is not None and not udp.is_closing():
        udp.sendto(data, addr)


class _OneReply(asyncio.DatagramProtocol):
    """A connected UDP socket waiting for the one datagram carrying `ident`."""

    def __init__(self, ident: bytes) -> None:
        self.ident = ident
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data[:2] == self.ident and len(data) >= 12 and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable, ...
        if not self.done.done():
            self.done.set_exception(exc)


class DnsServer:
    """Answers mesh names from `table()`, forwards the rest; UDP and TCP on one port."""

    def __init__(
        self,
        table: Callable[[], NameTable | None],
        upstreams: Sequence[tuple[str, int]],
        *,
        timeout_s: float = 2.0,
        max_inflight: int = 256,
        max_tcp: int = 64,
        counters: MutableMapping[str, float] | None = None,
    ) -> None:
        self.table = table
        self.upstreams = tuple(upstreams)
        self.timeout_s = timeout_s
        self.max_inflight = max_inflight
        self.max_tcp = max_tcp
        self.counters = counters if counters is not None else defaultdict(float)
        self.inflight = 0
        self.tcp_clients = 0
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []

    # -- listeners -------------------------------------------------------------------

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind UDP and TCP on (host, port); port 0 picks one (the same for both). For
        127.0.0.1, also ::1 on the same port where the namespace has IPv6: ip6tables
        REDIRECT sends an IPv6 query there (no twin where there is no ::1)."""
        bound = await self._bind(host, port)
        if host == "127.0.0.1":
            try:
                await self._bind("::1", bound[1])
            except OSError as exc:
                if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    await self.close()
                    raise
        return bound

    async def _bind(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        server = self

        class _Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, addr: Any) -> None:
                server._on_datagram(data, addr, self.transport)

        tcp = await asyncio.start_server(self._on_tcp, host, port, reuse_address=True)
        bound = tcp.sockets[0].getsockname()[:2]
        try:
            transport, _ = await loop.create_datagram_endpoint(_Udp, local_addr=bound)
        except OSError:
            tcp.close()
            raise
        self._tcp.append(tcp)
        self._udp.append(transport)
        return bound[0], bound[1]

    async def close(self) -> None:
        for udp in self._udp:
            udp.close()
        for tcp in self._tcp:
            tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(tcp.wait_closed(), 1.0)
        self._udp, self._tcp = [], []

    def _decide(self, data: bytes) -> Reply | object:
        verdict = decide(self.table() or EMPTY, data)
        if isinstance(verdict, Reply):
            self.counters[f"meshctl_proxy_dns_{verdict.note}_total"] += 1
        elif verdict is FORWARD:
            self.counters["meshctl_proxy_dns_forwarded_total"] += 1
        else:
            self.counters["meshctl_proxy_dns_dropped_total"] += 1
        return verdict

    def _admit(self) -> bool:
        if self.inflight >= self.max_inflight:
            self.counters["meshctl_proxy_dns_overflow_total"] += 1
            return False
        self.inflight += 1
        return True

    # -- UDP -------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Any, udp: asyncio.DatagramTransport) -> None:
        verdict = self._decide(data)
        if isinstance(verdict, Reply):
            _send(udp, verdict.data, addr)
        elif verdict is FORWARD:
            if self._admit():
                spawn(self._forward_udp(data, addr, udp), name="dns-forward")
            else:
                _send(udp, servfail(data), addr)

    async def _forward_udp(self, query: bytes, addr: Any, udp: asyncio.DatagramTransport) -> None:
        try:
            reply = await self.forward(query, tcp=False)
        finally:
            self.inflight -= 1
        _send(udp, reply if reply is not None else servfail(query), addr)

    # -- TCP (RFC 7766: two-byte length, several queries per connection) ----------------

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.tcp_clients >= self.max_tcp:
            self.counters["meshctl_proxy_dns_tcp_refused_total"] += 1
            writer.close()
            return
        self.tcp_clients += 1
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S)
                (n,) = struct.unpack("!H", head)
                if not 12 <= n <= MAX_TCP_QUERY:
                    self.counters["meshctl_proxy_dns_tcp_refused_total"] += 1
                    return  # a length no query has: the stream cannot be trusted past it
                data = await asyncio.wait_for(reader.readexactly(n), TCP_IDLE_S)
                verdict = self._decide(data)
                if isinstance(verdict, Reply):
                    out: bytes | None = verdict.data
                elif verdict is FORWARD:
                    if self._admit():
                        try:
                            out = await self.forward(data, tcp=True)
                        finally:
                            self.inflight -= 1
                        out = out if out is not None else servfail(data)
                    else:
                        out = servfail(data)
                else:
                    return
                if out is None:
                    return
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self.tcp_clients -= 1
            writer.close()

    # -- the upstream ----------------------------------------------------------------

    async def forward(self, query: bytes, *, tcp: bool) -> bytes | None:
        """The first upstream's reply to `query`, bytes unchanged; None if none answered."""
        for upstream in self.upstreams:
            try:
                ask = self._ask_tcp if tcp else self._ask_udp
                return await asyncio.wait_for(ask(query, upstream), self.timeout_s)
            except (OSError, TimeoutError, EOFError, asyncio.IncompleteReadError) as exc:
                self.counters["meshctl_proxy_dns_upstream_errors_total"] += 1
                log.debug("upstream %s:%d: %r", upstream[0], upstream[1], exc)
        return None

    async def _ask_udp(self, query: bytes, upstream: tuple[str, int]) -> bytes:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _OneReply(query[:2]), remote_addr=upstream, family=family
        )
        try:
            transport.sendto(query)
            return await proto.done
        finally:
            transport.close()

    async def _ask_tcp(self, query: bytes, upstream: tuple[str, int]) -> bytes:
        reader, writer = await asyncio.open_connection(*upstream)
        try:
            writer.write(struct.pack("!H", len(query)) + query)
            await writer.drain()
            (n,) = struct.unpack("!H", await reader.readexactly(2))
            data = await reader.readexactly(n)
            if data[:2] != query[:2] or n < 12:
                raise EOFError("the upstream's reply does not carry the query's id")
            return data
        finally:
            writer.close()
