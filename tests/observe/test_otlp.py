"""proxy/tracing/otlp.py: the OTLP JSON shape and the bounded queue."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

from proxy.tracing.otlp import DROPPED_EXPORT, DROPPED_FULL, OtlpExporter, encode
from proxy.tracing.span import SpanRecord
from tests.observe.receiver import Receiver, dead_port, decode_span


def _span(i: int = 1) -> SpanRecord:
    return SpanRecord(
        trace_id=0xABC,
        span_id=i,
        parent_id=7,
        kind=3,
        name="GET orders",
        start_ns=1_700_000_000_000_000_000,
        end_ns=1_700_000_000_001_000_000,
        attributes=(("http.response.status_code", 200), ("ok", True), ("s", "x"), ("f", 1.5)),
        events=((1_700_000_000_000_500_000, "retry", (("http.request.resend_count", 1),)),),
        error=False,
    )


def test_encoding_follows_the_otlp_json_rules() -> None:
    body = json.loads(encode((("service.name", "frontend"),), [_span()]))
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == "0" * 29 + "abc" and span["parentSpanId"] == "0000000000000007"
    assert span["startTimeUnixNano"] == "1700000000000000000"  # int64 as a string
    values = {a["key"]: a["value"] for a in span["attributes"]}
    assert values["http.response.status_code"] == {"intValue": "200"}
    assert values["ok"] == {"boolValue": True} and values["f"] == {"doubleValue": 1.5}
    assert decode_span(span)["events"][0]["attributes"] == {"http.request.resend_count": 1}


def test_a_full_queue_drops_and_counts() -> None:
    counters: defaultdict[str, float] = defaultdict(float)
    ex = OtlpExporter("http://127.0.0.1:1", (), counters, max_queue=2048)
    for i in range(3000):
        ex.offer(_span(i + 1))
    assert counters[DROPPED_FULL] == 952
    assert len(ex.take()) == 512  # one batch at most


async def test_batches_reach_a_receiver_and_a_dead_one_is_counted() -> None:
    counters: defaultdict[str, float] = defaultdict(float)
    with Receiver() as rx:
        ex = OtlpExporter(rx.url, (("service.name", "t"),), counters, flush_s=0.05)
        task = asyncio.get_running_loop().create_task(ex.run())
        for i in range(600):
            ex.offer(_span(i + 1))
        for _ in range(600):  # up to 30 s: a bound for a loaded machine, not a timing
            if len(rx.spans) >= 600:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        assert len(rx.spans) == 600 and rx.errors == []
        assert counters["meshctl_proxy_spans_exported_total"] == 600
    dead = OtlpExporter(f"http://127.0.0.1:{dead_port()}", (), counters, flush_s=0.05)
    task = asyncio.get_running_loop().create_task(dead.run())
    dead.offer(_span())
    for _ in range(600):
        if counters[DROPPED_EXPORT]:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    assert counters[DROPPED_EXPORT] == 1
