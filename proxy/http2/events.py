"""What the HTTP/2 adapter hands the forwarding core: one event per thing that happened.

SETTINGS, PING and WINDOW_UPDATE are answered inside the adapter and never surface.
"""

from __future__ import annotations

from dataclasses import dataclass

Fields = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A request's HEADERS, checked: pseudo-headers pulled out, `fields` the rest."""

    stream_id: int
    method: bytes
    path: bytes
    authority: bytes
    scheme: bytes
    fields: Fields
    end_stream: bool


@dataclass(frozen=True, slots=True)
class Data:
    """A chunk of a request body; give its length back with `consumed` once forwarded."""

    stream_id: int
    data: bytes
    end_stream: bool


@dataclass(frozen=True, slots=True)
class Trailers:
    """A request's trailing HEADERS (gRPC sends none from the client, HTTP may)."""

    stream_id: int
    fields: Fields


@dataclass(frozen=True, slots=True)
class StreamReset:
    """A stream whose head was handed over ended early: reset by the peer (`by_peer`), or
    by the codec for a protocol error in it (a content-length the DATA did not match)."""

    stream_id: int
    error_code: int
    by_peer: bool


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The connection is over: every stream handed over and not finished is abandoned."""

    error_code: int
    reason: str


Event = RequestHead | Data | Trailers | StreamReset | ConnectionLost
