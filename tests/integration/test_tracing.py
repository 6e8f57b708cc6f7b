"""Tracing across two hops: client -> proxy (frontend, CLIENT span) -> mTLS -> proxy (orders,
SERVER span) -> orders app, with a real OTLP/HTTP JSON receiver decoding what arrives."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.example import CONFIG
from tests.integration.harness import Mesh, free_port, http_get, wait_until
from tests.observe.receiver import Receiver

pytestmark = pytest.mark.slow

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SAMPLED = {"traceparent": f"00-{TRACE}-{PARENT}-01"}
DROPPED_EXPORT = 'meshctl_proxy_spans_dropped_total{reason="export_failed"}'


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    m = Mesh(tmp_path, CONFIG)
    only_v1(m)
    m.start_registry()
    yield m
    m.close()


def only_v1(mesh: Mesh) -> None:
    """The example routes 10 % of orders to v2; these tests run v1 only."""
    vs = mesh.config / "orders.yaml"
    v2 = (
        "        - destination:\n            host: orders\n"
        "            subset: v2\n          weight: 10\n"
    )
    text = vs.read_text()
    assert v2 in text
    vs.write_text(text.replace(v2, "").replace("weight: 90", "weight: 100"))


def _two_hop(mesh: Mesh, **env: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    mesh.env.update(env)
    _, orders_app = mesh.app("orders", "v1")
    orders = mesh.proxy("orders", "v1", app_port=orders_app)
    local = free_port()
    front = mesh.proxy("frontend", "v1", upstreams={"orders:8080": local})
    wait_until(lambda: http_get(f"http://127.0.0.1:{local}/")[0] == 200, what="route")
    return local, front, orders


def _echo(local: int, headers: dict[str, str] | None = None) -> dict[str, str]:
    status, body, _ = http_get(f"http://127.0.0.1:{local}/echo", headers=headers)
    assert status == 200
    return {k.lower(): v for k, v in json.loads(body)["headers"].items()}


def _metric(port: int, name: str) -> float:
    text = http_get(f"http://127.0.0.1:{port}/metrics")[1].decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_new_trace_gets_a_client_and_a_server_span_linked_parent_to_child(mesh: Mesh) -> None:
    with Receiver() as rx:
        local, _, _ = _two_hop(mesh, MESH_TRACE_SAMPLING="100", MESH_OTLP_ENDPOINT=rx.url)
        got = _echo(local, {"x-request-id": "rid-1"})
        m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", got["traceparent"])
        assert m, got["traceparent"]
        trace_id, app_parent = m.groups()
        spans = wait_until(lambda: len(rx.by_trace(trace_id)) >= 2 and rx.by_trace(trace_id),
                           what="two spans at the collector")  # fmt: skip
        assert rx.errors == []
        kinds = {s["kind"]: s for s in spans}
        client, server = kinds[3], kinds[2]  # SPAN_KIND_CLIENT, SPAN_KIND_SERVER
        assert "parentSpanId" not in client  # the root: the request came without context
        assert server["parentSpanId"] == client["spanId"]
        assert app_parent == server["spanId"]  # the app's own spans would hang below ours
        assert client["resource"]["service.name"] == "frontend"
        assert server["resource"]["service.name"] == "orders"
        for span in (client, server):
            a = span["attributes"]
            assert a["http.request.method"] == "GET"
            assert a["url.path"] == "/echo"
            assert a["http.response.status_code"] == 200
            assert a["network.protocol.version"] == "1.1"
            assert a["meshctl.response_flags"] == "-"
            assert a["guid:x-request-id"] == "rid-1"
            assert span["status"] == {}
        assert client["attributes"]["meshctl.peer.spiffe_id"] == (
            "spiffe://shop.local/ns/default/sa/orders"
        )
        assert server["attributes"]["meshctl.peer.spiffe_id"] == (
            "spiffe://shop.local/ns/default/sa/frontend"
        )
        assert client["attributes"]["server.address"] == "127.0.0.1"


def test_incoming_w3c_context_keeps_its_trace_and_sampling_decision(mesh: Mesh) -> None:
    with Receiver() as rx:
        # Sampling 0 %: the caller's sampled flag decides (parent-based sampling).
        local, _, _ = _two_hop(mesh, MESH_TRACE_SAMPLING="0", MESH_OTLP_ENDPOINT=rx.url)
        got = _echo(local, {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "a=1,b=2"})
        tid, sid, flags = got["traceparent"].split("-")[1:]
        assert tid == TRACE and sid != PARENT and flags == "01"
        assert got["tracestate"] == "a=1,b=2"  # vendor data passes untouched
        spans = wait_until(lambda: len(rx.by_trace(TRACE)) >= 2 and rx.by_trace(TRACE),
                           what="spans")  # fmt: skip
        client = next(s for s in spans if s["kind"] == 3)
        server = next(s for s in spans if s["kind"] == 2)
        assert client["parentSpanId"] == PARENT
        assert server["parentSpanId"] == client["spanId"]
        assert sid == server["spanId"]
        # An unsampled caller: the context still propagates, no span is recorded.
        other = "0af7651916cd43dd8448eb211c80319c"
        got = _echo(local, {"traceparent": f"00-{other}-b7ad6b7169203331-00"})
        assert got["traceparent"].startswith(f"00-{other}-") and got["traceparent"][-2:] == "00"
        _echo(local)  # and a request without context is not sampled at 0 %
        http_get(
            f"http://127.0.0.1:{local}/echo", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"}
        )
        wait_until(lambda: len(rx.by_trace(TRACE)) >= 4, what="the second sampled pair")
        assert rx.by_trace(other) == []
        assert {s["traceId"] for s in rx.spans} == {TRACE}


def test_retries_are_span_events(mesh: Mesh) -> None:
    with Receiver() as rx:
        local, _, _ = _two_hop(mesh, MESH_TRACE_SAMPLING="100", MESH_OTLP_ENDPOINT=rx.url)
        # The example route retries 3 times on 5xx; the app answers 503 every time.
        status, _, _ = http_get(
            f"http://127.0.0.1:{local}/status/503",
            headers={"traceparent": f"00-{TRACE}-{PARENT}-01"},
        )
        assert status == 503
        # All 4 attempts reach the app: the only host is never ejected (the example's
        # maxEjectionPercent 50: (1 + 1) / 1 hosts would pass it, Envoy's rule), and with no
        # other host the retries go back to it (previous_hosts only avoids a host when
        # another one is left).
        spans = wait_until(lambda: len(rx.by_trace(TRACE)) >= 5 and rx.by_trace(TRACE),
                           what="client span and 4 server spans")  # fmt: skip
        client = next(s for s in spans if s["kind"] == 3)
        servers = [s for s in spans if s["kind"] == 2]
        assert len(servers) == 4  # one per attempt, each our child
        assert {s["parentSpanId"] for s in servers} == {client["spanId"]}
        retries = [e for e in client["events"] if e["name"] == "retry"]
        assert [e["attributes"]["http.request.resend_count"] for e in retries] == [1, 2, 3]
        assert client["attributes"]["http.request.resend_count"] == 3
        assert client["status"] == {"code": 2}
        assert client["attributes"]["http.response.status_code"] == 503


def test_b3_single_and_multi_are_propagated_in_the_form_they_came(mesh: Mesh) -> None:
    local, _, _ = _two_hop(mesh)  # no collector: propagation only
    b3_trace = "80f198ee56343ba864fe8b2a57d3eff7"
    got = _echo(
        local,
        {
            "x-b3-traceid": b3_trace,
            "x-b3-spanid": "e457b5a2e4d86bd1",
            "x-b3-parentspanid": "05e3ac9a4f6e3b90",
            "x-b3-sampled": "1",
        },
    )
    assert got["x-b3-traceid"] == b3_trace and got["x-b3-sampled"] == "1"
    assert got["x-b3-spanid"] != "e457b5a2e4d86bd1"
    assert "x-b3-parentspanid" not in got  # the stale parent of the caller's span is dropped
    assert got["traceparent"] == f"00-{b3_trace}-{got['x-b3-spanid']}-01"
    got = _echo(local, {"b3": "a3ce929d0e0e4736-00f067aa0ba902b7-0"})  # 64-bit trace id
    tid, sid, sampled = got["b3"].split("-")
    assert tid == "a3ce929d0e0e4736" and sid != "00f067aa0ba902b7" and sampled == "0"
    assert got["traceparent"] == f"00-{'0' * 16}a3ce929d0e0e4736-{sid}-00"
    assert "x-b3-traceid" not in got
    got = _echo(local)  # no context: a new W3C trace, unsampled, and no B3 invented
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", got["traceparent"])
    assert "b3" not in got


def test_a_collector_that_never_answers_costs_spans_not_requests(mesh: Mesh) -> None:
    with Receiver(hang=True) as rx:
        local, front, _ = _two_hop(mesh, MESH_TRACE_SAMPLING="100", MESH_OTLP_ENDPOINT=rx.url)
        for _ in range(60):
            assert http_get(f"http://127.0.0.1:{local}/", timeout=5)[0] == 200
        wait_until(lambda: rx.requests >= 1, what="an export attempt")
        # The export times out (2 s) and its spans are counted as dropped.
        wait_until(
            lambda: _metric(front["metrics"], "meshctl_proxy_spans_dropped_total") >= 1,
            timeout=20,
            what="dropped spans counted",
        )
        assert _metric(front["metrics"], "meshctl_proxy_spans_exported_total") == 0
        for _ in range(20):  # still serving while the export hangs
            assert http_get(f"http://127.0.0.1:{local}/", timeout=5)[0] == 200


def test_an_absent_collector_costs_spans_not_requests(mesh: Mesh) -> None:
    from tests.observe.receiver import dead_port

    local, front, _ = _two_hop(
        mesh, MESH_TRACE_SAMPLING="100", MESH_OTLP_ENDPOINT=f"http://127.0.0.1:{dead_port()}"
    )
    for _ in range(50):
        assert http_get(f"http://127.0.0.1:{local}/", timeout=5)[0] == 200
    wait_until(
        lambda: (
            _metric(front["metrics"], 'meshctl_proxy_spans_dropped_total{reason="export_failed"}')
            >= 50
        ),
        timeout=20,
        what="the refused exports' spans counted",
    )
