"""Observability of a mesh started by `meshctl up` (explicit mode): the commands find the
supervisor's proxies by their admin.json, and a trace follows a request through the whole
example shop (frontend -> orders -> payments, inventory), the apps passing the context on."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.commands.support import Cli, copy_example, free_port, mesh_home, wait_until
from tests.commands.test_observe import app
from tests.observe.receiver import Receiver

pytestmark = pytest.mark.slow
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TRACE = "5bf92f3577b34da6a3ce929d0e0e4737"
PARENT = "10f067aa0ba902b8"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, Any, Receiver]]:
    config = copy_example(tmp_path_factory.mktemp("shop"))
    with Receiver() as rx, mesh_home() as cli:
        cli.env["MESH_FORCE_EXPLICIT"] = "1"
        # The supervisor passes its environment on to the proxies it starts.
        cli.env["MESH_TRACE_SAMPLING"] = "0"
        cli.env["MESH_OTLP_ENDPOINT"] = rx.url
        up = cli.json("up", str(config), "--runtime", "local", "--timeout", "30",
                      "--monitor-port", str(free_port()))  # fmt: skip
        yield cli, up, rx


def _run(cli: Cli, *args: str, code: int = 0) -> Any:
    res = CliRunner().invoke(app, [*args, "--output", "json"], env={"MESH_HOME": str(cli.home)})
    assert res.exit_code == code, (res.output, res.exception)
    return json.loads(res.stdout)


def _frontend_app(up: Any) -> int:
    w = next(w for w in up["workloads"] if w["name"].endswith("frontend-v1"))
    return int(w["ports"]["app:8080"])


def test_a_trace_follows_a_request_through_the_shop(shop: tuple[Cli, Any, Receiver]) -> None:
    _, up, rx = shop
    port = _frontend_app(up)
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"}
    )

    def call() -> Any:
        with OPENER.open(req, timeout=10) as r:
            return json.loads(r.read())

    # The first calls may race the proxies' first config; retry until orders answers.
    wait_until(lambda: all(isinstance(v, dict) for v in call()["calls"].values()), 30, "shop")
    spans = wait_until(lambda: len(rx.by_trace(TRACE)) >= 6 and rx.by_trace(TRACE), 20, "spans")
    by_id = {s["spanId"]: s for s in spans}

    def who(s: dict[str, Any]) -> tuple[str, int, str]:
        return (
            s["resource"]["service.name"],
            s["kind"],
            s["attributes"]["meshctl.destination.service"],
        )

    # Every span's parent is in the trace, except the frontend proxy's, whose parent is ours.
    roots = [s for s in spans if s.get("parentSpanId") not in by_id]
    assert {s["parentSpanId"] for s in roots} == {PARENT}
    edges = set()
    for s in spans:
        parent = by_id.get(s.get("parentSpanId", ""))
        if parent is not None:
            edges.add((who(parent), who(s)))
    assert (("frontend", 3, "orders"), ("orders", 2, "orders")) in edges
    assert (("orders", 2, "orders"), ("orders", 3, "payments")) in edges
    assert (("orders", 3, "payments"), ("payments", 2, "payments")) in edges
    assert (("orders", 2, "orders"), ("orders", 3, "inventory")) in edges
    assert (("orders", 3, "inventory"), ("inventory", 2, "inventory")) in edges
    assert rx.errors == []


def test_commands_find_the_supervisors_proxies(shop: tuple[Cli, Any, Receiver]) -> None:
    cli, up, _ = shop
    port = _frontend_app(up)
    for _ in range(5):
        with OPENER.open(f"http://127.0.0.1:{port}/", timeout=10) as r:
            r.read()
    out = _run(cli, "stat", "--interval", "0.2")
    names = {n for n in out["proxies"]}
    assert {w["name"] for w in up["workloads"]} <= names
    edges = {r["name"] for r in out["edges"]}
    assert {"orders-v1 -> payments", "orders-v1 -> inventory"} <= edges
    assert {r["name"] for r in out["services"]} >= {"orders", "payments", "inventory"}
    check = _run(cli, "check")
    assert check["status"] in ("ok", "warn"), check
    assert not [c for c in check["checks"] if c["check"] == "iptables"]  # explicit mode
    certs = [c for c in check["checks"] if c["check"] == "certificate"]
    proxies = [*up["workloads"], *up["gateways"]]  # every proxy has its certificate
    assert len(certs) == len(proxies) and {c["status"] for c in certs} == {"ok"}
    cfg = _run(cli, "proxy-config", "payments", "policies")
    assert cfg["policies"]["authorization_policies"][0]["name"] == "payments-allow-orders"
    why = _run(cli, "why", "orders", "payments")
    assert why["outcome"] == "forwarded" and why["authorization"][0]["allowed"] is True
