"""RFC 9110 / 9112 grammar as compiled regexes, and the header-block scanner built on them.

House rules for the hot path: a head is validated and split by a handful of C calls over
the whole block (``findall`` with ``pos``/``endpos``, ``bytes.count``); Python loops run
per header only where a header's meaning must be read, and the slow per-line diagnosis runs
only once a block has already been refused, to say which line and why.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType
from typing import Final

from proxy.http1.events import Headers, Names, ProtocolError, lower_names

# proxy/http1/_speedups.c, the C twins of a few functions here and in render.py and
# tracing: built with the compiled core (proxy/compiled), absent when it is interpreted.
native: ModuleType | None
try:
    from proxy.http1 import _speedups

    native = _speedups
except ImportError:
    native = None

# RFC 9110 5.6.2: token = 1*tchar.
_TCHAR = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]"
TOKEN: Final = re.compile(_TCHAR + rb"+")
# RFC 9112 5: field-line = field-name ":" OWS field-value OWS, one per CRLF-ended line, and
# RFC 9110 5.5: field-value = *( field-vchar / SP / HTAB ) with field-vchar = VCHAR / obs-text:
# no CTL but HTAB, so CR, LF and NUL can never get in. MULTILINE anchors each match at a line
# start, so a line matches whole or not at all: the block is valid iff the number of matches
# equals the number of lines. Possessive quantifiers: no backtracking, ~1.5 µs for 8 lines.
# Trailing OWS is left in the value here and stripped by split_fields_py when present (rare).
FIELD_LINE: Final = re.compile(
    rb"^(" + _TCHAR + rb"++):[ \t]*+([\t\x20-\x7e\x80-\xff]*+)\r\n", re.MULTILINE
)
# RFC 9112 3: request-line = method SP request-target SP HTTP-version. The target is
# visible ASCII only (RFC 3986 has no place for SP, CTLs or bytes >= 0x80).
REQUEST_LINE: Final = re.compile(rb"(" + _TCHAR + rb"+) ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])\r\n")
# RFC 9112 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]. The SP before
# an empty reason is often left out by servers; it carries no framing, so it is optional.
STATUS_LINE: Final = re.compile(
    rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?\r\n"
)
# RFC 9110 8.6: Content-Length = 1*DIGIT. 18 digits keep it below 2**63 (what Envoy and
# every backend can represent); a longer one is refused rather than trusted.
CONTENT_LENGTH: Final = re.compile(rb"[0-9]{1,18}")
# RFC 9112 7.1: chunk-size = 1*HEXDIG (at most 16: 64 bits), chunk-ext = *( BWS ";" BWS
# chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ), chunk-ext-val = token / quoted-string.
_QUOTED = rb'"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"'
CHUNK_LINE: Final = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*"
    + _TCHAR
    + rb"+(?:[ \t]*=[ \t]*(?:"
    + _TCHAR
    + rb"+|"
    + _QUOTED
    + rb"))?)*"
)
# RFC 9110 7.2: Host = uri-host [ ":" port ] (RFC 3986 reg-name or IP-literal); may be empty.
_URI_HOST = rb"(?:\[[0-9A-Fa-f:.]+\]|[-A-Za-z0-9._~!$&'()*+,;=%]*)"
HOST: Final = re.compile(_URI_HOST + rb"(?::[0-9]*)?")
# RFC 9112 3.2.3: authority-form, for CONNECT only; RFC 9110 9.3.6 requires the port.
AUTHORITY_FORM: Final = re.compile(_URI_HOST + rb":[0-9]{1,5}")
# RFC 9112 3.2.2: absolute-form starts with a scheme (RFC 3986 3.1).
ABSOLUTE_FORM: Final = re.compile(rb"[A-Za-z][-A-Za-z0-9+.]*:")


MALFORMED: Final = 0  # what split_fields answers instead of (fields, names)
TOO_MANY: Final = 1


def split_fields_py(buf: bytes, start: int, end: int, max_headers: int
                    ) -> tuple[Headers, Names] | int:
    """The CRLF-ended field lines of ``buf[start:end]``: (fields, lowered names), with OWS
    stripped from each value; TOO_MANY when there are more than ``max_headers`` lines,
    MALFORMED when any line is not ``token ":" OWS value OWS CRLF``. The block must end
    with a CRLF (the parsers cut it before the empty line). proxy/http1/_speedups.c does
    the same in C for the compiled core; tests/proxy/http1/test_speedups.py holds the two
    to the same answers."""
    lines = buf.count(b"\n", start, end)
    if lines > max_headers:
        return TOO_MANY
    fields: Headers = FIELD_LINE.findall(buf, start, end)
    if len(fields) != lines:
        return MALFORMED
    if buf.find(b" \r\n", start, end) >= 0 or buf.find(b"\t\r\n", start, end) >= 0:
        fields = [(name, value.rstrip(b" \t")) for name, value in fields]
    return fields, lower_names(fields)


split_fields: Final[Callable[[bytes, int, int, int], tuple[Headers, Names] | int]] = (
    native.split_fields if native is not None else split_fields_py
)


def parse_fields(
    buf: bytes, start: int, end: int, max_headers: int, bad: int, too_big: int
) -> tuple[Headers, Names]:
    """Split the CRLF-ended field lines in ``buf[start:end]``: (fields, lowered names);
    refuse any malformed line (``bad``) or more than ``max_headers`` (``too_big``)."""
    got = split_fields(buf, start, end, max_headers)
    if isinstance(got, tuple):
        return got
    if got == TOO_MANY:
        raise ProtocolError(too_big, f"more than {max_headers} header fields")
    raise ProtocolError(bad, _diagnose(buf[start:end]))


def name_index_py(names: Names, key: bytes, start: int = 0) -> int:
    """The index of ``key`` in ``names`` from ``start``; -1 when absent. The twin of
    _speedups.name_index, which answers -2 when ``names`` is not a list of bytes."""
    if start <= 0:
        return names.index(key) if key in names else -1
    return next((i for i in range(start, len(names)) if names[i] == key), -1)


_c_name_index: Final[Callable[[Names, bytes, int], int] | None] = (
    native.name_index if native is not None else None
)


def index_of(names: Names, key: bytes, start: int = 0) -> int:
    """Where the lowered name ``key`` is in ``names`` (from ``start``), -1 when absent: the
    request path's `key in names`, without a rich comparison per name in the compiled core."""
    i = _c_name_index(names, key, start) if _c_name_index is not None else -2
    return i if i != -2 else name_index_py(names, key, start)


