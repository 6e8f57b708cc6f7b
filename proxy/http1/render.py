"""Bytes out: heads, chunks, and the hop-by-hop filter the proxy runs before re-framing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from proxy.http1.events import Headers, Names, Request, Response, lower_names
from proxy.http1.grammar import index_of, list_tokens, native, values_of

LAST_CHUNK: Final = b"0\r\n\r\n"

# RFC 9110 7.6.1: connection-specific fields a proxy must not forward, plus the names the
# Connection field lists. Proxy-Connection is not standard but still sent by old clients.
HOP_BY_HOP: Final = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    )
)
# Never forwarded from a request either: the proxy re-frames every body itself (and answers
# 100-continue itself), so the received framing fields do not pass through.
REFRAMED: Final = frozenset((b"content-length", b"transfer-encoding", b"expect"))


def request_drop(remove: frozenset[bytes]) -> frozenset[bytes]:
    """All a request's fields not to forward besides Connection-listed ones: `remove` (a
    route's removals), the re-framed and the hop-by-hop ones. Built with the snapshot (a
    route's plan) or once per module, never per request."""
    return remove | REFRAMED | HOP_BY_HOP


def render_request_py(method: bytes, target: bytes, version: bytes, headers: Headers) -> bytes:
    """``method SP target SP HTTP/version CRLF``, the field lines, the empty line; ValueError
    when CR, LF or NUL is inside any part. proxy/http1/_speedups.c renders the same in C
    for the compiled core (None there: a part that is not bytes, left to this function)."""
    fields = b"\r\n".join(map(b": ".join, headers))  # no Python-level loop per field
    head = b"%s %s HTTP/%s\r\n%s\r\n\r\n" if headers else b"%s %s HTTP/%s\r\n%s\r\n"
    return _checked(head % (method, target, version, fields), headers)


def render_response_py(version: bytes, status: int, reason: bytes, headers: Headers) -> bytes:
    """``HTTP/version SP status SP reason CRLF``, the field lines, the empty line (as
    render_request_py; _speedups.c's twin for the compiled core)."""
    fields = b"\r\n".join(map(b": ".join, headers))
    head = b"HTTP/%s %d %s\r\n%s\r\n\r\n" if headers else b"HTTP/%s %d %s\r\n%s\r\n"
    return _checked(head % (version, status, reason, fields), headers)


_c_request: Final[Callable[[bytes, bytes, bytes, Headers], bytes | None] | None] = (
    native.render_request if native is not None else None
)
_c_response: Final[Callable[[bytes, int, bytes, Headers], bytes | None] | None] = (
    native.render_response if native is not None else None
)
_c_strip: Final[Callable[[Headers, Names, frozenset[bytes]], Headers | None] | None] = (
    native.strip_fields if native is not None else None
)


def render_request_head(
    method: bytes, target: bytes, headers: Headers, version: bytes = b"1.1"
) -> bytes:
    """``method SP target SP HTTP/version CRLF``, the field lines, the empty line."""
    head = _c_request(method, target, version, headers) if _c_request is not None else None
    return head if head is not None else render_request_py(method, target, version, headers)


def render_response_head(
    status: int, reason: bytes, headers: Headers, version: bytes = b"1.1"
) -> bytes:
    """``HTTP/version SP status SP reason CRLF``, the field lines, the empty line."""
    head = _c_response(version, status, reason, headers) if _c_response is not None else None
    return head if head is not None else render_response_py(version, status, reason, headers)


def _checked(head: bytes, headers: Headers) -> bytes:
    # A CR, LF or NUL smuggled into any part (a value from config, a target) would split the
    # head into two messages (RFC 9110 5.5): three C-speed counts refuse it. Field names
    # are trusted to be tokens: parsed ones were checked, configured ones are at load time.
    lines = len(headers) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\x00" in head:
        raise ValueError(f"CR, LF or NUL inside a head being rendered: {head[:200]!r}")
    return head


def hex_id_py(value: int, digits: int) -> bytes:
    """``value`` as ``digits`` lower-case hex digits, zero-padded (request ids): the twin of
    _speedups.hex_id, which answers None outside 0 <= value < 16**digits, even digits."""
    return b"%0*x" % (digits, value)


_c_hex: Final[Callable[[int, int], bytes | None] | None] = (
    native.hex_id if native is not None else None
)


