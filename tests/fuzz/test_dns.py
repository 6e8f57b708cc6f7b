"""The DNS question parser under generated input (proxy/dns/wire.py, answer.py).

Properties: any bytes give DROP, FORWARD or a Reply, never another exception; a reply
always carries the query's id, has QR set, and is at most the query plus one A record;
a query built for any valid name parses back to that name, lower-cased.
"""

from __future__ import annotations

import contextlib
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.dns import wire
from proxy.dns.answer import DROP, FORWARD, NameTable, Reply, decide

TABLE = NameTable.build([("orders", "240.240.1.2"), ("web", "240.240.3.4")], "default")
_A_RECORD = len(wire.a_record(b"\0\0\0\0", 1))


def _check(data: bytes) -> None:
    got = decide(TABLE, data)
    if isinstance(got, Reply):
        assert got.data[:2] == data[:2]
        assert struct.unpack_from("!H", got.data, 2)[0] & wire.QR
        assert len(got.data) <= len(data) + _A_RECORD
    else:
        assert got is FORWARD or got is DROP


label = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1,
                max_size=63)
names = st.lists(label, min_size=0, max_size=4).map(".".join).filter(lambda n: len(n) < 250)


@settings(max_examples=500)
@given(st.binary(min_size=0, max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    _check(data)


@settings(max_examples=500)
@given(st.binary(min_size=0, max_size=40), st.booleans())
def test_random_questions_after_a_query_header_never_raise(tail: bytes, one: bool) -> None:
    header = wire.HEADER.pack(0x4242, wire.RD, 1 if one else 2, 0, 0, 0)
    _check(header + tail)


@settings(max_examples=500)
@given(names, st.sampled_from([wire.TYPE_A, wire.TYPE_AAAA, 16]), st.data())
def test_mutated_queries_never_raise(name: str, qtype: int, data: st.DataObject) -> None:
    msg = bytearray(wire.make_query(name, qtype))
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(12, len(msg) - 1))
        msg[i] = data.draw(st.sampled_from([0x00, 0x3F, 0x40, 0x80, 0xC0, 0xC0 | 0x3F, 0xFF,
                                            data.draw(st.integers(0, 255))]))
    _check(bytes(msg))


@given(names, st.integers(0, 0xFFFF))
def test_a_query_parses_back_to_its_name(name: str, ident: int) -> None:
    q = wire.parse_query(wire.make_query(name, ident=ident))
    assert q.name == name.lower().encode() and q.id == ident and q.qtype == wire.TYPE_A


@given(st.binary(min_size=0, max_size=64).flatmap(
    lambda prefix: st.tuples(st.just(prefix), st.integers(0, 0x3FFF))))
def test_pointer_chains_end(case: tuple[bytes, int]) -> None:
    prefix, target = case
    data = b"\x00" * 12 + prefix + struct.pack("!H", 0xC000 | target)
    with contextlib.suppress(wire.Malformed):
        wire.read_name(data, 12 + len(prefix))
