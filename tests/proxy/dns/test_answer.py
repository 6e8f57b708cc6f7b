"""proxy/dns/wire.py and answer.py: bytes in, a reply / FORWARD / DROP out (pure)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from common.vip import service_vip
from proxy.dns import wire
from proxy.dns.answer import DROP, FORWARD, NameTable, Reply, decide, names_of, servfail
from proxy.snapshot import build_snapshot
from registry.config import load_directory
from tests.example import CONFIG

REPO = Path(__file__).resolve().parents[3]
TABLE = NameTable.build([("orders", service_vip("orders")), ("web", "240.240.9.9")], "shop")


def _answer_ips(reply: bytes) -> list[str]:
    """The A records' addresses of a reply to a one-question query."""
    _, _, _, ancount, _, _ = wire.HEADER.unpack_from(reply)
    _, off = wire.read_name(reply, 12)
    off += 4
    ips = []
    for _ in range(ancount):
        _, off = wire.read_name(reply, off)
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", reply, off)
        off += 10
        assert rtype == wire.TYPE_A and rdlen == 4
        ips.append(".".join(map(str, reply[off : off + 4])))
        off += rdlen
    return ips


def _rcode(reply: bytes) -> int:
    return reply[3] & 0xF


@pytest.mark.parametrize("name", [*names_of("orders", "shop"), "ORDERS.Mesh.", "orders."])
def test_every_mesh_name_answers_the_vip(name: str) -> None:
    query = wire.make_query(name, ident=0xBEEF)
    got = decide(TABLE, query)
    assert isinstance(got, Reply) and got.note == "answer"
    assert got.data[:2] == b"\xbe\xef"  # the query's id
    flags = struct.unpack_from("!H", got.data, 2)[0]
    assert flags & wire.QR and flags & wire.AA and flags & wire.RD and _rcode(got.data) == 0
    assert _answer_ips(got.data) == [service_vip("orders")]
    # The question is echoed byte for byte (case included: RFC 4343, 0x20 randomisation).
    assert got.data[12 : 12 + len(query) - 12] == query[12:]


def test_aaaa_and_other_types_of_a_mesh_name_are_nodata() -> None:
    for qtype in (wire.TYPE_AAAA, 15, 16):  # AAAA, MX, TXT
        got = decide(TABLE, wire.make_query("orders", qtype))
        assert isinstance(got, Reply) and got.note == "nodata"
        assert _rcode(got.data) == wire.NOERROR and _answer_ips(got.data) == []


@pytest.mark.parametrize(
    "name", ["example.com", "orders.example.com", "orders.other", "orders.svc.cluster.local",
             "rders", ""])  # fmt: skip
def test_other_names_are_forwarded(name: str) -> None:
    assert decide(TABLE, wire.make_query(name)) is FORWARD


def test_class_other_than_in_is_forwarded() -> None:
    query = bytearray(wire.make_query("orders"))
    query[-1] = 3  # CH
    assert decide(TABLE, bytes(query)) is FORWARD


def test_not_a_query_is_dropped_and_a_bad_question_is_formerr() -> None:
    query = wire.make_query("orders")
    assert decide(TABLE, query[:11]) is DROP
    assert decide(TABLE, bytes([query[0], query[1], query[2] | 0x80]) + query[3:]) is DROP
    two = query[:4] + b"\x00\x02" + query[6:]
    got = decide(TABLE, two)
    assert isinstance(got, Reply) and got.note == "formerr"
    assert _rcode(got.data) == wire.FORMERR and got.data[:2] == query[:2]
    assert len(got.data) == 12  # header only: the question could not be read


def test_servfail_echoes_the_question() -> None:
    query = wire.make_query("example.com", ident=7)
    out = servfail(query)
    assert out is not None and _rcode(out) == wire.SERVFAIL and out.endswith(query[12:])
    assert servfail(b"\x00" * 5) is None


def test_compression_pointers_are_followed_backwards_only() -> None:
    # "orders" at 12, then a name "x" + pointer back to 12: fine.
    msg = wire.make_query("orders")
    name, end = wire.read_name(msg + b"\x01x\xc0\x0c", len(msg))
    assert name == b"x.orders" and end == len(msg) + 4
    with pytest.raises(wire.Malformed, match="backwards"):
        wire.read_name(b"\x00" * 12 + b"\xc0\x0c", 12)  # points at itself
    with pytest.raises(wire.Malformed, match="backwards"):
        wire.read_name(b"\x00" * 12 + b"\x01a\xc0\x0c", 12)  # a loop through a label
    with pytest.raises(wire.Malformed, match="not supported"):
        wire.read_name(b"\x00" * 12 + b"\x41", 12)
    with pytest.raises(wire.Malformed, match="longer than 255"):
        wire.read_name(b"\x00" * 12 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63
                       + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x00", 12)


def test_the_snapshot_carries_the_table_of_its_services() -> None:
    config = load_directory(CONFIG).config
    assert config is not None and len(config.services) >= 2
    snap = build_snapshot(1, 1, config, [], "frontend", {"app": "frontend"})
    for svc in config.services:
        for name in names_of(svc.name, config.namespace):
            assert snap.dns.vip_of(name) == service_vip(svc.name) == snap.services[svc.name].vip
    assert snap.dns.vip_of("example.com") is None