def request_line_py(buf: bytes, start: int, end: int) -> tuple[bytes, bytes, bytes, int] | None:
    """(method, target, version, where the line ends) of the request-line at ``start``,
    None when it is not one (RFC 9112 3); _speedups.request_line is its C twin."""
    m = REQUEST_LINE.match(buf, start, end)
    if m is None:
        return None
    return m.group(1), m.group(2), m.group(3), m.end()


def status_line_py(buf: bytes, start: int, end: int
                   ) -> tuple[bytes, int, bytes | None, int] | None:
    """(version, status, reason or None, where the line ends) of the status-line at
    ``start``, None when it is not one (RFC 9112 4); _speedups.status_line is its C twin."""
    m = STATUS_LINE.match(buf, start, end)
    if m is None:
        return None
    return m.group(1), int(m.group(2)), m.group(3), m.end()


def block_end_py(buf: bytes, pos: int) -> int:
    """Where the first CRLF CRLF at or after ``pos`` starts, -1 when there is none (the end
    of a head); _speedups.block_end is its C twin (bytes.find parses its arguments at a
    cost of ~800 instructions a call in the compiled core)."""
    return buf.find(b"\r\n\r\n", pos)


def valid_host_py(value: bytes) -> bool:
    """RFC 9110 7.2 Host: uri-host [ ":" port ]; _speedups.valid_host is its C twin."""
    return HOST.fullmatch(value) is not None


request_line: Final[Callable[[bytes, int, int], tuple[bytes, bytes, bytes, int] | None]] = (
    native.request_line if native is not None else request_line_py
)
status_line: Final[Callable[[bytes, int, int], tuple[bytes, int, bytes | None, int] | None]] = (
    native.status_line if native is not None else status_line_py
)
valid_host: Final[Callable[[bytes], bool]] = (
    native.valid_host if native is not None else valid_host_py
)
block_end: Final[Callable[[bytes, int], int]] = (
    native.block_end if native is not None else block_end_py
)


def values_of(fields: Headers, names: list[bytes], key: bytes) -> list[bytes] | None:
    """Every value of the field ``key`` (lower case), None when absent: two scans of the
    lowered ``names`` for the usual zero or one occurrence."""
    i = index_of(names, key)
    if i < 0:
        return None
    if index_of(names, key, i + 1) < 0:
        return [fields[i][1]]
    return [field[1] for field, name in zip(fields, names, strict=True) if name == key]


