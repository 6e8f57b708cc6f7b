"""Trace context on the wire: W3C Trace Context and Zipkin B3, parsed and rendered as bytes.

Sans-IO and allocation-light: `extract` makes one pass over the request headers and returns
None for the common case of a request without context; `render` formats the headers for
the next hop. Ids stay the lower-case hex bytes they travel as (a trace id always 32
digits, a span id 16): a proxy copies them from one header into the next, and turns them
into ints only for a span it records. Formats:

- W3C Trace Context (w3.org/TR/trace-context): `traceparent: 00-<32 hex>-<16 hex>-<2 hex>`,
  lower-case hex, all-zero ids invalid, version ff invalid, a later version may append
  fields after a `-`. `tracestate` is vendor data: a proxy that adds no entry of its own
  passes it on untouched, so it is never stripped here.
- B3 single (openzipkin/b3-propagation): `b3: {traceid}-{spanid}[-{sampled}[-{parentid}]]`
  or a bare sampling decision (`0`, `1`, `d`); trace ids of 16 or 32 hex.
- B3 multi: `x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled` (`1`/`0`,
  legacy `true`/`false`), `x-b3-flags: 1` (debug, implies sampled).

When several formats arrive, W3C wins, then B3 single, then multi (Envoy's order). The next
hop receives `traceparent` always, plus each B3 form that arrived, so an app that only
reads B3 keeps working.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from proxy.http1.grammar import native

W3C: Final = 1
B3_SINGLE: Final = 2
B3_MULTI: Final = 4

_B3_MULTI_NAMES = (
    b"x-b3-traceid",
    b"x-b3-spanid",
    b"x-b3-parentspanid",
    b"x-b3-sampled",
    b"x-b3-flags",
)
# Replaced on every hop (the parent id changes); tracestate and baggage pass through.
TRACE_HEADERS: Final = frozenset((b"traceparent", b"b3", *_B3_MULTI_NAMES))
_HEX: Final = frozenset(b"0123456789abcdef")

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True, init=False)
class Parent:
    """The context a request arrived with: the trace id as 32 lower-case hex digits and the
    caller's span id as 16, both b"" when there is none (only a sampling decision).

    One per request that carries a context: the written __init__ compiles to C (see
    proxy/http1/events.py)."""

    trace: bytes
    span: bytes
    sampled: bool | None  # None: the caller left the decision to us
    formats: int  # bit set of W3C | B3_SINGLE | B3_MULTI seen on the request

    def __init__(self, trace: bytes, span: bytes, sampled: bool | None, formats: int) -> None:
        self.trace = trace
        self.span = span
        self.sampled = sampled
        self.formats = formats

    @property
    def trace_id(self) -> int:
        return int(self.trace, 16) if self.trace else 0

    @property
    def span_id(self) -> int:
        return int(self.span, 16) if self.span else 0


def _hex(raw: bytes, sizes: tuple[int, ...], width: int) -> bytes:
    """A hex id of one of `sizes` characters, in lower case and zero-padded to `width`;
    b"" when invalid or all zeros."""
    if len(raw) not in sizes:
        return b""
    raw = raw.lower()  # B3 readers are lenient about case; W3C is checked before this
    if not _HEX.issuperset(raw) or not raw.strip(b"0"):
        return b""
    return raw.rjust(width, b"0")


def _sampled_b3(raw: bytes | None) -> bool | None:
    if raw is None:
        return None
    v = raw.strip().lower()
    if v in (b"1", b"d", b"true"):
        return True
    if v in (b"0", b"false"):
        return False
    return None


_TRACEPARENT: Final = re.compile(
    rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?"
)


def parse_traceparent_py(v: bytes) -> tuple[bytes, bytes, bool] | None:
    """(trace id, parent id, sampled) of a W3C traceparent value, the ids as the hex digits
    it carries (32 and 16), None when invalid; _speedups.parse_traceparent is its C twin."""
    m = _TRACEPARENT.fullmatch(v.strip())  # upper-case hex is invalid in W3C
    if m is None:
        return None
    version, tid_raw, sid_raw, flags_raw, rest = m.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return None  # ff is forbidden; version 00 has exactly four fields
    if int(tid_raw, 16) == 0 or int(sid_raw, 16) == 0:
        return None
    return tid_raw, sid_raw, bool(int(flags_raw, 16) & 1)


_parse_traceparent: Final[Callable[[bytes], tuple[bytes, bytes, bool] | None]] = (
    native.parse_traceparent if native is not None else parse_traceparent_py
)


def _parse_b3_single(v: bytes) -> tuple[bytes, bytes, bool | None] | None:
    parts = v.strip().split(b"-")
    if len(parts) == 1:  # a bare sampling decision
        s = _sampled_b3(parts[0])
        return None if s is None else (b"", b"", s)
    if len(parts) > 4:
        return None
    tid, sid = _hex(parts[0], (16, 32), 32), _hex(parts[1], (16,), 16)
    if not tid or not sid:
        return None
    return tid, sid, _sampled_b3(parts[2]) if len(parts) > 2 else None


def trace_names_py(names: list[bytes]) -> int:
    """Where the trace context is among lowered ``names``, as one int: (index of the first
    `traceparent` + 1) * 2 + (1 if any B3 name is there); 0 when none of TRACE_HEADERS is.
    _speedups.trace_names is its C twin (-2 there: not a list of bytes, ask this)."""
    at = -1
    other = 0
    for i in range(len(names)):
        n = names[i]
        if n in TRACE_HEADERS:
            if n != b"traceparent":
                other = 1
            elif at < 0:
                at = i
    return (at + 1) * 2 + other


_c_trace_names: Final[Callable[[list[bytes]], int] | None] = (
    native.trace_names if native is not None else None
)


def extract(headers: Headers, names: list[bytes] | None = None) -> Parent | None:
    """The incoming context, or None when the request carries none (one pass, no parse).
    ``names``: the lowered names as the parser gives them, to answer None in one pass."""
    if names is None:
        found = [(n, v) for n, v in ((n.lower(), v) for n, v in headers) if n in TRACE_HEADERS]
    else:
        # One pass over the names (in C: length and byte compares, no set lookups).
        c = _c_trace_names
        where = c(names) if c is not None else -2
        if where == -2:
            where = trace_names_py(names)
        if where == 0:
            return None
        at, other = (where >> 1) - 1, where & 1
        if not other:
            # Only W3C (what the proxies send each other): its first value.
            got = _parse_traceparent(headers[at][1])
            if got is None:
                return Parent(b"", b"", None, W3C)
            return Parent(got[0], got[1], got[2], W3C)
        found = [(n, headers[i][1]) for i, n in enumerate(names) if n in TRACE_HEADERS]
    tp = b3 = None
    multi: dict[bytes, bytes] | None = None
    for n, value in found:
        if n == b"traceparent":
            tp = value if tp is None else tp
        elif n == b"b3":
            b3 = value if b3 is None else b3
        else:
            if multi is None:
                multi = {}
            multi.setdefault(n, value)
    if tp is None and b3 is None and multi is None:
        return None
    formats = (W3C if tp is not None else 0) | (B3_SINGLE if b3 is not None else 0)
    formats |= B3_MULTI if multi is not None else 0
    if tp is not None:
        got = _parse_traceparent(tp)
        if got is not None:
            return Parent(got[0], got[1], got[2], formats)
    if b3 is not None:
        got_b3 = _parse_b3_single(b3)
        if got_b3 is not None:
            return Parent(got_b3[0], got_b3[1], got_b3[2], formats)
    if multi is not None:
        tid = _hex(multi.get(b"x-b3-traceid", b""), (16, 32), 32)
        sid = _hex(multi.get(b"x-b3-spanid", b""), (16,), 16)
        sampled = True if multi.get(b"x-b3-flags", b"").strip() == b"1" else None
        if sampled is None:
            sampled = _sampled_b3(multi.get(b"x-b3-sampled"))
        if tid and sid:
            return Parent(tid, sid, sampled, formats)
        if sampled is not None:
            return Parent(b"", b"", sampled, formats)
    return Parent(b"", b"", None, formats)


def traceparent_py(trace: bytes, span: bytes, sampled: bool) -> bytes:
    """The W3C traceparent value (version 00) of a trace id and a span id in hex (32 and 16
    digits); _speedups.traceparent is its C twin."""
    return b"00-" + trace + b"-" + span + (b"-01" if sampled else b"-00")


_c_traceparent: Final[Callable[[bytes, bytes, bool], bytes | None] | None] = (
    native.traceparent if native is not None else None
)
_HALF_ZERO: Final = b"0" * 16


def render(trace: bytes, span: bytes, sampled: bool, formats: int) -> Headers:
    """Headers for the next hop: `span` (16 hex digits) becomes the callee's parent; `trace`
    is 32 hex digits."""
    tp = _c_traceparent(trace, span, sampled) if _c_traceparent is not None else None
    out = [(b"traceparent", tp if tp is not None else traceparent_py(trace, span, sampled))]
    if formats & (B3_SINGLE | B3_MULTI):
        # B3 writes a 64-bit trace id in 16 digits (what a 16-digit B3 id arrived as).
        tid = trace[16:] if trace.startswith(_HALF_ZERO) else trace
        sid = span
        s = b"1" if sampled else b"0"
        if formats & B3_SINGLE:
            out.append((b"b3", b"%s-%s-%s" % (tid, sid, s)))
        if formats & B3_MULTI:
            out += [(b"x-b3-traceid", tid), (b"x-b3-spanid", sid), (b"x-b3-sampled", s)]
    return out
