"""Sans-IO HTTP/1.1: bytes in, events out, strict RFC 9112 framing; no sockets, no asyncio.

The proxy's asyncio Protocols feed whatever bytes arrive (``RequestParser.feed`` downstream,
``ResponseParser.feed`` upstream) and forward events as they come: Request/Response heads,
Data pieces of the de-chunked body (streamed, never buffered whole), EndOfMessage. Anything
ambiguous about where a message ends raises ProtocolError with the status to answer; the
proxy re-frames bodies itself, so it renders heads with ``render_*`` after dropping
hop-by-hop fields with ``strip_hop_by_hop``. docs/http1.md lists each refusal and its RFC.
"""

from proxy.http1.events import (
    Data,
    EndOfMessage,
    Event,
    Headers,
    Names,
    ProtocolError,
    Request,
    Response,
    UpstreamClosed,
    lower_names,
)
from proxy.http1.render import (
    HOP_BY_HOP,
    LAST_CHUNK,
    REFRAMED,
    encode_chunk,
    render_request_head,
    render_response_head,
    request_drop,
    strip_hop_by_hop,
)
from proxy.http1.request import RequestParser
from proxy.http1.response import ResponseParser

__all__ = [
    "HOP_BY_HOP",
    "LAST_CHUNK",
    "REFRAMED",
    "Data",
    "EndOfMessage",
    "Event",
    "Headers",
    "Names",
    "ProtocolError",
    "Request",
    "RequestParser",
    "Response",
    "ResponseParser",
    "UpstreamClosed",
    "encode_chunk",
    "lower_names",
    "render_request_head",
    "render_response_head",
    "request_drop",
    "strip_hop_by_hop",
]
