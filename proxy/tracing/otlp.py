"""OTLP/HTTP JSON export: spans batched in a bounded queue, posted by a background task.

The request path only calls `offer` (a deque append, or a counted drop when the queue is
full); encoding and the POST happen in `run`, one export at a time, each bounded by a
short timeout. A collector that is slow, refuses or is gone costs spans (counted in
`meshctl_proxy_spans_dropped_total`), never a request.

Encoding follows the OTLP specification's JSON Protobuf encoding
(opentelemetry-proto docs/specification.md): field names in lowerCamelCase, trace and span
ids as hex strings (not base64), enums as integers, 64-bit integers (the nanosecond
timestamps, intValue) as decimal strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import MutableMapping
from typing import Any

from proxy.httpio import Client
from proxy.tracing.span import Attr, SpanRecord

log = logging.getLogger("meshctl.proxy.tracing")
MAX_BATCH = 512
MAX_QUEUE = 2048
FLUSH_S = 1.0
TIMEOUT_S = 2.0
SCOPE = {"name": "meshctl.proxy", "version": "0.1.0"}
DROPPED_FULL = 'meshctl_proxy_spans_dropped_total{reason="queue_full"}'
DROPPED_EXPORT = 'meshctl_proxy_spans_dropped_total{reason="export_failed"}'
EXPORTED = "meshctl_proxy_spans_exported_total"


def any_value(v: Any) -> dict[str, Any]:
    """An OTLP AnyValue: bool before int (a bool is an int in Python)."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": str(v)}


def attributes(attrs: tuple[Attr, ...] | list[Attr]) -> list[dict[str, Any]]:
    return [{"key": k, "value": any_value(v)} for k, v in attrs]


def encode_span(s: SpanRecord) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": f"{s.trace_id:032x}",
        "spanId": f"{s.span_id:016x}",
        "name": s.name,
        "kind": s.kind,
        "startTimeUnixNano": str(s.start_ns),
        "endTimeUnixNano": str(s.end_ns),
        "attributes": attributes(s.attributes),
        # STATUS_CODE_ERROR = 2; unset (0) otherwise, as the semantic conventions ask.
        "status": {"code": 2} if s.error else {},
    }
    if s.parent_id:
        span["parentSpanId"] = f"{s.parent_id:016x}"
    if s.events:
        span["events"] = [
            {"timeUnixNano": str(t), "name": name, "attributes": attributes(a)}
            for t, name, a in s.events
        ]
    return span


def encode(resource: tuple[Attr, ...], spans: list[SpanRecord]) -> bytes:
    """An ExportTraceServiceRequest with one resource and one scope."""
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": attributes(resource)},
                "scopeSpans": [{"scope": SCOPE, "spans": [encode_span(s) for s in spans]}],
            }
        ]
    }
    return json.dumps(body, separators=(",", ":")).encode()


class OtlpExporter:
    """Bounded queue + background batch POSTs to `<endpoint>` (e.g. http://host:4318/v1/traces)."""

    def __init__(
        self,
        endpoint: str,
        resource: tuple[Attr, ...],
        counters: MutableMapping[str, float],
        *,
        max_queue: int = MAX_QUEUE,
        max_batch: int = MAX_BATCH,
        flush_s: float = FLUSH_S,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.endpoint = _traces_url(endpoint)
        self.resource = resource
        self.counters = counters
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.flush_s = flush_s
        self.timeout_s = timeout_s
        self._queue: deque[SpanRecord] = deque()
        self._full: asyncio.Event | None = None
        self._client: Client | None = None  # one kept-alive connection to the collector

    def offer(self, span: SpanRecord) -> None:
        """On the request path: O(1), never waits. A full queue drops the span."""
        q = self._queue
        if len(q) >= self.max_queue:
            self.counters[DROPPED_FULL] += 1
            return
        q.append(span)
        if len(q) >= self.max_batch and self._full is not None:
            self._full.set()

    def take(self) -> list[SpanRecord]:
        q, n = self._queue, min(len(self._queue), self.max_batch)
        return [q.popleft() for _ in range(n)]

    async def run(self) -> None:
        """Flush every `flush_s`, or sooner when a full batch is waiting; until cancelled."""
        self._full = asyncio.Event()
        try:
            while True:
                # asyncio.timeout, not wait_for: 3.11's wait_for can drop the stop's cancel.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_s):
                        await self._full.wait()
                self._full.clear()
                while self._queue:
                    await self._export(self.take())
        finally:
            # On stop: one last bounded attempt for what is queued.
            if self._queue:
                with contextlib.suppress(Exception):
                    await self._export(self.take())
            if self._client is not None:
                await self._client.close()

    async def _export(self, batch: list[SpanRecord]) -> None:
        body = encode(self.resource, batch)
        try:
            if self._client is None:  # a bad URL fails here, as every export (counted)
                self._client = Client(self.endpoint, connect_timeout=self.timeout_s)
            resp = await self._client.request(
                "POST",
                "",
                body=body,
                headers={"Content-Type": "application/json"},
                timeout=self.timeout_s,
            )
            ok = 200 <= resp.status < 300
        except (OSError, TimeoutError, ValueError) as exc:
            log.debug("OTLP export to %s failed: %r", self.endpoint, exc)
            ok = False
        if ok:
            self.counters[EXPORTED] += len(batch)
        else:
            self.counters[DROPPED_EXPORT] += len(batch)
            self.counters["meshctl_proxy_span_export_failures_total"] += 1


def _traces_url(endpoint: str) -> str:
    """A base URL gets the signal path appended (OTEL_EXPORTER_OTLP_ENDPOINT's rule)."""
    e = endpoint.rstrip("/")
    return e if e.endswith("/v1/traces") else e + "/v1/traces"