def hex_id(value: int, digits: int) -> bytes:
    out = _c_hex(value, digits) if _c_hex is not None else None
    return out if out is not None else hex_id_py(value, digits)


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; empty data gives b"" (an empty chunk would end the body)."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _kept_py(headers: Headers, names: Names, drop: frozenset[bytes], extra: Headers) -> Headers:
    fields = strip_fields_py(headers, names, drop)
    fields.extend(extra)
    return fields


def forward_request_head_py(req: Request, drop: frozenset[bytes], extra: Headers) -> bytes:
    """The head to forward for `req`: the fields strip_fields keeps (`drop`, and what
    Connection lists), then `extra`, rendered. _speedups.forward_request is its C twin: one
    pass, no list in between."""
    fields = _kept_py(req.headers, req.lowered(), drop, extra)
    return render_request_py(req.method, req.target, req.version, fields)


def forward_response_head_py(
    resp: Response, drop: frozenset[bytes], extra: Headers, body: bytes = b""
) -> bytes:
    """As forward_request_head_py, for a response sent on as HTTP/1.1, followed by `body`
    in the same bytes (_speedups.forward_response's twin)."""
    fields = _kept_py(resp.headers, resp.lowered(), drop, extra)
    return render_response_py(b"1.1", resp.status, resp.reason, fields) + body


_c_forward_request: Final[
    Callable[[bytes, bytes, bytes, Headers, Names, frozenset[bytes], Headers], bytes | None]
    | None
] = native.forward_request if native is not None else None
_c_forward_response: Final[
    Callable[[bytes, int, bytes, Headers, Names, frozenset[bytes], Headers, bytes], bytes | None]
    | None
] = native.forward_response if native is not None else None


def _kept(headers: Headers, names: Names, drop: frozenset[bytes], extra: Headers) -> Headers:
    fields = strip_hop_by_hop(headers, names, drop)
    fields.extend(extra)
    return fields


def forward_request_head(req: Request, drop: frozenset[bytes], extra: Headers) -> bytes:
    """What forward_request_head_py answers, in one C call for the usual heads."""
    c, names = _c_forward_request, req.lowered()
    head = (
        c(req.method, req.target, req.version, req.headers, names, drop, extra)
        if c is not None
        else None
    )
    if head is None:
        fields = _kept(req.headers, names, drop, extra)
        head = render_request_head(req.method, req.target, fields, req.version)
    return head


def forward_response_head(
    resp: Response, drop: frozenset[bytes], extra: Headers, body: bytes = b""
) -> bytes:
    """What forward_response_head_py answers, in one C call for the usual heads."""
    c, names = _c_forward_response, resp.lowered()
    head = (
        c(b"1.1", resp.status, resp.reason, resp.headers, names, drop, extra, body)
        if c is not None
        else None
    )
    if head is None:
        fields = _kept(resp.headers, names, drop, extra)
        head = render_response_head(resp.status, resp.reason, fields) + body
    return head


def strip_hop_by_hop(
    headers: Headers, names: Names | None = None, drop: frozenset[bytes] = HOP_BY_HOP
) -> Headers:
    """The fields to forward: all but the hop-by-hop ones (RFC 9110 7.6.1), those the
    Connection field lists, and any other in ``drop`` (a superset of HOP_BY_HOP: callers
    pass a set built once, not per request). ``names``: the lowered names, as the parsers
    give them (computed when not given). Always a new list: callers append to it."""
    if names is None:
        names = lower_names(headers)
    fields = _c_strip(headers, names, drop) if _c_strip is not None else None
    return fields if fields is not None else strip_fields_py(headers, names, drop)


def strip_fields_py(headers: Headers, names: Names, drop: frozenset[bytes]) -> Headers:
    """strip_hop_by_hop with the lowered ``names`` given; _speedups.strip_fields is its C
    twin for the usual heads (no Connection field, or one naming nothing else to drop)."""
    values = values_of(headers, names, b"connection")
    if values is not None:
        if len(values) == 1 and b"," not in values[0]:
            listed = [values[0].lower()]  # the usual single token, already OWS-stripped
        else:
            listed = list_tokens(values)
        # Only listed names that are present and not dropped anyway change anything
        # (usually none: "keep-alive" or "close").
        extra = [name for name in listed if name not in drop and index_of(names, name) >= 0]
        if extra:
            drop = drop.union(extra)
    return keep_fields_py(headers, names, drop)


def keep_fields_py(headers: Headers, names: Names, drop: frozenset[bytes]) -> Headers:
    """The fields of ``headers`` whose lowered name (``names``) is not in ``drop``, in a new
    list."""
    if drop.isdisjoint(names):
        return list(headers)
    return [field for field, name in zip(headers, names, strict=True) if name not in drop]
