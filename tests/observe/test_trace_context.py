"""proxy/tracing/context.py and span.py: parsing and rendering trace context, sampling."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from proxy.tracing import CLIENT, SERVER, Tracer, extract, render
from proxy.tracing.context import B3_MULTI, B3_SINGLE, W3C

TP = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_no_context_is_none() -> None:
    assert extract([(b"Host", b"x"), (b"Accept", b"*/*")]) is None


def test_w3c_parsed_case_insensitive_names() -> None:
    p = extract([(b"TraceParent", TP)])
    assert p is not None
    assert p.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert p.span_id == 0x00F067AA0BA902B7 and p.sampled is True and p.formats == W3C


def test_invalid_w3c_is_ignored() -> None:
    for bad in (
        TP.upper(),  # upper-case hex is invalid
        b"ff" + TP[2:],  # version ff
        TP.replace(b"4bf92f3577b34da6a3ce929d0e0e4736", b"0" * 32),  # zero trace id
        TP[:-1],
        TP + b"-extra",  # version 00 has no extra fields
    ):
        p = extract([(b"traceparent", bad)])
        assert p is not None and p.trace_id == 0, bad


def test_future_version_may_append_fields() -> None:
    p = extract([(b"traceparent", b"01" + TP[2:] + b"-what-ever")])
    assert p is not None and p.trace_id != 0


def test_b3_single_and_bare_decision() -> None:
    p = extract([(b"b3", b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90")])
    assert p is not None and p.sampled is True and p.formats == B3_SINGLE
    p = extract([(b"b3", b"0")])
    assert p is not None and p.trace_id == 0 and p.sampled is False


def test_b3_multi_with_debug_flag() -> None:
    p = extract(
        [
            (b"X-B3-TraceId", b"a3ce929d0e0e4736"),
            (b"X-B3-SpanId", b"00f067aa0ba902b7"),
            (b"X-B3-Flags", b"1"),
        ]
    )
    assert p is not None and p.trace_id == 0xA3CE929D0E0E4736 and p.sampled is True
    assert p.formats == B3_MULTI


def test_w3c_wins_over_b3() -> None:
    p = extract([(b"b3", b"a3ce929d0e0e4736-00f067aa0ba902b7-0"), (b"traceparent", TP)])
    assert p is not None and p.sampled is True and p.formats == W3C | B3_SINGLE


@given(
    st.integers(1, (1 << 128) - 1),
    st.integers(1, (1 << 64) - 1),
    st.booleans(),
    st.sampled_from([W3C, W3C | B3_SINGLE, W3C | B3_MULTI, W3C | B3_SINGLE | B3_MULTI]),
)
def test_render_then_extract_round_trips(tid: int, sid: int, sampled: bool, fmts: int) -> None:
    headers = render(b"%032x" % tid, b"%016x" % sid, sampled, fmts)
    p = extract(headers)
    assert p is not None and (p.trace_id, p.span_id, p.sampled) == (tid, sid, sampled)
    assert p.formats == fmts
    # Each B3 form on its own parses to the same context.
    for name in (b"b3", b"x-b3-traceid"):
        only = [h for h in headers if h[0] != b"traceparent"]
        if any(n == name for n, _ in only):
            q = extract(only)
            assert q is not None and (q.trace_id, q.span_id, q.sampled) == (tid, sid, sampled)


@given(st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=80)), max_size=8))
def test_extract_never_raises(headers: list[tuple[bytes, bytes]]) -> None:
    extract(headers)


def test_tracer_new_trace_and_child_hop() -> None:
    got: list[object] = []
    tracer = Tracer(100.0, got.append, random.Random(1))
    client = tracer.start([], CLIENT)
    assert client.parent_id == 0 and client.recording
    server = tracer.start(client.headers, SERVER)
    assert server.trace_id == client.trace_id and server.parent_id == client.span_id
    assert server.span_id != client.span_id
    # The ids travel as hex and are copied, not converted: the trace as 32 digits.
    assert server.trace == client.trace and len(server.trace) == 32 and len(server.span) == 16
    assert dict(server.headers)[b"traceparent"] == b"00-%s-%s-01" % (server.trace, server.span)
    assert server.trace_hex == f"{server.trace_id:032x}"
    server.event("retry", ("n", 1))
    tracer.finish(server, "GET x", 1.5, (("a", 1),), False)
    assert len(got) == 1


def test_tracer_keeps_a_callers_decision_and_needs_a_sink_to_record() -> None:
    never = Tracer(0.0, lambda s: None)
    assert never.start([(b"traceparent", TP)], SERVER).recording  # caller sampled it
    assert not never.start([], SERVER).recording
    unsunk = Tracer(100.0, None)
    hop = unsunk.start([], SERVER)
    assert not hop.recording and hop.headers[0][1].endswith(b"-01")  # decision propagates


def test_extract_with_the_parsers_names_agrees_with_extract_without() -> None:
    from proxy.http1 import Request, RequestParser

    heads = [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nTraceParent: " + TP + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7\r\n"
        b"X-B3-SpanId: e457b5a2e4d86bd1\r\nX-B3-Sampled: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nb3: 0\r\ntraceparent: " + TP + b"\r\n\r\n",
    ]
    for head in heads:
        req = RequestParser().feed(head)[0]
        assert isinstance(req, Request) and req.names is not None
        assert extract(req.headers, req.names) == extract(req.headers)
    assert extract([(b"Host", b"a")], [b"host"]) is None


def test_headers_after_puts_additions_in_front_of_the_hops_own_list() -> None:
    hop = Tracer(0.0, None, random.Random(2)).start([], CLIENT)
    own = hop.headers
    assert [n for n, _ in own] == [b"traceparent"]
    got = hop.headers_after([(b"x-route", b"1")])
    assert got is own  # handed over, not copied
    assert [n for n, _ in got] == [b"x-route", b"traceparent"]
    empty = Tracer(0.0, None).start([], CLIENT)
    assert empty.headers_after([]) is empty.headers and len(empty.headers) == 1
