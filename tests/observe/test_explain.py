"""meshctl/observe/explain.py: `why` on a config, with no mesh running (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshctl.launch.local import load_config
from meshctl.observe.explain import ExplainError, explain
from tests.example import copy_config

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: inventory}
spec:
  hosts: [inventory]
  http:
    - name: jason
      match: [{headers: {end-user: {exact: jason}}, uri: {prefix: /beta}}]
      timeout: 2s
      route: [{destination: {host: inventory}}]
    - name: rest
      route: [{destination: {host: inventory}}]
"""
EP = {
    "id": "inv-1",
    "service": "inventory",
    "address": "10.0.0.5",
    "inbound_port": 15006,
    "labels": {"app": "inventory", "version": "v1"},
    "health": "healthy",
    "identity": "",
}


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    copy_config(tmp_path / "mesh")
    (tmp_path / "mesh" / "inventory.yaml").write_text(VS)
    return load_config(tmp_path / "mesh").to_wire()


def test_header_and_prefix_pick_the_route_and_its_timeout(config: dict[str, Any]) -> None:
    a = explain(config, [EP], "orders", "inventory", "/beta/x", headers=[("End-User", "jason")])
    assert a["route"]["name"] == "jason" and a["route"]["timeout_s"] == 2.0
    assert a["routes_tried"][0]["matches"] is True
    assert a["route"]["retries"]["source"] == "istio default"
    assert a["destinations"][0]["endpoints"][0]["address"] == "10.0.0.5:15006"
    assert a["outcome"] == "forwarded"
    b = explain(config, [EP], "orders", "inventory", "/beta/x")
    assert b["route"]["name"] == "rest" and [t["matches"] for t in b["routes_tried"]] == [
        False, True,
    ]  # fmt: skip


def test_no_endpoint_no_subset_and_denials(config: dict[str, Any]) -> None:
    assert explain(config, [], "orders", "inventory")["outcome"] == "503 UH: no healthy endpoint"
    a = explain(config, [], "frontend", "payments")
    assert a["outcome"].startswith("503 UH")  # no endpoint before authz matters
    assert a["authorization"][0]["allowed"] is False
    ok = explain(config, [], "orders", "payments")
    assert ok["authorization"][0]["allowed"] is True
    assert ok["authorization"][0]["policy"] == "payments-allow-orders"
    with pytest.raises(ExplainError, match="no port 9"):
        explain(config, [], "orders", "payments", port=9)


def test_each_destination_names_the_balancer_it_uses(config: dict[str, Any], tmp_path: Path
                                                     ) -> None:
    # No loadBalancer anywhere: the proxy's default, peak EWMA (not round robin).
    a = explain(config, [EP], "orders", "inventory")
    assert a["route"]["default"] is False  # inventory has a VirtualService here
    assert [d["balancer"] for d in a["destinations"]] == [
        "peak EWMA, power of two choices (the default, as Linkerd's)"
    ]
    # A DestinationRule's loadBalancer is what the destination then shows.
    (tmp_path / "mesh" / "inventory-dr.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: inventory}\nspec:\n  host: inventory\n"
        "  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n"
    )
    rr = explain(load_config(tmp_path / "mesh").to_wire(), [EP], "orders", "inventory")
    assert [d["balancer"] for d in rr["destinations"]] == ["ROUND_ROBIN"]
