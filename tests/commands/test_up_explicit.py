"""`meshctl up` in explicit mode (no namespaces, no iptables: what a non-root user gets).

MESH_FORCE_EXPLICIT=1 gives the same mode as root would get without it, so this runs
everywhere. The example's apps are told their upstreams' local ports; the proxies still
speak mTLS to each other and apply the routes.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.commands.support import Cli, copy_example, free_port, mesh_home, wait_until

pytestmark = pytest.mark.slow
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(port: int, path: str = "/") -> Any:
    with OPENER.open(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def _workload(up: dict[str, Any], suffix: str) -> dict[str, Any]:
    return next(w for w in up["workloads"] if w["name"].endswith(suffix))


@pytest.fixture(scope="module")
def explicit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, Path, Any]]:
    config = copy_example(tmp_path_factory.mktemp("shop"))
    with mesh_home() as cli:
        cli.env["MESH_FORCE_EXPLICIT"] = "1"
        up = cli.json("up", str(config), "--runtime", "local", "--timeout", "30",
                      "--monitor-port", str(free_port()))  # fmt: skip
        yield cli, config, up


def test_explicit_mode_runs_on_localhost(explicit: tuple[Cli, Path, Any]) -> None:
    _, _, up = explicit
    assert up["mode"] == "explicit" and up["network"] is None
    assert "explicit mode" in up["note"]
    assert all(w["netns"] is None and w["address"] == "127.0.0.1" for w in up["workloads"])
    print(f"explicit up: {up['elapsed_s']:.2f}s")


def test_upstream_listener_reaches_orders_over_mtls_with_the_split(
    explicit: tuple[Cli, Path, Any],
) -> None:
    _, _, up = explicit
    port = _workload(up, "frontend-v1")["ports"]["upstream:orders:8080"]
    echo = _get(port, "/echo")
    assert (
        "URI=spiffe://shop.local/ns/default/sa/frontend"
        in echo["headers"]["x-forwarded-client-cert"]
    )
    seen = Counter(_get(port)["version"] for _ in range(100))
    assert seen == Counter({"v1": 90, "v2": 10})


def test_the_app_is_told_where_its_upstreams_are(explicit: tuple[Cli, Path, Any]) -> None:
    cli, _, up = explicit
    orders = _workload(up, "orders-v1")
    app = orders["ports"]["app:8080"]
    # shop.py got --upstream payments=127.0.0.1:PORT: /echo through orders' own listener
    plan = json.loads((cli.home / "launch" / "plan.json").read_text())["plan"]
    wl = next(w for w in plan["workloads"] if w["name"] == orders["name"])
    pay = orders["ports"]["upstream:payments:8080"]
    assert f"payments=127.0.0.1:{pay}" in wl["app_argv"]
    assert wl["app_env"]["MESH_UPSTREAM_PAYMENTS"] == f"127.0.0.1:{pay}"
    assert _get(app, "/echo")["service"] == "orders"  # the app itself, on its own port
    assert _get(pay)["service"] == "payments"  # orders may call payments (AuthorizationPolicy)


def test_status_json(explicit: tuple[Cli, Path, Any]) -> None:
    cli, _, up = explicit
    st = cli.json("status")
    assert sorted(e["id"] for e in st["endpoints"]) == sorted(w["name"] for w in up["workloads"])
    assert st["mode"] == "explicit"


def test_up_again_applies_only_the_change(explicit: tuple[Cli, Path, Any]) -> None:
    cli, config, _ = explicit
    mesh_yaml = config / "mesh.yaml"
    mesh_yaml.write_text(
        mesh_yaml.read_text().replace(
            '"--service", "inventory", "--version", "v1"]',
            '"--service", "inventory", "--version", "v1"]\n        replicas: 2',
        )
    )
    again = cli.json("up", str(config), "--runtime", "local", "--timeout", "30")
    prefix = cli.env["MESH_NETNS_PREFIX"]
    assert again["started"] == [f"{prefix}inventory-v1-1", f"{prefix}inventory-v1-2"]
    assert again["stopped"] == [f"{prefix}inventory-v1"]
    # every other workload gets a new upstream listener only if a service was added: none
    assert again["restarted"] == []
    expected = [f"{prefix}inventory-v1-1", f"{prefix}inventory-v1-2"]

    def inventory() -> list[str]:
        endpoints = cli.json("status")["endpoints"]
        return sorted(e["id"] for e in endpoints if e["service"] == "inventory")

    wait_until(lambda: inventory() == expected, 10, "inventory's endpoints to be the new two")


def test_down_stops_every_process(explicit: tuple[Cli, Path, Any]) -> None:
    cli, _, _ = explicit
    assert cli.processes()
    report = cli.json("down")
    assert report["registry_stopped"] and report["namespaces"] == []
    wait_until(lambda: cli.processes() == [], 5, "no process of the mesh")
    done = cli.run("status", check=False)
    assert done.returncode == 1
    assert "no mesh is running" in done.stderr and len(done.stderr.strip().splitlines()) == 1
