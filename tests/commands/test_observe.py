"""stat, tap, top, check, proxy-config and why against a live mesh on 127.0.0.1 (explicit
mode: a real registry, real proxies, shop apps), their `--output json` asserted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from common.promparse import parse
from meshctl.commands import check, proxy_config, stat, tap, top, why
from proxy import compiled
from tests.example import CONFIG
from tests.integration.harness import Mesh, free_port, http_get, wait_until

pytestmark = pytest.mark.slow

# The commands as the lead will wire them in meshctl/cli.py.
app = typer.Typer()
app.command()(stat.stat)
app.command()(tap.tap)
app.command()(top.top)
app.command()(check.check)
app.command(name="proxy-config")(proxy_config.proxy_config)
app.command()(why.why)
FRONTEND = "spiffe://shop.local/ns/default/sa/frontend"


class Live:
    def __init__(self, mesh: Mesh, local: int, front: dict[str, Any], orders: dict[str, Any]):
        self.mesh, self.local, self.front, self.orders = mesh, local, front, orders
        self.runner = CliRunner()

    def run(self, *args: str, code: int = 0) -> Any:
        res = self.runner.invoke(
            app, [*args, "--output", "json"], env={"MESH_HOME": str(self.mesh.home)}
        )
        assert res.exit_code == code, (res.output, res.exception)
        return json.loads(res.stdout)

    def lines(self, *args: str) -> list[dict[str, Any]]:
        res = self.runner.invoke(
            app, [*args, "--output", "json"], env={"MESH_HOME": str(self.mesh.home)}
        )
        assert res.exit_code == 0, (res.output, res.exception)
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    def traffic(self, stop: threading.Event, path: str = "/echo") -> threading.Thread:
        def loop() -> None:
            while not stop.is_set():
                http_get(f"http://127.0.0.1:{self.local}{path}")

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return t


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    mesh = Mesh(tmp_path_factory.mktemp("observe"), CONFIG)
    # One endpoint per subset here: at the example's maxEjectionPercent 50 Envoy never
    # ejects it ((ejected + 1) / hosts would pass 50 %), so the ejection shown by `why` and
    # `proxy-config` below needs 100.
    orders = mesh.config / "orders.yaml"
    text = orders.read_text()
    assert "maxEjectionPercent: 50" in text
    orders.write_text(text.replace("maxEjectionPercent: 50", "maxEjectionPercent: 100"))
    mesh.start_registry()
    _, orders_app = mesh.app("orders", "v1")
    orders = mesh.proxy("orders", "v1", app_port=orders_app)
    _, pay_app = mesh.app("payments", "v1")
    mesh.proxy("payments", "v1", app_port=pay_app)
    local = free_port()
    front = mesh.proxy("frontend", "v1", upstreams={"orders:8080": local})
    wait_until(lambda: http_get(f"http://127.0.0.1:{local}/echo")[0] == 200, what="route")
    try:
        yield Live(mesh, local, front, orders)
    finally:
        mesh.close()


def _with_traffic(live: Live, *args: str) -> Any:
    stop = threading.Event()
    t = live.traffic(stop)
    try:
        return live.run(*args)
    finally:
        stop.set()
        t.join(15)
        assert not t.is_alive(), "the traffic thread did not stop within 15 s"


def test_metrics_text_after_traffic(live: Live) -> None:
    for _ in range(5):
        http_get(f"http://127.0.0.1:{live.local}/echo")
    samples = list(parse(http_get(f"http://127.0.0.1:{live.front['metrics']}/metrics")[1].decode()))
    reqs = [s for s in samples if s.name == "istio_requests_total"]
    src = [
        s for s in reqs if s.labels["reporter"] == "source" and s.labels["response_code"] == "200"
    ]
    assert src and sum(s.value for s in src) >= 5
    lab = src[0].labels
    assert lab["source_workload"] == "frontend-v1" and lab["destination_service_name"] == "orders"
    assert lab["connection_security_policy"] == "mutual_tls" and lab["request_protocol"] == "http"
    assert lab["destination_principal"] == "spiffe://shop.local/ns/default/sa/orders"
    names = {s.name for s in samples}
    for family in (
        "istio_request_duration_milliseconds_bucket",
        "istio_request_bytes_bucket",
        "meshctl_proxy_config_version",
        "meshctl_proxy_certificate_lifetime_seconds",
        "meshctl_proxy_certificate_seconds_left",
        "meshctl_proxy_registry_connected",
        "meshctl_proxy_outlier_ejections_active",
        "meshctl_proxy_circuit_breaker_overflow_total",
    ):
        assert family in names, family
    active = [s for s in samples if s.name == "meshctl_proxy_outlier_ejections_active"]
    assert {(s.labels["destination_service_name"], s.labels["subset"]) for s in active} >= {
        ("orders", "v1"), ("orders", "v2"),
    }  # fmt: skip


def test_stat_reports_rates_success_and_latency(live: Live) -> None:
    out = _with_traffic(live, "stat", "--interval", "1.5")
    orders = next(r for r in out["services"] if r["name"] == "orders")
    assert orders["rps"] > 0 and orders["requests"] > 0
    assert orders["success_rate"] == 1.0
    assert 0 < orders["p50_ms"] <= orders["p95_ms"] <= orders["p99_ms"]
    edge = next(r for r in out["edges"] if r["name"] == "frontend-v1 -> orders")
    # The example sends 10 % of orders to v2, which is not running: the caller's side sees
    # those 503s (UH) that orders' own proxies never do. The smooth weighted round robin
    # sends exactly 1 in 10 to v2, so whatever the interval caught, the failures are a tenth
    # of the requests, give or take one (a window's edges), never a share set by the timing.
    assert edge["rps"] > 0 and edge["requests"] > 0
    failed = round(edge["requests"] * (1 - edge["success_rate"]))
    assert abs(failed - edge["requests"] / 10) <= 1, edge
    only = _with_traffic(live, "stat", "orders", "--interval", "0.5")
    assert {r["name"] for r in only["services"]} == {"orders"}


def test_tap_streams_filtered_requests(live: Live) -> None:
    stop = threading.Event()
    t = live.traffic(stop)
    try:
        events = live.lines("tap", "orders", "--max", "3", "--path", "/echo", "--duration", "20")
    finally:
        stop.set()
        t.join(15)
        assert not t.is_alive(), "the traffic thread did not stop within 15 s"
    assert len(events) == 3
    for e in events:
        assert e["direction"] == "inbound" and e["destination"] == "orders"
        assert e["method"] == "GET" and e["path"] == "/echo" and e["status"] == 200
        assert e["peer"] == FRONTEND and e["flags"] == "-" and e["latency_ms"] > 0
        assert len(e["trace_id"]) == 32
    # The frontend's side of the same calls: outbound, the peer is orders' identity.
    stop = threading.Event()
    t = live.traffic(stop, "/status/404")
    try:
        events = live.lines("tap", "frontend", "--max", "2", "--status", "404", "--duration", "20")
    finally:
        stop.set()
        t.join(15)
        assert not t.is_alive(), "the traffic thread did not stop within 15 s"
    assert [e["status"] for e in events] == [404, 404]
    assert {e["direction"] for e in events} == {"outbound"}


def test_top_groups_the_busiest_paths(live: Live) -> None:
    out = _with_traffic(live, "top", "--duration", "2")
    assert out["events"] > 0
    row = out["rows"][0]
    assert (row["destination"], row["method"], row["path"]) == ("orders", "GET", "/echo")
    assert row["count"] > 0 and row["success_rate"] == 1.0


def test_proxy_config_sections(live: Live) -> None:
    routes = live.run("proxy-config", "frontend", "routes")
    canary = next(r for r in routes["routes"] if r["name"] == "canary")
    assert canary["destinations"] == "orders/v1 90%, orders/v2 10%"
    assert canary["retries"]["attempts"] == 3
    eps = live.run("proxy-config", "frontend", "endpoints")["endpoints"]
    v1 = [e for e in eps if e["service"] == "orders" and e["subset"] == "v1"]
    assert [e["address"] for e in v1] == [f"127.0.0.1:{live.orders['inbound']}"]
    assert v1[0]["ejected"] is False
    certs = live.run("proxy-config", "orders", "certs")["certs"]
    assert certs["spiffe_id"] == "spiffe://shop.local/ns/default/sa/orders"
    assert 0 < certs["seconds_left"] <= certs["lifetime_seconds"]
    pol = live.run("proxy-config", "payments", "policies")["policies"]
    assert pol["peer_authentication"] == "STRICT" and pol["authorization_policies"]


def test_why_explains_route_weights_endpoints_and_policy(live: Live) -> None:
    a = live.run("why", "frontend", "orders", "/echo")
    assert a["route"]["name"] == "canary" and a["route"]["retries"]["attempts"] == 3
    assert a["route"]["retries"]["retry_on"] == ["5xx", "connect-failure", "reset"]
    dests = {d["subset"]: d for d in a["destinations"]}
    assert dests["v1"]["weight"] == 90 and dests["v2"]["weight"] == 10
    assert [e["address"] for e in dests["v1"]["endpoints"]] == [
        f"127.0.0.1:{live.orders['inbound']}"
    ]
    assert dests["v2"]["endpoints"] == []  # no v2 running: those 10 % would get 503 UH
    assert all(z["allowed"] for z in a["authorization"])
    assert a["outcome"] == "forwarded"
    denied = live.run("why", "frontend", "payments", "/")
    assert denied["outcome"] == "403 RBAC: access denied"
    z = denied["authorization"][0]
    assert z["allowed"] is False and z["peer"] == FRONTEND
    assert z["policies"] == ["payments-allow-orders"] and z["reason"] == "no ALLOW policy matched"


def test_why_refuses_an_unknown_service(live: Live) -> None:
    res = live.runner.invoke(
        app, ["why", "frontend", "nope"], env={"MESH_HOME": str(live.mesh.home)}
    )
    assert res.exit_code == 1 and "`nope` is not a service" in res.output


def test_text_output_renders(live: Live) -> None:
    env = {"MESH_HOME": str(live.mesh.home)}
    for args in (
        ["stat", "--interval", "0.2"],
        ["proxy-config", "frontend"],
        ["why", "frontend", "orders", "/echo", "-H", "end-user=jason"],
        ["tap", "orders", "--duration", "0.5"],
        ["top", "--duration", "1"],
    ):
        res = live.runner.invoke(app, args, env=env)
        assert res.exit_code == 0, (args, res.output, res.exception)
        assert res.output.strip() or args[0] == "tap", args


def test_check_passes_then_fails_on_a_config_error(live: Live) -> None:
    out = live.run("check")
    assert out["status"] in ("ok", "warn"), out
    checks = {(c["check"], c["subject"]): c for c in out["checks"]}
    assert checks[("registry", "registry")]["status"] == "ok"
    assert checks[("clock", "registry")]["status"] == "ok"
    for pid in (live.front["id"], live.orders["id"]):
        assert checks[("proxy", pid)]["status"] == "ok"
        assert checks[("certificate", pid)]["status"] == "ok"
        assert "100%" in checks[("certificate", pid)]["detail"]
        # Which request path the proxy runs (its /server_info): the same as this process.
        core = checks[("core", pid)]
        if compiled.STATUS.compiled:
            assert core["status"] == "ok" and core["detail"].startswith("compiled ("), core
        else:
            assert core["detail"].startswith("interpreted"), core
    (live.mesh.config / "broken.yaml").write_text(
        "kind: VirtualService\napiVersion: networking.istio.io/v1\n"
        "metadata: {name: x}\nspec:\n  hosts: [nope]\n"
    )
    wait_until(lambda: live.mesh.api("GET", "/v1/status")["last_config_error"], what="rejection")
    bad = live.run("check", code=1)
    assert bad["status"] == "fail"
    cfg = next(c for c in bad["checks"] if c["check"] == "config")
    assert cfg["status"] == "fail" and "broken.yaml" in cfg["detail"]


def test_why_and_proxy_config_show_ejected_endpoints(live: Live) -> None:
    # The outlierDetection ejects after 3 consecutive 5xx (at maxEjectionPercent 100, see the
    # fixture); the route retries 5xx 3 times, so one call answering 503 ejects orders v1.
    http_get(f"http://127.0.0.1:{live.local}/status/503")
    eps = live.run("proxy-config", "frontend", "endpoints")["endpoints"]
    v1 = next(e for e in eps if e["service"] == "orders" and e["subset"] == "v1")
    assert v1["ejected"] is True
    a = live.run("why", "frontend", "orders", "/echo")
    assert [e["ejected"] for d in a["destinations"] for e in d["endpoints"]] == [True]
    assert a["outcome"].startswith("503 UH: every endpoint is ejected")
    metrics = http_get(f"http://127.0.0.1:{live.front['metrics']}/metrics")[1].decode()
    active = {
        s.labels["subset"]: s.value
        for s in parse(metrics)
        if s.name == "meshctl_proxy_outlier_ejections_active"
        and s.labels["destination_service_name"] == "orders"
    }
    assert active["v1"] == 1
