"""The dashboard's graph from two scrapes (pure), and who may see it."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from common.promparse import Sample
from meshctl.dashboard.graph import graph, health
from meshctl.dashboard.server import COOKIE, Dashboard


def _req(reporter: str, n: float, code: str = "200", **labels: str) -> Sample:
    return Sample("istio_requests_total",
                  {"reporter": reporter, "response_code": code, **labels}, n)


def _scrape(k: float) -> dict[str, list[Sample]]:
    """frontend v1 -> orders (v1 90 %, v2 10 %, v2 failing a fifth); k scales the counters."""
    call = {"source_app": "frontend", "source_version": "v1",
            "destination_service_name": "orders", "connection_security_policy": "mutual_tls"}
    return {
        "frontend-v1": [_req("source", 100 * k, **call)],
        "orders-v1": [_req("destination", 90 * k, destination_service_name="orders",
                           destination_version="v1")],
        "orders-v2": [_req("destination", 8 * k, destination_service_name="orders",
                           destination_version="v2"),
                      _req("destination", 2 * k, "503", destination_service_name="orders",
                           destination_version="v2")],
    }


def test_edges_rates_shares_and_health() -> None:
    g = graph(_scrape(1), _scrape(3), 10.0)
    edges = {e["id"]: e for e in g["edges"]}
    assert set(edges) == {"frontend v1 -> orders", "orders -> orders v1", "orders -> orders v2"}
    call = edges["frontend v1 -> orders"]
    assert call["rps"] == 20.0 and call["mtls"] is True and call["success_rate"] == 1.0
    assert edges["orders -> orders v1"]["share"] == 0.9
    v2 = edges["orders -> orders v2"]
    assert v2["share"] == 0.1 and v2["success_rate"] == 0.8 and v2["health"] == "failing"
    nodes = {n["id"]: n for n in g["nodes"]}
    assert nodes["orders"]["rps"] == 20.0 and nodes["orders"]["health"] == "degraded"  # 2 %
    assert nodes["orders v1"]["health"] == "healthy" and nodes["frontend v1"]["health"] == "idle"


def test_kiali_thresholds() -> None:
    assert health(0, 0) == "idle"
    assert health(10000, 9) == "healthy"  # 0.09 %
    assert health(1000, 1) == "degraded"  # 0.1 %: Kiali's degraded
    assert health(100, 10) == "degraded"  # 10 %: not above it
    assert health(100, 11) == "failing"


def test_a_plaintext_call_is_its_own_dashed_edge() -> None:
    first, second = _scrape(1), _scrape(2)
    plain = {"source_app": "frontend", "source_version": "v1",
             "destination_service_name": "orders", "connection_security_policy": "none"}
    second["frontend-v1"].append(_req("source", 5, **plain))
    edges = {e["id"]: e for e in graph(first, second, 1.0)["edges"]}
    assert edges["frontend v1 -> orders (plaintext)"]["mtls"] is False


async def test_beyond_loopback_the_operator_credential_is_needed(tmp_path: Path) -> None:
    board = Dashboard(tmp_path, token="s3cret")
    async with TestClient(TestServer(board.app())) as client:
        assert (await client.get("/")).status == 401
        assert (await client.get("/api/graph", headers={"Authorization": "Bearer no"})).status \
            == 401
        r = await client.get("/api/graph", headers={"Authorization": "Bearer s3cret"})
        assert r.status == 200 and (await r.json())["edges"] == []
        r = await client.get("/?token=s3cret", allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "/"  # the token leaves the URL
        assert r.cookies[COOKIE].value == "s3cret" and r.cookies[COOKIE]["httponly"]
        assert (await client.get("/static/../server.py")).status in (401, 404)


async def test_on_loopback_no_credential_and_only_the_shipped_files(tmp_path: Path) -> None:
    board = Dashboard(tmp_path, token=None)
    async with TestClient(TestServer(board.app())) as client:
        page = await client.get("/")
        assert page.status == 200 and "/static/vendor/cytoscape.min.js" in await page.text()
        js = await client.get("/static/vendor/cytoscape.min.js")
        assert js.status == 200 and "Cytoscape Consortium" in (await js.text())[:300]
        assert (await client.get("/static/dashboard.js")).status == 200
        assert (await client.get("/static/vendor/cytoscape.LICENSE")).status == 404
        assert (await client.get("/api/graph?window=7")).status == 400


def test_an_ejected_endpoint_marks_its_version() -> None:
    from meshctl.dashboard.graph import mark_ejected

    g = graph(_scrape(1), _scrape(2), 1.0)
    endpoints = [{"service": "orders", "address": "10.0.0.2", "inbound_port": 15006,
                  "labels": {"version": "v2"}},
                 {"service": "orders", "address": "10.0.0.1", "inbound_port": 15006,
                  "labels": {"version": "v1"}}]
    mark_ejected(g, endpoints, {"10.0.0.2:15006": ["frontend-v1", "frontend-v1"]})
    nodes = {n["id"]: n for n in g["nodes"]}
    assert nodes["orders v2"]["ejected"] == [{"endpoint": "10.0.0.2:15006",
                                              "by": ["frontend-v1"]}]
    assert "ejected" not in nodes["orders v1"] and "ejected" not in nodes["orders"]
