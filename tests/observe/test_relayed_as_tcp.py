"""`meshctl why` and `meshctl proxy-config` on a port relayed as opaque TCP (declared `grpc`
or `tcp`): they say the HTTP routes do not apply there instead of printing their retries and
weights (issue 21). Pure: the config as the registry serves it, no mesh running."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from meshctl.commands import why as why_cmd
from meshctl.commands.proxy_config import sections
from meshctl.launch.local import load_config
from meshctl.observe.explain import explain
from tests.example import copy_config
from tests.registry.config.conftest import replace_in

KV = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: inventory}
spec:
  hosts: [inventory]
  http:
    - name: h
      retries: {attempts: 2, retryOn: "unavailable,cancelled"}
      route: [{destination: {host: inventory}}]
  tcp:
    - route: [{destination: {host: inventory}}]
"""
EPS = [
    {"id": f"{svc}-1", "service": svc, "address": f"10.0.0.{i}", "inbound_port": 15006,
     "labels": {"app": svc, "version": "v1"}, "health": "healthy", "identity": ""}
    for i, svc in enumerate(("orders", "inventory"), start=5)
]


def _config(tmp_path: Path, service: str, protocol: str) -> dict[str, Any]:
    mesh = copy_config(tmp_path / "mesh")
    replace_in(mesh, "mesh.yaml", f"  {service}:\n    ports:\n      - {{port: 8080, protocol: http",
               f"  {service}:\n    ports:\n      - {{port: 8080, protocol: {protocol}")
    (mesh / "inventory.yaml").write_text(KV)
    return load_config(mesh).to_wire()


@pytest.mark.parametrize("protocol", ["grpc", "tcp"])
def test_why_says_http_routes_do_not_apply(tmp_path: Path, protocol: str) -> None:
    config = _config(tmp_path, "orders", protocol)
    a = explain(config, EPS, "frontend", "orders", "/")
    assert a["protocol"] == protocol and a["carried_as"] == "tcp"
    assert "retries" not in a["route"] and "routes_tried" not in a
    assert a["route"]["note"].startswith("relayed as opaque TCP")
    # orders.yaml's `canary` entry (90/10, 3 retries) is named as not applied, with its place.
    assert a["http_routes_not_applied"] == [
        {"index": 0, "name": "canary", "source": "orders.yaml:10:7"}]
    # No tcp entry for orders: one endpoint per connection from the whole service.
    assert [(d["subset"], d["weight"]) for d in a["destinations"]] == [(None, 100)]
    assert a["outcome"] == "forwarded"


def test_why_text_shows_no_retries_or_request_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, "orders", "grpc")
    a = explain(config, EPS, "frontend", "orders", "/")
    a["config_version"] = 1
    console = Console(record=True, width=200)
    monkeypatch.setattr(why_cmd, "Console", lambda **_: console)
    why_cmd._print(a)
    text = console.export_text()
    assert not re.search(r"retries \d", text) and "weight 90%" not in text
    assert "relayed as opaque TCP (declared grpc" in text
    assert "http route 0 canary (orders.yaml:10:7): not applied on this port" in text
    assert "weight 100% of connections" in text


def test_why_follows_the_tcp_entry_on_an_opaque_port(tmp_path: Path) -> None:
    config = _config(tmp_path, "inventory", "grpc")
    a = explain(config, EPS, "orders", "inventory", "/")
    assert [r["name"] for r in a["http_routes_not_applied"]] == ["h"]
    assert [(d["service"], d["weight"]) for d in a["destinations"]] == [("inventory", 100)]
    assert a["authorization"] and a["authorization"][0]["allowed"] is not None


def test_proxy_config_marks_routes_not_applied(tmp_path: Path) -> None:
    config = _config(tmp_path, "orders", "grpc")
    dump = {"proxy_id": "frontend-1", "service": "frontend", "config_version": 1,
            "config": config}
    routes = {r["name"]: r for r in sections(dump, None, "routes")["routes"]}
    assert routes["canary"]["not_applied_on"] == ["8080 (grpc)"]
    assert routes["h"]["not_applied_on"] == []  # inventory's port is HTTP
