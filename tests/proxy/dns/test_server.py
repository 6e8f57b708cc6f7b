"""proxy/dns/server.py on 127.0.0.1: mesh names answered, the rest forwarded to a fake
upstream resolver and relayed unchanged, and the bounds (timeout, in-flight, TCP)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.aio import spawn
from proxy.dns import wire
from proxy.dns.answer import NameTable
from proxy.dns.server import DnsServer, upstreams_from
from tests.proxy.dns.fakes import FakeResolver, upstream_reply

TABLE = NameTable.build([("orders", "240.240.1.2")], "default")


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.replies.put_nowait(data)


async def udp_ask(port: int, query: bytes, timeout: float = 5.0) -> bytes | None:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _Client, remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(query)
        try:
            return await asyncio.wait_for(proto.replies.get(), timeout)
        except TimeoutError:
            return None
    finally:
        transport.close()


async def tcp_ask(port: int, payload: bytes, *, eof: bool = False) -> bytes | None:
    """Send a raw TCP payload (length prefix included), then FIN if `eof`; the framed
    reply, or None if the server closed the connection without one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        if eof:
            writer.write_eof()
        await writer.drain()
        head = await asyncio.wait_for(reader.read(2), 5)
        if len(head) < 2:
            return None
        return await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]), 5)
    finally:
        writer.close()


def framed(query: bytes) -> bytes:
    return struct.pack("!H", len(query)) + query


@pytest.fixture
async def upstream() -> AsyncIterator[FakeResolver]:
    fake = FakeResolver()
    await fake.start()
    yield fake
    fake.close()


async def started(upstreams: list[tuple[str, int]], **kw: Any) -> tuple[DnsServer, int]:
    server = DnsServer(lambda: TABLE, upstreams, **kw)
    _, port = await server.start("127.0.0.1", 0)
    return server, port


async def test_mesh_name_is_answered_without_the_upstream(upstream: FakeResolver) -> None:
    server, port = await started([("127.0.0.1", upstream.port)])
    try:
        for reply in (await udp_ask(port, wire.make_query("orders.mesh", ident=9)),
                      await tcp_ask(port, framed(wire.make_query("orders", ident=10)))):
            assert reply is not None and reply[-4:] == bytes([240, 240, 1, 2])
        assert upstream.got == []
        assert server.counters["meshctl_proxy_dns_answer_total"] == 2
    finally:
        await server.close()


async def test_other_names_are_relayed_unchanged_both_ways(upstream: FakeResolver) -> None:
    server, port = await started([("127.0.0.1", upstream.port)])
    try:
        query = wire.make_query("Example.COM", ident=0xA1B2)
        assert await udp_ask(port, query) == upstream_reply(query)
        tq = wire.make_query("example.org", ident=0x0102)
        assert await tcp_ask(port, framed(tq)) == upstream_reply(tq)
        assert upstream.got == [("udp", query), ("tcp", tq)]  # the bytes, id included
    finally:
        await server.close()


async def test_a_dead_upstream_is_skipped_for_the_next(upstream: FakeResolver) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, never read: refused once closed
    server, port = await started([("127.0.0.1", dead), ("127.0.0.1", upstream.port)])
    try:
        query = wire.make_query("example.net")
        assert await udp_ask(port, query) == upstream_reply(query)
    finally:
        await server.close()


@pytest.mark.parametrize("mode", ["silent", "wrong-id"])
async def test_no_usable_upstream_reply_gives_servfail(mode: str) -> None:
    fake = FakeResolver(mode)
    await fake.start()
    server, port = await started([("127.0.0.1", fake.port)], timeout_s=0.3)
    try:
        query = wire.make_query("example.com", ident=77)
        reply = await udp_ask(port, query)
        assert reply is not None and reply[:2] == query[:2] and reply[3] & 0xF == wire.SERVFAIL
        assert server.inflight == 0
    finally:
        await server.close()
        fake.close()


async def test_forwards_past_the_in_flight_bound_get_servfail_at_once() -> None:
    fake = FakeResolver("silent")
    await fake.start()
    server, port = await started([("127.0.0.1", fake.port)], timeout_s=3.0, max_inflight=2)
    try:
        first = [spawn(udp_ask(port, wire.make_query("a.example", ident=i))) for i in (1, 2)]
        for _ in range(100):  # until both are in flight at the server
            if server.inflight == 2:
                break
            await asyncio.sleep(0.02)
        assert server.inflight == 2, "the two forwards never reached the server"
        third = await udp_ask(port, wire.make_query("b.example", ident=3), timeout=1.0)
        assert third is not None and third[3] & 0xF == wire.SERVFAIL
        assert server.counters["meshctl_proxy_dns_overflow_total"] == 1
        assert len(fake.got) == 2  # the third never reached the upstream
        await asyncio.gather(*first)
    finally:
        await server.close()
        fake.close()


def test_upstreams_from_resolv_conf() -> None:
    text = ("# comment\nsearch example.internal\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n"
            "nameserver bogus\nnameserver 10.0.0.3\nnameserver 10.0.0.4\noptions ndots:2\n")
    assert upstreams_from(text) == (("10.0.0.2", 53), ("fe80::1", 53), ("10.0.0.3", 53))
    assert upstreams_from("") == (("127.0.0.1", 53),)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1 here")
async def test_127_0_0_1_has_a_1_twin_on_the_same_port() -> None:
    # ip6tables REDIRECT sends an IPv6 query to [::1]:port: it must be answered there too.
    server, port = await started([("127.0.0.1", 9)])
    try:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            _Client, remote_addr=("::1", port), family=socket.AF_INET6)
        try:
            transport.sendto(wire.make_query("orders", ident=6))
            reply = await asyncio.wait_for(proto.replies.get(), 5)
        finally:
            transport.close()
        assert reply[:2] == b"\x00\x06" and reply.endswith(bytes([240, 240, 1, 2]))
        assert await tcp_ask(port, framed(wire.make_query("orders"))) is not None
    finally:
        await server.close()
