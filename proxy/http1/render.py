"""Bytes out: heads, chunks, and the hop-by-hop filter the proxy runs before re-framing."""

from __future__ import annotations

from proxy.http1.events import Headers
from proxy.http1.grammar import list_tokens

LAST_CHUNK = b"0\r\n\r\n"

# RFC 9110 7.6.1: connection-specific fields a proxy must not forward, plus the names the
# Connection field lists. Proxy-Connection is not standard but still sent by old clients.
HOP_BY_HOP = frozenset(
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


def render_request_head(
    method: bytes, target: bytes, headers: Headers, version: bytes = b"1.1"
) -> bytes:
    """``method SP target SP HTTP/version CRLF``, the field lines, the empty line."""
    fields = b"\r\n".join(map(b": ".join, headers))  # no Python-level loop per field
    head = b"%s %s HTTP/%s\r\n%s\r\n\r\n" if headers else b"%s %s HTTP/%s\r\n%s\r\n"
    return _checked(head % (method, target, version, fields), headers)


def render_response_head(
    status: int, reason: bytes, headers: Headers, version: bytes = b"1.1"
) -> bytes:
    """``HTTP/version SP status SP reason CRLF``, the field lines, the empty line."""
    fields = b"\r\n".join(map(b": ".join, headers))
    head = b"HTTP/%s %d %s\r\n%s\r\n\r\n" if headers else b"HTTP/%s %d %s\r\n%s\r\n"
    return _checked(head % (version, status, reason, fields), headers)


def _checked(head: bytes, headers: Headers) -> bytes:
    # A CR, LF or NUL smuggled into any part (a value from config, a target) would split the
    # head into two messages (RFC 9110 5.5): three C-speed counts refuse it. Field names
    # are trusted to be tokens: parsed ones were checked, configured ones are at load time.
    lines = len(headers) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\x00" in head:
        raise ValueError(f"CR, LF or NUL inside a head being rendered: {head[:200]!r}")
    return head


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; empty data gives b"" (an empty chunk would end the body)."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


def strip_hop_by_hop(headers: Headers) -> Headers:
    """The fields to forward: all but the hop-by-hop ones (RFC 9110 7.6.1)."""
    kept = []
    listed = []
    for field in headers:
        key = field[0].lower()
        if key not in HOP_BY_HOP:
            kept.append(field)
        elif key == b"connection":
            listed.append(field[1])
    extra = HOP_BY_HOP.union(list_tokens(listed)) if listed else HOP_BY_HOP
    if extra is HOP_BY_HOP or extra == HOP_BY_HOP:  # usually "keep-alive": nothing more to drop
        return kept
    return [field for field in kept if field[0].lower() not in extra]
