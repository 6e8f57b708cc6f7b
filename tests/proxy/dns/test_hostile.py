"""Hostile input to the proxy's DNS listener: one row of docs/hostile-input.md per case.

Each case goes to a real DnsServer on 127.0.0.1 (UDP or TCP) whose upstream is a fake
resolver that records what reaches it. "no reply" is proven without waiting: a good query
follows on the same socket, and its reply must be the first one back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.dns import wire
from proxy.dns.server import MAX_TCP_QUERY, DnsServer
from tests.proxy.dns.fakes import FakeResolver
from tests.proxy.dns.test_server import TABLE, _Client, framed, tcp_ask

REPO = Path(__file__).resolve().parents[3]
VIP = bytes([240, 240, 1, 2])
Q = wire.make_query("orders", ident=0x0A0A)
HDR = Q[:12]


def _hdr(qd: int = 1, flags: int = wire.RD, ident: int = 0x0A0A) -> bytes:
    return wire.HEADER.pack(ident, flags, qd, 0, 0, 0)


@dataclass(frozen=True)
class Case:
    id: str
    what: str
    transport: str  # udp | tcp (tcp payloads carry their own length prefix)
    payload: bytes
    expect: str  # no reply | FORMERR | answered | forwarded unchanged | closed

    def __str__(self) -> str:
        return self.id


CASES = [
    Case("short", "11 bytes, less than a header", "udp", Q[:11], "no reply"),
    Case("response", "QR set: a response, not a query (reflection)", "udp",
         Q[:2] + bytes([Q[2] | 0x80]) + Q[3:], "no reply"),
    Case("qdcount_0", "QDCOUNT 0", "udp", _hdr(qd=0), "FORMERR"),
    Case("qdcount_2", "QDCOUNT 2", "udp", _hdr(qd=2) + Q[12:] * 2, "FORMERR"),
    Case("pointer_self", "a compression pointer to itself", "udp",
         HDR + b"\xc0\x0c\x00\x01\x00\x01", "FORMERR"),
    Case("pointer_loop", "a label, then a pointer back to it (a loop)", "udp",
         HDR + b"\x01a\xc0\x0c\x00\x01\x00\x01", "FORMERR"),
    Case("pointer_forward", "a pointer pointing forward", "udp",
         HDR + b"\xc0\x12\x00\x01\x00\x01\x06orders\x00", "FORMERR"),
    Case("name_256", "a 256-byte name", "udp",
         HDR + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01", "FORMERR"),
    Case("label_past_end", "a label longer than the rest of the message", "udp",
         HDR + b"\x30orders", "FORMERR"),
    Case("extended_label", "label type 0b01 (RFC 6891 extended label)", "udp",
         HDR + b"\x41orders\x00\x00\x01\x00\x01", "FORMERR"),
    Case("no_qtype", "question cut short before QTYPE", "udp", Q[:-4], "FORMERR"),
    Case("trailing_bytes", "a mesh name query followed by 100 stray bytes", "udp",
         Q + b"\xff" * 100, "answered"),
    Case("opcode_update", "opcode UPDATE (5): not ours to judge", "udp",
         Q[:2] + bytes([Q[2] | 0x28]) + Q[3:], "forwarded unchanged"),
    Case("tcp_len_0", "TCP length prefix 0", "tcp", b"\x00\x00" + framed(Q), "closed"),
    Case("tcp_len_11", "TCP length prefix 11 (less than a header)", "tcp",
         b"\x00\x0b" + Q[:11], "closed"),
    Case("tcp_len_65535", f"TCP length prefix 65535 (over {MAX_TCP_QUERY})", "tcp",
         b"\xff\xff" + Q, "closed"),
    Case("tcp_truncated", "TCP length 100, then 10 bytes and FIN", "tcp",
         b"\x00\x64" + Q[:10], "closed"),
    Case("tcp_response", "TCP: a response (QR set) instead of a query", "tcp",
         framed(Q[:2] + bytes([Q[2] | 0x80]) + Q[3:]), "closed"),
]

# Bounds proven by tests/proxy/dns/test_server.py (name: what the row says).
OTHER_ROWS = [
    ("test_no_usable_upstream_reply_gives_servfail",
     "upstream silent, or replying with another id", "SERVFAIL after the timeout"),
    ("test_forwards_past_the_in_flight_bound_get_servfail_at_once",
     "more forwards in flight than max_inflight", "SERVFAIL at once, not forwarded"),
]


async def _udp_then_good(port: int, payload: bytes) -> bytes:
    """Send `payload`, then a good query (id 0x7777): the first reply back."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _Client, remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(payload)
        transport.sendto(wire.make_query("orders", ident=0x7777))
        return await asyncio.wait_for(proto.replies.get(), 5)
    finally:
        transport.close()


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_hostile_dns_input(case: Case) -> None:
    fake = FakeResolver()
    await fake.start()
    server = DnsServer(lambda: TABLE, [("127.0.0.1", fake.port)])
    _, port = await server.start("127.0.0.1", 0)
    try:
        if case.transport == "tcp":
            reply = await tcp_ask(port, case.payload, eof=True)
            assert reply is None, "a reply to a broken stream"
            # The server is still fine: a good query on a new connection is answered.
            good = await tcp_ask(port, framed(Q))
            assert good is not None and good.endswith(VIP)
            assert fake.got == []
            return
        first = await _udp_then_good(port, case.payload)
        if case.expect == "no reply":
            assert first[:2] == b"\x77\x77"
        elif case.expect == "FORMERR":
            assert first[:2] == case.payload[:2] and first[3] & 0xF == wire.FORMERR
        elif case.expect == "answered":
            assert first[:2] == case.payload[:2] and first.endswith(VIP)
        else:
            assert case.expect == "forwarded unchanged"
            assert first[:2] in (case.payload[:2], b"\x77\x77")
            for _ in range(100):  # the forward is a task; its reply may come second
                if fake.got:
                    break
                await asyncio.sleep(0.02)
            assert fake.got == [("udp", case.payload)]
        if case.expect != "forwarded unchanged":
            assert fake.got == []
    finally:
        await server.close()
        fake.close()


def render_table() -> str:
    out = [
        "## DNS listener (`tests/proxy/dns/test_hostile.py`)",
        "",
        "The proxy's DNS port (127.0.0.1:15053, docs/dns.md), with a fake upstream resolver "
        "recording what reaches it: nothing does, except in the `forwarded` rows.",
        "",
        "| case | input | result |",
        "|---|---|---|",
    ]
    out += [f"| `{c.id}` | {c.what} ({c.transport}) | {c.expect} |" for c in CASES]
    out += [f"| `{name}` | {what} | {result} |" for name, what, result in OTHER_ROWS]
    return "\n".join(out) + "\n"


def test_the_table_is_in_the_docs_and_every_row_has_its_test() -> None:
    from tests.proxy.dns import test_server

    for name, _, _ in OTHER_ROWS:
        assert callable(getattr(test_server, name, None)), name
    docs = (REPO / "docs" / "hostile-input.md").read_text()
    assert render_table() in docs


