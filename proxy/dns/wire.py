"""The DNS wire format, as much as the proxy needs: a query's question in, replies out.

Sans-IO and pure: bytes in, values or bytes out (RFC 1035 4.1). Only the header and the
question section of a query are ever parsed; a query that is forwarded is relayed as the
bytes that came in, and the upstream's reply as the bytes it sent. Hostile input is
bounded here:

  * a name is at most 255 bytes on the wire and 127 labels (RFC 1035 3.1, 2.3.4);
  * a compression pointer must point strictly backwards (before the label that holds
    it), so following pointers always terminates, and at most MAX_POINTERS are followed;
  * label types 0b01 and 0b10 (RFC 6891's extended labels, never deployed) are errors.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

HEADER: Final = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
QTAIL: Final = struct.Struct("!HH")  # qtype, qclass
MAX_NAME: Final = 255
MAX_LABELS: Final = 127
MAX_POINTERS: Final = 16

QR: Final = 0x8000
AA: Final = 0x0400
TC: Final = 0x0200
RD: Final = 0x0100
RA: Final = 0x0080
CD: Final = 0x0010
OPCODE_MASK: Final = 0x7800

NOERROR: Final = 0
FORMERR: Final = 1
SERVFAIL: Final = 2
NXDOMAIN: Final = 3

TYPE_A: Final = 1
TYPE_AAAA: Final = 28
CLASS_IN: Final = 1


class Malformed(ValueError):
    """The bytes are not a well-formed query; the message says where."""


@dataclass(frozen=True, slots=True)
class Question:
    """The one question of a query, with what a reply needs to echo it."""

    id: int
    flags: int
    name: bytes  # lower case, dotted, no trailing dot; b"" for the root
    qtype: int
    qclass: int
    end: int  # offset just past the question: data[12:end] is echoed in a reply

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11


def is_query(data: bytes) -> bool:
    """A whole header with QR clear: anything else is not a query and is dropped."""
    return len(data) >= HEADER.size and not data[2] & 0x80


def read_name(data: bytes, off: int) -> tuple[bytes, int]:
    """The name at `off` (lower case, dotted) and the offset just past it in place."""
    labels: list[bytes] = []
    wire_len = 1  # the root's zero byte
    end = -1  # where the name ends in place: set at the first pointer or the root
    pointers = 0
    low = off  # a pointer must point before every label read so far
    while True:
        if off >= len(data):
            raise Malformed(f"name runs past the end of the message at byte {off}")
        n = data[off]
        kind = n & 0xC0
        if kind == 0xC0:
            if off + 1 >= len(data):
                raise Malformed(f"compression pointer cut short at byte {off}")
            target = ((n & 0x3F) << 8) | data[off + 1]
            pointers += 1
            if pointers > MAX_POINTERS:
                raise Malformed(f"more than {MAX_POINTERS} compression pointers in a name")
            if target >= low:
                raise Malformed(f"compression pointer at byte {off} does not point backwards")
            if end < 0:
                end = off + 2
            off = low = target
            continue
        if kind:
            raise Malformed(f"label type {kind >> 6:#04b} at byte {off} is not supported")
        if n == 0:
            if end < 0:
                end = off + 1
            return b".".join(labels).lower(), end
        label = data[off + 1 : off + 1 + n]
        if len(label) != n:
            raise Malformed(f"label at byte {off} runs past the end of the message")
        wire_len += n + 1
        if wire_len > MAX_NAME or len(labels) >= MAX_LABELS:
            raise Malformed(f"name longer than {MAX_NAME} bytes")
        labels.append(label)
        off += n + 1


def parse_query(data: bytes) -> Question:
    """The header and single question of a query (is_query(data) must hold)."""
    ident, flags, qdcount, _, _, _ = HEADER.unpack_from(data)
    if qdcount != 1:
        raise Malformed(f"QDCOUNT is {qdcount}, a query asks exactly one question")
    name, off = read_name(data, HEADER.size)
    if off + QTAIL.size > len(data):
        raise Malformed("question cut short before QTYPE/QCLASS")
    qtype, qclass = QTAIL.unpack_from(data, off)
    return Question(ident, flags, name, qtype, qclass, off + QTAIL.size)


def a_record(ip: bytes, ttl: int) -> bytes:
    """One A record whose owner is the question's name (a pointer to byte 12)."""
    assert len(ip) == 4
    return b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, CLASS_IN, ttl, 4) + ip


def reply(data: bytes, q: Question, rcode: int, answers: bytes = b"", ancount: int = 0,
          *, authoritative: bool = True) -> bytes:
    """A reply to `q`: its id, RD and CD echoed, its question echoed byte for byte."""
    flags = QR | RA | (q.flags & (OPCODE_MASK | RD | CD)) | (rcode & 0xF)
    if authoritative:
        flags |= AA
    return HEADER.pack(q.id, flags, 1, ancount, 0, 0) + data[HEADER.size : q.end] + answers


def error_reply(data: bytes, rcode: int) -> bytes:
    """A header-only reply (no question echoed) for a query whose question cannot be read:
    RFC 1035 4.1.1 lets a FORMERR carry just the header."""
    ident, flags = struct.unpack_from("!HH", data)
    flags = QR | RA | (flags & (OPCODE_MASK | RD | CD)) | (rcode & 0xF)
    return HEADER.pack(ident, flags, 0, 0, 0, 0)


def encode_name(name: str) -> bytes:
    """A dotted name on the wire, uncompressed (tests and fake resolvers build queries)."""
    out = b""
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode("ascii")
            if len(raw) > 63:
                raise ValueError(f"label {label!r} is longer than 63 bytes")
            out += bytes([len(raw)]) + raw
    return out + b"\0"


def make_query(name: str, qtype: int = TYPE_A, ident: int = 0x1234, *, rd: bool = True) -> bytes:
    """A standard query for one name (used by tests and the fake upstream resolvers)."""
    flags = RD if rd else 0
    return HEADER.pack(ident, flags, 1, 0, 0, 0) + encode_name(name) + QTAIL.pack(qtype, CLASS_IN)