def body_framing(
    fields: Headers, names: list[bytes], version: bytes, bad: int, unsupported: int
) -> tuple[int | None, bool, list[bytes], bool]:
    """(Content-Length, chunked, Connection tokens, keep-alive) of a request or response
    head (RFC 9112 6.1-6.3, 9.3). Refusals are ``bad`` (400 or 502), an unknown transfer
    coding ``unsupported`` (501 or 502)."""
    chunked = False
    length = None
    te = values_of(fields, names, b"transfer-encoding")
    cl = values_of(fields, names, b"content-length")
    if te is not None:
        if cl is not None:
            # RFC 9112 6.1 allows TE to win, but that is the classic smuggling vector:
            # refused, as Envoy does unless allow_chunked_length is set.
            raise ProtocolError(bad, "both Content-Length and Transfer-Encoding (RFC 9112 6.1)")
        if version == b"1.0":
            raise ProtocolError(bad, "Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1)")
        # For a response RFC 9112 6.3 would read a non-chunked final coding until close;
        # refused instead.
        chunked = is_chunked(te, bad, unsupported)
    elif cl is not None:
        if len(cl) == 1 and cl[0].isdigit() and len(cl[0]) <= 18:
            length = int(cl[0])  # the usual: one plain value (what content_length accepts)
        else:
            length = content_length(cl, bad)  # refused, with the reason
    connection = values_of(fields, names, b"connection")
    if connection is None:
        tokens = []
    elif len(connection) == 1 and b"," not in connection[0]:
        tokens = [connection[0].lower()]  # the usual single token, already OWS-stripped
    else:
        tokens = list_tokens(connection)
    if version == b"1.1":
        keep_alive = b"close" not in tokens
    else:  # RFC 9112 9.3: HTTP/1.0 persists only with "keep-alive".
        keep_alive = b"keep-alive" in tokens and b"close" not in tokens
    return length, chunked, tokens, keep_alive


def _diagnose(block: bytes) -> str:
    """Say which field line of a refused block is wrong and why (slow path: errors only)."""
    for number, line in enumerate(block.split(b"\r\n")[:-1], start=1):
        if FIELD_LINE.fullmatch(line + b"\r\n"):
            continue
        where = f"header line {number} ({line[:40]!r})"
        if b"\n" in line or b"\r" in line:
            return f"bare CR or LF in {where}: lines end with CRLF (RFC 9112 2.2)"
        if line[:1] in (b" ", b"\t"):
            return f"obs-fold in {where}: line folding is refused (RFC 9112 5.2)"
        name, colon, value = line.partition(b":")
        if not colon:
            return f"no colon in {where} (RFC 9112 5)"
        if name != name.rstrip(b" \t"):
            return f"whitespace between field name and colon in {where} (RFC 9112 5.1)"
        if not TOKEN.fullmatch(name):
            return f"invalid character in field name in {where} (RFC 9110 5.1)"
        if b"\x00" in value:
            return f"NUL in field value in {where} (RFC 9110 5.5)"
        return f"invalid character in field value in {where} (RFC 9110 5.5)"
    return "malformed header section (RFC 9112 5)"


def list_tokens(values: list[bytes]) -> list[bytes]:
    """RFC 9110 5.6.1 #list elements of all ``values``, lower-cased, empty elements dropped."""
    out = []
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t")
            if item:
                out.append(item.lower())
    return out


def content_length(values: list[bytes], bad: int) -> int:
    """The single Content-Length; refuse lists and repeats, even of equal values.

    RFC 9110 8.6 lets a recipient either refuse ``5, 5`` or collapse it; we refuse it (what
    Envoy does unless told otherwise), since two hops that choose differently disagree on
    where the message ends.
    """
    if len(values) != 1:
        raise ProtocolError(bad, "more than one Content-Length header (RFC 9110 8.6)")
    value = values[0]
    if not CONTENT_LENGTH.fullmatch(value):
        if b"," in value:
            raise ProtocolError(bad, f"Content-Length is a list: {value[:40]!r} (RFC 9110 8.6)")
        raise ProtocolError(bad, f"Content-Length not 1*DIGIT: {value[:40]!r} (RFC 9110 8.6)")
    return int(value)


def is_chunked(values: list[bytes], bad: int, unsupported: int) -> bool:
    """Check Transfer-Encoding: the only coding we accept is a single, final ``chunked``.

    Always True: anything else raises. RFC 9112 6.3: chunked not final in a request -> 400;
    RFC 9112 6.1: a coding the server does not implement -> 501 (``unsupported``).
    """
    codings = list_tokens(values)
    if not codings or codings[-1] != b"chunked":
        shown = b", ".join(codings)[:60]
        raise ProtocolError(bad, f"Transfer-Encoding must end in chunked: {shown!r} (RFC 9112 6.3)")
    if codings.count(b"chunked") > 1:
        raise ProtocolError(bad, "chunked applied more than once (RFC 9112 7)")
    if len(codings) > 1:
        for coding in codings[:-1]:
            if not TOKEN.fullmatch(coding):
                raise ProtocolError(bad, f"invalid transfer-coding {coding[:40]!r} (RFC 9112 7)")
        raise ProtocolError(
            unsupported, f"transfer-coding {codings[0]!r} is not supported (RFC 9112 6.1)"
        )
    return True
