"""Endpoints expire when heartbeats stop; ACKs and NACKs show in /v1/status."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.harness import Mesh, wait_until
from tests.registry.server.support import StreamFollower, join, op
from tests.registry.server.test_config_push import set_orders_weights

pytestmark = pytest.mark.slow

TTL_S = 3.0


def ids(mesh: Mesh) -> list[str]:
    return [e["id"] for e in op(mesh, "GET", "/v1/catalog")[1]["endpoints"]]


def test_endpoint_expires_when_heartbeats_stop(idle_mesh: Mesh, tmp_path: Path) -> None:
    idle_mesh.start_registry("--endpoint-ttl", str(TTL_S))
    mesh = idle_mesh
    w = join(mesh, "orders", tmp_path / "orders")
    follower = StreamFollower(mesh, w.ctx(), "orders-1")
    ep = {"id": "orders-1", "service": "orders", "address": "127.0.0.1", "inbound_port": 15006,
          "labels": {"version": "v1"}}
    assert w.call("POST", "/v1/endpoints", ep)[0] == 200
    follower.view_where(lambda v: [e["id"] for e in v["endpoints"]] == ["orders-1"])
    # Heartbeats well inside the TTL keep it for more than two TTLs.
    until = time.monotonic() + 2.5 * TTL_S
    while time.monotonic() < until:
        assert w.call("PUT", "/v1/endpoints/orders-1", {"health": "healthy"})[0] == 200
        time.sleep(0.3)
    assert ids(mesh) == ["orders-1"]
    # Silence: it leaves the catalog, and subscribers are told.
    wait_until(lambda: ids(mesh) == [], timeout=10 * TTL_S, what="endpoint expired")
    follower.view_where(lambda v: v["endpoints"] == [])
    status, data = w.call("PUT", "/v1/endpoints/orders-1", {})
    assert status == 404 and "register it again" in data["error"]
    follower.close()


def test_ack_and_nack_show_in_status(mesh: Mesh, tmp_path: Path) -> None:
    w = join(mesh, "orders", tmp_path / "orders")
    follower = StreamFollower(mesh, w.ctx(), "orders-7")
    v1 = follower.next_view()["config_version"]
    ack = {"proxy_id": "orders-7", "config_version": v1, "ok": True, "cert_not_after": 1.5e9}
    assert w.call("POST", "/v1/ack", ack)[0] == 200
    set_orders_weights(mesh.config, 20)
    v2 = follower.next_view()["config_version"]
    assert v2 == v1 + 1
    nack = {"proxy_id": "orders-7", "config_version": v2, "ok": False,
            "error": "route weights: subset v3 unknown"}
    assert w.call("POST", "/v1/ack", nack)[0] == 200
    proxy = next(p for p in op(mesh, "GET", "/v1/status")[1]["proxies"]
                 if p["proxy_id"] == "orders-7")
    assert proxy["acked_version"] == v1
    assert proxy["nacked_version"] == v2
    assert proxy["nack_error"] == "route weights: subset v3 unknown"
    assert proxy["identity"] == w.spiffe_id and proxy["service"] == "orders"
    assert proxy["connected"] is True
    assert proxy["cert_not_after"] == 1.5e9
    assert w.call("POST", "/v1/ack", {"proxy_id": "orders-7"})[0] == 400
    follower.close()
    wait_until(lambda: not next(p for p in op(mesh, "GET", "/v1/status")[1]["proxies"]
                                if p["proxy_id"] == "orders-7")["connected"],
               what="stream closed seen")
