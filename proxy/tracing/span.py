"""The Tracer: a sampling decision and fresh ids per hop; the Hop: one span being recorded.

Per request the stacks call `Tracer.start` once. Unsampled (the default: sampling off),
the hop only carries ids and the rendered headers for the next hop. Sampled, it also
collects events (retries) and, at the end, `Tracer.finish` turns it into a span record
for the exporter: attributes are built then, off the request path's critical section,
and encoded to JSON in the exporter's background task.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from proxy.http1.grammar import native
from proxy.http1.render import hex_id
from proxy.tracing.context import Headers, Parent, extract, render

# OTLP Span.SpanKind values (opentelemetry-proto trace.proto).
SERVER: Final = 2
CLIENT: Final = 3

Attr = tuple[str, Any]

_c_random_hex: Final[Callable[[int], bytes] | None] = (
    native.random_hex if native is not None else None
)


class Hop:
    """One request's place in its trace, as this proxy forwards it: the ids in the lower-case
    hex they travel as (trace 32 digits, spans 16; `parent` b"" when this hop starts the
    trace), as ints through the properties (for a span recorded)."""

    __slots__ = ("events", "headers", "kind", "parent", "recording", "span", "trace")

    def __init__(
        self,
        trace: bytes,
        span: bytes,
        parent: bytes,
        recording: bool,
        kind: int,
        headers: Headers,
    ) -> None:
        self.trace = trace
        self.span = span
        self.parent = parent
        self.recording = recording  # sampled, and a collector is configured
        self.kind = kind
        self.headers = headers  # for the next hop (our span is its parent): headers_after
        self.events: list[tuple[int, str, tuple[Attr, ...]]] | None = None

    def event(self, name: str, *attrs: Attr) -> None:
        """A span event (a retry, a refused retry), stamped now; only when recording."""
        if not self.recording:
            return
        if self.events is None:
            self.events = []
        self.events.append((time.time_ns(), name, attrs))

    def headers_after(self, first: Headers) -> Headers:
        """The headers for the next hop with `first` in front: this hop's own list (made
        for this request by Tracer.start), handed over to be extended, not copied."""
        headers = self.headers
        if first:
            headers[:0] = first
        return headers

    @property
    def trace_id(self) -> int:
        return int(self.trace, 16)

    @property
    def span_id(self) -> int:
        return int(self.span, 16)

    @property
    def parent_id(self) -> int:
        return int(self.parent, 16) if self.parent else 0

    @property
    def trace_hex(self) -> str:
        return self.trace.decode()


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """A finished span, ready for the exporter (OTLP field names are applied in otlp.py)."""

    trace_id: int
    span_id: int
    parent_id: int
    kind: int
    name: str
    start_ns: int
    end_ns: int
    attributes: tuple[Attr, ...]
    events: tuple[tuple[int, str, tuple[Attr, ...]], ...]
    error: bool


class Tracer:
    """Sampling (a percentage for new traces; a caller's decision is kept) and id generation.

    Ids need uniqueness, not secrecy. With the compiled core they come as hex straight from
    _speedups.random_hex (xoshiro256** seeded from the OS, reseeded in a forked child: no
    Python int per id); otherwise, or when a `rng` is given (tests), from a Mersenne
    Twister seeded from the OS (`getrandbits` is several times cheaper than `secrets`).
    """

    def __init__(
        self,
        sampling_percent: float = 0.0,
        sink: Callable[[SpanRecord], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= sampling_percent <= 100.0:
            raise ValueError(f"trace sampling must be within 0..100 %, got {sampling_percent}")
        self.sampling = sampling_percent / 100.0
        self.sink = sink  # None: spans are never recorded (no collector configured)
        self._rng = rng or random.Random()
        self._bits = self._rng.getrandbits  # bound once: not a method object per request
        self._random = self._rng.random
        self._hex: Callable[[int], bytes] | None = _c_random_hex if rng is None else None

    def start(self, headers: Headers, kind: int, names: list[bytes] | None = None) -> Hop:
        """A new span id under the incoming context, or a new trace when there is none.
        ``names``: the request's lowered header names, when the parser gave them."""
        bits, fresh = self._bits, self._hex
        parent: Parent | None = extract(headers, names)
        if parent is None or not parent.trace:
            trace = fresh(32) if fresh is not None else hex_id(bits(128) or 1, 32)
            parent_span = b""
            formats = parent.formats if parent is not None else 0
            decided = parent.sampled if parent is not None else None
        else:
            trace, parent_span, formats, decided = (
                parent.trace,
                parent.span,
                parent.formats,
                parent.sampled,
            )
        if decided is None:
            decided = self.sampling > 0.0 and self._random() < self.sampling
        span = fresh(16) if fresh is not None else hex_id(bits(64) or 1, 16)
        headers = render(trace, span, decided, formats)
        return Hop(trace, span, parent_span, decided and self.sink is not None, kind, headers)

    def finish(
        self,
        hop: Hop,
        name: str,
        duration_ms: float,
        attributes: tuple[Attr, ...],
        error: bool,
    ) -> None:
        sink = self.sink
        if sink is None or not hop.recording:
            return
        end = time.time_ns()
        sink(
            SpanRecord(
                trace_id=hop.trace_id,
                span_id=hop.span_id,
                parent_id=hop.parent_id,
                kind=hop.kind,
                name=name,
                start_ns=end - int(duration_ms * 1e6),
                end_ns=end,
                attributes=attributes,
                events=tuple(hop.events or ()),
                error=error,
            )
        )
