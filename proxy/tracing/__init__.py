"""Distributed tracing: trace-context propagation, one span per proxy hop, OTLP export.

Where it sits in the request path: each stack asks the `Tracer` for a `Hop` as soon as a
request head is parsed (outbound: a CLIENT span; inbound: a SERVER span), adds the hop's
pre-rendered headers to what goes upstream, and hands the hop back to `Proxy.record` when
the request ends. Only a sampled hop becomes a span; an unsampled one costs the header
parse and render only.

    context.py     sans-IO: W3C traceparent/tracestate and B3 (single and multi) in and out
    span.py        the Tracer (sampling, ids) and the Hop (a span being recorded)
    attributes.py  a finished request as span attributes (HTTP semantic conventions)
    otlp.py        OTLP/HTTP JSON encoding and the background batch exporter
"""

from proxy.tracing.context import (
    TRACE_HEADERS,
    Parent,
    extract,
    render,
)
from proxy.tracing.span import CLIENT, SERVER, Hop, Tracer

__all__ = [
    "CLIENT",
    "SERVER",
    "TRACE_HEADERS",
    "Hop",
    "Parent",
    "Tracer",
    "extract",
    "render",
]
