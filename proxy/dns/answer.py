"""What the proxy does with one DNS query: answer it from the mesh's names, or forward it.

Pure: `decide(table, bytes)` -> Reply | FORWARD | DROP, with the table built once per
config snapshot (`NameTable.build`), so a query costs one parse and one dict lookup.

Names answered, for a service `orders` in mesh namespace `default` (all case-insensitive,
with or without the trailing dot):

    orders                              the plain name, what apps call
    orders.mesh                         Kuma's `.mesh` domain
    orders.default                      `<service>.<namespace>`, the name in metrics
    orders.default.svc.cluster.local    the FQDN in Istio YAML copied into mesh.yaml

A (class IN): the service's VIP (common/vip.py), the address the outbound interception
maps back to the service. Any other type for a mesh name (AAAA included: no IPv6 VIPs):
NOERROR with no answer (NODATA), so a resolver asking A and AAAA gets the A and does
not go on to the upstream with the name. Everything else is forwarded unchanged.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from proxy.dns import wire

TTL_S: Final = 30  # as Istio's DNS proxy; a VIP is derived from the name and never moves
MESH_DOMAIN: Final = "mesh"


@dataclass(frozen=True, slots=True)
class Reply:
    """Send these bytes back to the client."""

    data: bytes
    note: str  # "answer", "nodata", "formerr": for the counters


class _Verdict:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


FORWARD: Final = _Verdict("FORWARD")  # relay the query's bytes to the upstream resolver
DROP: Final = _Verdict("DROP")  # not a query at all (too short, or a response): no reply


@dataclass(frozen=True, slots=True)
class NameTable:
    """name (lower case, no trailing dot) -> the A record answering it, pre-rendered."""

    records: dict[bytes, bytes]

    @staticmethod
    def build(vips: Iterable[tuple[str, str]], namespace: str) -> NameTable:
        """From (service, VIP) pairs: each service under the four names in the docstring."""
        records: dict[bytes, bytes] = {}
        for service, vip in vips:
            rr = wire.a_record(ipaddress.IPv4Address(vip).packed, TTL_S)
            for name in names_of(service, namespace):
                records[name.encode("ascii").lower()] = rr
        return NameTable(records)

    def vip_of(self, name: str) -> str | None:
        rr = self.records.get(name.strip(".").lower().encode("ascii"))
        return str(ipaddress.IPv4Address(rr[-4:])) if rr is not None else None


EMPTY: Final = NameTable({})


def names_of(service: str, namespace: str) -> tuple[str, ...]:
    return (
        service,
        f"{service}.{MESH_DOMAIN}",
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc.cluster.local",
    )


Decision = Reply | _Verdict


def decide(table: NameTable, data: bytes) -> Decision:
    """The proxy's answer to one query's bytes (UDP payload, or a TCP message)."""
    if not wire.is_query(data):
        return DROP
    opcode = (struct.unpack_from("!H", data, 2)[0] & wire.OPCODE_MASK) >> 11
    if opcode != 0:
        return FORWARD  # NOTIFY, UPDATE, ...: not ours to judge; the upstream's
    try:
        q = wire.parse_query(data)
    except wire.Malformed:
        return Reply(wire.error_reply(data, wire.FORMERR), "formerr")
    if q.qclass != wire.CLASS_IN:
        return FORWARD
    rr = table.records.get(q.name)
    if rr is None:
        return FORWARD
    if q.qtype == wire.TYPE_A:
        return Reply(wire.reply(data, q, wire.NOERROR, rr, 1), "answer")
    return Reply(wire.reply(data, q, wire.NOERROR), "nodata")


def servfail(data: bytes) -> bytes | None:
    """SERVFAIL for a query the upstream did not answer (None if it is not a query)."""
    if not wire.is_query(data):
        return None
    try:
        q = wire.parse_query(data)
    except wire.Malformed:
        return wire.error_reply(data, wire.SERVFAIL)
    return wire.reply(data, q, wire.SERVFAIL, authoritative=False)
