"""meshctl/dashboard/panel.py: the per-service panel and the live-request filter (pure),
and the dashboard's /api/service and /api/tap answers for bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from meshctl.dashboard.panel import MAX_SHOWN, attribute_errors, filter_requests, service_panel
from meshctl.dashboard.server import Dashboard
from meshctl.launch.local import load_config
from meshctl.observe.explain import explain
from tests.example import copy_config


def _ep(id: str, service: str, version: str, address: str, health: str = "healthy",
        reason: str = "") -> dict[str, Any]:
    return {"id": id, "service": service, "address": address, "inbound_port": 15006,
            "labels": {"app": service, "version": version}, "identity": "",
            "health": health, "reason": reason}


ENDPOINTS = [_ep("orders-v1-1", "orders", "v1", "10.0.0.1"),
             _ep("orders-v2-1", "orders", "v2", "10.0.0.2"),
             _ep("orders-v2-2", "orders", "v2", "10.0.0.4", "unhealthy", "GET /healthz: 500"),
             _ep("payments-v1-1", "payments", "v1", "10.0.0.3")]
STATUS = {
    "config_version": 7,
    "last_config_error": {"at": 1.0, "errors": ["bad.yaml:5:10: spec.hosts: expected a list"]},
    "proxies": [
        {"proxy_id": "orders-v1-1", "service": "orders", "acked_version": 7, "connected": True,
         "cert_not_after": 2e9, "nack_error": ""},
        {"proxy_id": "orders-v2-1", "service": "orders", "acked_version": 6, "connected": True,
         "cert_not_after": 2e9, "nack_error": "x"},
        {"proxy_id": "payments-v1-1", "service": "payments", "acked_version": 7},
    ],
    "endpoints": ENDPOINTS,
}


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    copy_config(tmp_path / "mesh")
    return load_config(tmp_path / "mesh").to_wire()


def test_the_panel_has_the_services_endpoints_proxies_and_route_as_why_says(
        config: dict[str, Any]) -> None:
    ejected = {"10.0.0.2:15006": ["frontend-v1", "frontend-v1"]}
    p = service_panel("orders", STATUS, config, ejected, "frontend")
    assert [(e["id"], e["address"], e["version"], e["health"], e["reason"], e["ejected_by"])
            for e in p["endpoints"]] == [
        ("orders-v1-1", "10.0.0.1:15006", "v1", "healthy", "", []),
        ("orders-v2-1", "10.0.0.2:15006", "v2", "healthy", "", ["frontend-v1"]),
        ("orders-v2-2", "10.0.0.4:15006", "v2", "unhealthy", "GET /healthz: 500", [])]
    assert [(x["proxy_id"], x["acked_version"], x["latest_version"], x["current"])
            for x in p["proxies"]] == [("orders-v1-1", 7, 7, True), ("orders-v2-1", 6, 7, False)]
    # The route is explain()'s answer, the same as `meshctl why frontend orders`, with the
    # ejection marked on the subset's endpoint (the unhealthy one is not routed to).
    why = explain(config, ENDPOINTS, "frontend", "orders", "/")
    assert p["why"]["route"] == why["route"] and p["why"]["route"]["name"] == "canary"
    assert [(d["subset"], d["weight"]) for d in p["why"]["destinations"]] == [("v1", 90),
                                                                               ("v2", 10)]
    v2 = p["why"]["destinations"][1]["endpoints"]
    assert [(e["address"], e["ejected"]) for e in v2] == [("10.0.0.2:15006", True)]
    assert p["why"]["config_version"] == 7
    # bad.yaml is new (not in the config in force): its error is no service's, shown
    # mesh-wide only (test_config_errors_go_to_the_panels_of_the_services_they_concern).
    assert p["last_config_error"] is None


def test_the_route_defaults_to_the_service_itself_and_errors_are_said(
        config: dict[str, Any]) -> None:
    assert service_panel("payments", STATUS, config, {}, None)["why"]["source"] == "payments"
    bad = service_panel("payments", STATUS, config, {}, "nosuch")
    assert bad["why"] == {"error": "`nosuch` is not a service in mesh.yaml"}


EVENTS = [{"path": "/", "status": 200}, {"path": "/status/418", "status": 418},
          {"path": "/status/503", "status": 503}, {"path": "/x", "status": 404}]


def test_requests_filter_by_path_prefix_and_status_newest_first() -> None:
    assert [e["path"] for e in filter_requests(EVENTS)] == ["/x", "/status/503",
                                                            "/status/418", "/"]
    assert [e["path"] for e in filter_requests(EVENTS, "/status/")] == ["/status/503",
                                                                        "/status/418"]
    assert [e["path"] for e in filter_requests(EVENTS, status="418")] == ["/status/418"]
    assert [e["path"] for e in filter_requests(EVENTS, status="4xx")] == ["/x", "/status/418"]
    assert filter_requests(EVENTS, "/status/", "404") == []
    many = [{"path": f"/{i}", "status": 200} for i in range(MAX_SHOWN + 5)]
    shown = filter_requests(many)
    assert len(shown) == MAX_SHOWN and shown[0]["path"] == f"/{MAX_SHOWN + 4}"
    for bad in ("abc", "99", "6xx", "4x"):
        with pytest.raises(ValueError, match="expected a code"):
            filter_requests(EVENTS, status=bad)


async def test_tap_and_service_say_what_is_wrong(tmp_path: Path) -> None:
    board = Dashboard(tmp_path, None)
    async with TestClient(TestServer(board.app())) as client:
        r = await client.get("/api/tap")
        assert r.status == 400 and "service" in (await r.json())["error"]
        r = await client.get("/api/tap", params={"service": "orders", "status": "abc"})
        assert r.status == 400 and "expected a code" in (await r.json())["error"]
        r = await client.get("/api/service", params={"name": "orders"})
        assert r.status == 502  # no registry under this MESH_HOME: said, not a crash
        assert (await r.json())["error"]
    assert board.tap is not None
    board.tap.stop.set()
    board.tap.thread.join(10)
    assert not board.tap.thread.is_alive(), "the tap thread must stop when told"


ERRORS = [
    "orders.yaml:20:21: spec.http[0].route[1].weight: expected an integer",
    "mesh.yaml:12:9: services.payments.ports[0].protocol: unknown protocol `htp`",
    "mesh.yaml:1:1: trust_domain: expected a string",
    "security.yaml:19:7: spec.rules[0].from: expected a list",
    "bad.yaml:5:10: spec.hosts: expected a list",
    "the config directory is not readable",
]


def test_config_errors_go_to_the_panels_of_the_services_they_concern(
        config: dict[str, Any]) -> None:
    by_service, mesh_wide = attribute_errors(ERRORS, config)
    assert by_service == {"orders": [ERRORS[0]], "payments": [ERRORS[1], ERRORS[3]]}
    # mesh.yaml's own settings, security.yaml's PeerAuthentication (no selector: every
    # workload), a file the config in force does not have, a line without a position.
    assert mesh_wide == [ERRORS[2], ERRORS[3], ERRORS[4], ERRORS[5]]
    status = {**STATUS, "last_config_error": {"at": 1.0, "errors": ERRORS}}
    assert service_panel("orders", status, config, {}, None)["last_config_error"] == \
        {"at": 1.0, "errors": [ERRORS[0]]}
    assert service_panel("payments", status, config, {}, None)["last_config_error"][
        "errors"] == [ERRORS[1], ERRORS[3]]
    assert service_panel("frontend", status, config, {}, None)["last_config_error"] is None


class _Registry:
    """The registry's answers a dashboard on another host gets (RegistryClient.call)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.answers = {"/v1/status": {**STATUS, "last_config_error": {"at": 1.0,
                                                                       "errors": ERRORS}},
                        "/v1/config": {"config": config}}

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        return self.answers[path]


async def test_the_config_error_is_split_between_panels_and_the_banner(
        tmp_path: Path, config: dict[str, Any]) -> None:
    board = Dashboard(tmp_path, None, registry=_Registry(config))  # type: ignore[arg-type]
    async with TestClient(TestServer(board.app())) as client:
        r = await client.get("/api/config")
        got = await r.json()
        assert r.status == 200, got
        assert got["by_service"] == {"orders": [ERRORS[0]], "payments": [ERRORS[1], ERRORS[3]]}
        assert got["unattributed"] == [ERRORS[2], ERRORS[3], ERRORS[4], ERRORS[5]]
        r = await client.get("/api/service", params={"name": "orders"})
        assert (await r.json())["last_config_error"]["errors"] == [ERRORS[0]]
