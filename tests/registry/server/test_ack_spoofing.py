"""A proxy reports only on itself: ACKs about other proxies are refused, made-up ids bounded.

Issue 19, item 4: with frontend's certificate a workload recorded NACKs and a fake
certificate expiry for other proxies, and created 20,000 proxy ids that were never freed.
"""

from __future__ import annotations

import http.client
import json
import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from registry.server.proxies import MAX_PROXIES_PER_IDENTITY
from tests.integration.harness import Mesh, wait_until
from tests.registry.server.support import StreamFollower, join, metric, op

pytestmark = pytest.mark.slow

FAKE_IDS = 20_000
SENDERS = 4  # kept-alive connections sending the fake ACKs side by side


def proxies(mesh: Mesh) -> list[dict[str, Any]]:
    return list(op(mesh, "GET", "/v1/status")[1]["proxies"])


def post_acks(mesh: Mesh, ctx: ssl.SSLContext, ids: range) -> dict[int, int]:
    """POST /v1/ack for each made-up id over one kept-alive connection: {status: count}."""
    conn = http.client.HTTPSConnection("127.0.0.1", mesh.port, context=ctx, timeout=30)
    seen: dict[int, int] = {}
    try:
        for i in ids:
            body = json.dumps({"proxy_id": f"ghost-{i}", "config_version": 1, "ok": False,
                               "error": "x" * 1000, "cert_not_after": 1.0})
            conn.request("POST", "/v1/ack", body=body,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            seen[r.status] = seen.get(r.status, 0) + 1
    finally:
        conn.close()
    return seen


def test_an_ack_for_another_proxy_is_refused_and_changes_nothing(mesh: Mesh,
                                                                 tmp_path: Path) -> None:
    orders = join(mesh, "orders", tmp_path / "orders")
    frontend = join(mesh, "frontend", tmp_path / "frontend")
    follower = StreamFollower(mesh, orders.ctx(), "orders-1")
    v1 = follower.next_view()["config_version"]
    assert orders.call("POST", "/v1/ack", {"proxy_id": "orders-1", "config_version": v1,
                                           "ok": True, "cert_not_after": 5e9})[0] == 200
    before = next(p for p in proxies(mesh) if p["proxy_id"] == "orders-1")

    spoof = {"proxy_id": "orders-1", "config_version": v1 + 5, "ok": False,
             "error": "forged NACK", "cert_not_after": 1.0}
    status, data = frontend.call("POST", "/v1/ack", spoof)
    assert status == 403, data
    assert "only report on itself" in data["error"] and frontend.spiffe_id in data["error"]
    assert metric(mesh, "meshctl_registry_acks_refused_total") == 1

    after = [p for p in proxies(mesh) if p["proxy_id"] == "orders-1"]
    assert after == [before]  # one row, orders', unchanged (no NACK, no fake expiry)
    assert before["identity"] == orders.spiffe_id and before["cert_not_after"] == 5e9
    follower.close()


def test_made_up_proxy_ids_are_bounded(mesh: Mesh, tmp_path: Path) -> None:
    orders = join(mesh, "orders", tmp_path / "orders")
    frontend = join(mesh, "frontend", tmp_path / "frontend")
    follower = StreamFollower(mesh, orders.ctx(), "orders-1")
    follower.next_view()
    ctx = frontend.ctx()
    per = FAKE_IDS // SENDERS
    with ThreadPoolExecutor(SENDERS) as pool:
        results = list(pool.map(lambda k: post_acks(mesh, ctx, range(k * per, (k + 1) * per)),
                                range(SENDERS)))
    assert sum(r.get(200, 0) for r in results) == FAKE_IDS  # its own rows: accepted, bounded
    rows = proxies(mesh)
    assert len(rows) == MAX_PROXIES_PER_IDENTITY + 1, len(rows)  # the cap, and orders-1
    assert metric(mesh, "meshctl_registry_proxies") == MAX_PROXIES_PER_IDENTITY + 1
    assert [p["identity"] for p in rows if p["proxy_id"] == "orders-1"] == [orders.spiffe_id]
    assert {p["identity"] for p in rows if p["proxy_id"] != "orders-1"} == {frontend.spiffe_id}
    follower.close()


def test_made_up_proxy_ids_expire(idle_mesh: Mesh, tmp_path: Path) -> None:
    idle_mesh.start_registry("--endpoint-ttl", "1")
    mesh = idle_mesh
    orders = join(mesh, "orders", tmp_path / "orders")
    frontend = join(mesh, "frontend", tmp_path / "frontend")
    follower = StreamFollower(mesh, orders.ctx(), "orders-1")
    follower.next_view()
    assert post_acks(mesh, frontend.ctx(), range(50)) == {200: 50}
    assert len(proxies(mesh)) == 51
    # No stream and no report for a TTL: forgotten. orders-1 holds its stream and stays.
    wait_until(lambda: [p["proxy_id"] for p in proxies(mesh)] == ["orders-1"], timeout=20,
               what="made-up proxy ids expired")
    follower.close()
