"""`meshctl dashboard` in a real browser: Debian's chromium, headless, driven by Playwright.
The example shop runs under `meshctl up` with traffic; the page's graph must show the
shop's edges with non-zero rates, drawn by the vendored Cytoscape.js (no CDN: the browser
has no network beyond 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.proxies import local_proxies
from meshctl.client import RegistryClient
from tests.commands.support import MESHCTL, REPO, Cli, free_port, wait_until
from tests.commands.test_canary_up import _app_port, running_shop
from tests.dashboard.test_prometheus import running_prometheus

CHROMIUM = Path("/usr/bin/chromium")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (install.sh)"),
]
# caller version -> service (mTLS), and service -> the version that answered (the share)
CALLS = {"frontend v1 -> orders", "orders v1 -> payments", "orders v1 -> inventory"}
SUBSETS = {"orders -> orders v1", "orders -> orders v2", "payments -> payments v1"}
EDGES = CALLS | SUBSETS
PAYMENTS_RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payments}
spec:
  host: payments
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 5m,
                       maxEjectionPercent: 50}
"""
BROKEN = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken}
spec:
  hosts: payments
"""


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[str, Path, Cli, Path, Any]]:
    with running_shop(tmp_path_factory.mktemp("shop"), _two_payments) as (cli, up, config, _):
        port = free_port()
        server = subprocess.Popen(
            [*MESHCTL, "dashboard", "--listen", f"127.0.0.1:{port}", "--no-browser"],
            env=cli.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_until(lambda: _get(url + "api/graph")["edges"], 30, "the dashboard's graph")
            yield url, tmp_path_factory.mktemp("shots"), cli, config, up
        finally:
            server.terminate()
            server.wait(10)


def _two_payments(config: Path) -> None:
    """payments in two replicas, with an outlier detection that may eject one of them."""
    mesh = config / "mesh.yaml"
    line = ('        command: ["python3", "apps/shop.py", "--service", "payments", '
            '"--version", "v1"]\n')
    assert line in mesh.read_text()
    mesh.write_text(mesh.read_text().replace(line, line + "        replicas: 2\n"))
    (config / "payments.yaml").write_text(PAYMENTS_RULE)


def _service_panel(page: Any, cli: Cli, up: Any
                   ) -> tuple[list[str], list[str], str, list[str]]:
    """Pick orders: its endpoints (and the catalog's), the route as `meshctl why orders
    orders` explains it, and the live requests filtered to status 418 after sending one."""
    page.select_option("#service", "orders")
    why = cli.json("why", "orders", "orders")
    dests = ", ".join(f"{d['service']}/{d['subset']} {d['weight']}%"
                      for d in why["destinations"])
    want = f"{why['route']['name']} -> {dests}; {why['outcome']}"
    page.wait_for_function("(want) => document.getElementById('route').textContent"
                           ".includes(want)", arg=want, timeout=15_000)
    route = page.locator("#route").inner_text()
    catalog = RegistryClient.from_home(cli.home).call("GET", "/v1/catalog")["endpoints"]
    ours = sorted(f"{e['address']}:{e['inbound_port']}" for e in catalog
                  if e["service"] == "orders")
    page.wait_for_function("(n) => document.querySelectorAll('#endpoints tbody tr').length == n",
                           arg=len(ours), timeout=15_000)
    endpoints = page.locator("#endpoints tbody tr").all_inner_texts()
    page.fill("#tap-status", "418")
    page.wait_for_function("() => / of [1-9][0-9]* kept/.test("
                           "document.getElementById('tap-info').textContent)", timeout=15_000)
    front = next(w for w in up["workloads"] if w["name"].endswith("frontend-v1"))
    teapot = f"http://127.0.0.1:{front['ports']['upstream:orders:8080']}/status/418"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def shown() -> bool:
        try:  # through frontend's proxy to orders' proxy, whose tap sees it
            opener.open(teapot, timeout=5).read()
        except urllib.error.HTTPError as exc:
            assert exc.code == 418, exc
        page.wait_for_timeout(500)  # the page polls every second
        return "/status/418" in page.locator("#requests tbody").inner_text(timeout=5_000)

    wait_until(shown, 30, "the request to orders /status/418 in the live requests")
    return endpoints, ours, route, page.locator("#requests tbody tr").all_inner_texts()


def _chromium(p: Any) -> Any:
    """Debian's chromium, headless, with no network beyond what the page asks of 127.0.0.1."""
    return p.chromium.launch(executable_path=str(CHROMIUM),
                             args=["--headless", "--no-sandbox", "--disable-gpu",
                                   "--disable-background-networking"])


def _get(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as r:
        return json.loads(r.read())


def test_the_graph_shows_the_shops_edges_with_rates(
        board: tuple[str, Path, Cli, Path, Any]) -> None:
    url, shots, cli, config, up = board
    # A canary that stays at its first step (a minute per step) while the page is looked at.
    cli.run("route", "canary", "orders", "--to", "v2", "--steps", "20,60,100",
            "--interval", "1m")
    with playwright.sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(url) else outside.append(r.url))
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text))
            page.on("pageerror", lambda e: console.append(str(e)))
            page.goto(url)
            wanted = sorted(EDGES)
            try:
                page.wait_for_function(
                    """(want) => window.cy && want.every(id => {
                           const e = window.cy.getElementById(id);
                           return e.nonempty() && e.data('rps') > 0; })""",
                    arg=wanted, timeout=30_000)
            except playwright.Error:
                graph = _get(url + "api/graph")
                raise AssertionError(f"the page never showed {wanted}; console: {console}; "  # noqa: B904
                                     f"/api/graph edges: {[e['id'] for e in graph['edges']]}")
            drawn = page.evaluate("() => window.cy.edges().map("
                                  "e => [e.id(), e.data('rps'), e.data('mtls'), e.data('share')])")
            rows = page.locator("#edges tbody tr").all_inner_texts()
            canary = page.locator("#canaries .canary[data-service=orders]")
            canary.and_(page.locator(".progressing")).wait_for(timeout=15_000)
            running = canary.inner_text()
            page.screenshot(path=str(shots / "dashboard.png"))
            panel = _service_panel(page, cli, up)
            page.screenshot(path=str(shots / "panel.png"), full_page=True)
            if os.environ.get("MESH_DASHBOARD_SHOT"):
                page.screenshot(path=os.environ["MESH_DASHBOARD_SHOT"] + ".panel.png",
                                full_page=True)
            cli.run("route", "canary", "abort", "orders")  # the page follows, no reload
            canary.and_(page.locator(".rolled_back")).wait_for(timeout=15_000)
            ended = canary.inner_text()
            assert page.locator("#config-error").is_hidden()
            (config / "bad.yaml").write_text(BROKEN)  # the registry rejects it: shown
            banner = page.locator("#config-error")
            banner.wait_for(state="visible", timeout=15_000)
            rejected = banner.inner_text()
            # One payments replica answers 503: orders' proxy ejects it, the node turns red.
            fail = urllib.request.Request(
                f"http://127.0.0.1:{_app_port(up, 'payments-v1-2')}/admin/fail?status=503"
                "&count=-1", method="POST")
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(fail) as r:
                r.read()
            page.wait_for_function("() => window.cy.getElementById('payments v1').data('ejected')",
                                   timeout=30_000)
            red = page.evaluate("() => window.cy.getElementById('payments v1')"
                                ".style('background-color')")
            ejected = page.evaluate("() => window.cy.getElementById('payments v1').data('ejected')")
            page.screenshot(path=str(shots / "ejected.png"))
            if os.environ.get("MESH_DASHBOARD_SHOT"):
                page.screenshot(path=os.environ["MESH_DASHBOARD_SHOT"] + ".ejected.png")
        finally:
            browser.close()
    endpoints, catalog, route, requests = panel
    assert sorted(r.split("\t")[1] for r in endpoints) == catalog, (endpoints, catalog)
    assert route.startswith("route for orders -> orders /: canary -> orders/v1 80%, "
                            "orders/v2 20%; forwarded"), route
    assert requests and all(r.split("\t")[4] == "418" for r in requests), requests
    assert any(r.split("\t")[3] == "/status/418" for r in requests), requests
    by_id = {i: (rps, mtls, share) for i, rps, mtls, share in drawn}
    for edge in EDGES:
        assert by_id[edge][0] > 0, (edge, by_id)
    assert all(by_id[e][1] is True for e in CALLS), by_id  # STRICT mTLS in the example
    # The route sends 90 % to v1 and 10 % to v2: v1 has most of orders' requests.
    assert by_id["orders -> orders v1"][2] > by_id["orders -> orders v2"][2] > 0, by_id
    assert any(r.startswith("frontend v1 -> orders\t") for r in rows), rows
    assert outside == []  # Cytoscape came from the dashboard itself
    assert running.startswith("canary orders: v1 -> v2 progressing, v2 20%, step 1/3, "
                              "failed checks 0/3"), running
    assert ended.startswith("canary orders: v1 -> v2 rolled back, v2 0%"), ended
    assert ended.endswith("aborted by the operator"), ended
    assert red == "rgb(221,0,0)", red
    assert len(ejected) == 1 and set(ejected[0]["by"]) <= {"orders-v1", "orders-v2"}, ejected
    assert "config change rejected" in rejected and \
        "bad.yaml:5:10: spec.hosts: expected a list, got a string" in rejected, rejected
    if os.environ.get("MESH_DASHBOARD_SHOT"):
        (shots / "dashboard.png").replace(os.environ["MESH_DASHBOARD_SHOT"])


def test_the_graph_from_a_prometheus_scraping_the_shops_proxies(
        board: tuple[str, Path, Cli, Path, Any], tmp_path: Path) -> None:
    """`--prometheus`: Debian's prometheus scrapes the shop's proxies; a second dashboard
    draws the shop's calls from its PromQL answers, with rates and mTLS."""
    _, _, cli, _, _ = board
    targets = [p.metrics.replace("0.0.0.0:", "127.0.0.1:") for p in local_proxies(cli.home)]
    with running_prometheus(tmp_path, targets) as prom:
        port = free_port()
        server = subprocess.Popen(
            [*MESHCTL, "dashboard", "--listen", f"127.0.0.1:{port}", "--no-browser",
             "--prometheus", prom],
            env=cli.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def drawn() -> dict[str, Any]:
                g = _get(f"http://127.0.0.1:{port}/api/graph?window=60")
                edges = {e["id"]: e for e in g["edges"] if e["rps"] > 0}
                return g if set(edges) >= CALLS else {}

            g = wait_until(drawn, 60, f"the shop's calls in the graph from {prom}")
        finally:
            server.terminate()
            server.wait(10)
    assert g["source"] == prom
    edges = {e["id"]: e for e in g["edges"]}
    assert all(edges[c]["mtls"] is True for c in CALLS), edges
    # v1's share only: the test before this one ends its canary with v2 rolled back to 0 %,
    # so v2 gets no traffic in this Prometheus's window (it starts after that).
    assert edges["orders -> orders v1"]["rps"] > 0, edges


BROKEN_ORDERS = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders-typo}
spec:
  hosts: orders
"""


def test_a_dashboard_on_another_host_shows_the_mesh_through_the_registry(
        board: tuple[str, Path, Cli, Path, Any], tmp_path: Path) -> None:
    """A dashboard whose MESH_HOME has no registry and no proxy (an operator's laptop),
    given only the operator credential: the graph, a service's panel and its live requests
    come through the registry's relay. A config error in orders.yaml shows in orders' panel,
    not in payments'; the banner keeps the error no service owns (bad.yaml, a new file)."""
    _, _, cli, config, up = board
    cred = tmp_path / "operator.token"
    cred.write_text(cli.run("token", "operator").stdout)
    cred.chmod(0o600)
    laptop = tmp_path / "laptop"
    env = {**cli.env, "MESH_HOME": str(laptop), "MESH_OPERATOR_TOKEN_FILE": str(cred)}
    port = free_port()
    server = subprocess.Popen(
        [*MESHCTL, "dashboard", "--listen", f"127.0.0.1:{port}", "--no-browser"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    orders = config / "orders.yaml"
    kept = orders.read_text()
    try:
        wait_until(lambda: {e["id"] for e in _get(url + "api/graph")["edges"]
                            if e["rps"] > 0} >= CALLS, 60,
                   "the shop's calls in the graph of a dashboard on another host")
        with playwright.sync_playwright() as p:
            browser = _chromium(p)
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                page.goto(url)
                page.wait_for_function(
                    """(want) => window.cy && want.every(id => {
                           const e = window.cy.getElementById(id);
                           return e.nonempty() && e.data('rps') > 0; })""",
                    arg=sorted(CALLS), timeout=30_000)
                endpoints, catalog, _, requests = _service_panel(page, cli, up)
                orders.write_text(kept + BROKEN_ORDERS)
                panel_error = page.locator("#panel-error")
                panel_error.wait_for(state="visible", timeout=15_000)
                in_orders = panel_error.inner_text()
                page.wait_for_function("() => document.getElementById('config-error')"
                                       ".textContent.includes('see the panel of orders')",
                                       timeout=15_000)
                banner = page.locator("#config-error").inner_text()
                page.select_option("#service", "payments")
                page.wait_for_function("() => document.getElementById('route').textContent"
                                       ".startsWith('route for payments -> payments')",
                                       timeout=15_000)
                page.wait_for_timeout(1500)  # a poll of the panel (every second) after it
                in_payments = panel_error.is_visible()
            finally:
                browser.close()
    finally:
        orders.write_text(kept)
        server.terminate()
        server.wait(10)
    assert sorted(r.split("\t")[1] for r in endpoints) == catalog, (endpoints, catalog)
    assert any(r.split("\t")[3] == "/status/418" for r in requests), requests
    assert "orders.yaml:" in in_orders and "spec.hosts: expected a list" in in_orders, in_orders
    assert "bad.yaml" not in in_orders, in_orders
    assert not in_payments
    assert "bad.yaml:5:10" in banner and "orders.yaml:" not in banner, banner
    assert not (laptop / "proxies").exists() and not (laptop / "registry").exists()
