"""meshctl/dashboard/prometheus.py: the graph's history from a Prometheus. The shaping is
pure (the same graph as from two scrapes); then a real one (Debian's `prometheus`) on
127.0.0.1 scraping an exporter of proxy-format metrics that this test runs."""

from __future__ import annotations

import asyncio
import http.server
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from common.promparse import parse
from meshctl.dashboard.graph import graph
from meshctl.dashboard.prometheus import queries, to_scrape
from meshctl.dashboard.server import Dashboard
from tests.commands.support import MESHCTL
from tests.integration.harness import free_port

EDGE = {"reporter": "source", "source_app": "frontend", "source_version": "v1",
        "destination_service_name": "orders", "destination_version": "unknown",
        "connection_security_policy": "mutual_tls"}
SERVED = {"reporter": "destination", "source_app": "frontend", "source_version": "v1",
          "destination_service_name": "orders", "destination_version": "v2",
          "connection_security_policy": "mutual_tls"}


def _text(ok: float, failed: float) -> str:
    """Proxy-format metrics: `ok` 200s and `failed` 503s on each series, latencies <= 50 ms."""
    lines = []
    for labels in (EDGE, SERVED):
        base = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f'istio_requests_total{{{base},response_code="200"}} {ok}')
        lines.append(f'istio_requests_total{{{base},response_code="503"}} {failed}')
        for le in ("10", "50", "+Inf"):
            n = ok + failed if le != "10" else ok
            lines.append(f'istio_request_duration_milliseconds_bucket{{{base},le="{le}"}} {n}')
    return "\n".join(lines) + "\n"


def _vector(text: str) -> dict[str, list[dict[str, Any]]]:
    """What `sum by (...)` over the metrics answers: the series without __name__."""
    out: dict[str, list[dict[str, Any]]] = {}
    for s in parse(text):
        out.setdefault(s.name, []).append({"metric": s.labels, "value": [0, str(s.value)]})
    return out


def test_increases_from_prometheus_make_the_same_graph_as_two_scrapes() -> None:
    first, second = list(parse(_text(10, 1))), list(parse(_text(40, 4)))
    direct = graph({"p": first}, {"p": second}, 60.0)
    # Prometheus' increase over the window is second - first: the same graph from nothing.
    increases = _vector(_text(30, 3))
    increases["istio_requests_total"].append(
        {"metric": {**EDGE, "response_code": "500"}, "value": [0, "NaN"]})  # skipped
    assert graph({}, to_scrape(increases), 60.0) == direct
    assert {e["id"] for e in direct["edges"]} == {"frontend v1 -> orders", "orders -> orders v2"}
    q = queries(300)
    assert "increase(istio_requests_total[300s])" in q["istio_requests_total"]
    assert "le" in q["istio_request_duration_milliseconds_bucket"].split("(")[1]
    doc = (Path(__file__).parents[2] / "docs" / "dashboard.md").read_text()
    assert all(f"    {promql}\n" in doc for promql in queries(60).values())  # docs stay true


class _Exporter(http.server.BaseHTTPRequestHandler):
    """Counters that grow with time: 10 requests/s answered 200 and 10/s answered 503."""

    start = time.monotonic()

    def do_GET(self) -> None:
        n = round(10 * (time.monotonic() - self.start))
        body = _text(n, n).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def running_prometheus(tmp: Path, targets: list[str]) -> Iterator[str]:
    """Debian's prometheus on 127.0.0.1, scraping `targets` (host:port) every second;
    its URL. Stopped by its pid after."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("needs Debian's prometheus (install.sh --test)")
    port = free_port()
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: proxies\n    static_configs: [{{targets: {targets!r}}}]\n")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=1h"],
        stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("wb"))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    exporter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    try:
        with running_prometheus(tmp_path, [f"127.0.0.1:{exporter.server_address[1]}"]) as url:
            yield url
    finally:
        exporter.shutdown()
        exporter.server_close()


async def test_the_graph_from_a_real_prometheus(prometheus: str, tmp_path: Path) -> None:
    board = Dashboard(tmp_path, None, prometheus=prometheus)
    async with TestClient(TestServer(board.app())) as client:
        g: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # Prometheus starts, then needs two scrapes
            r = await client.get("/api/graph", params={"window": "60"})
            g = await r.json()
            if r.status == 200 and len(g["edges"]) == 2:
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"no graph from {prometheus} within 60 s: {g}")
    edges = {e["id"]: e for e in g["edges"]}
    call, served = edges["frontend v1 -> orders"], edges["orders -> orders v2"]
    assert call["rps"] > 0 and call["mtls"] is True and served["share"] == 1.0
    assert call["success_rate"] == served["success_rate"] == 0.5  # half answered 503
    assert call["health"] == "failing"
    assert call["p99_ms"] is not None and 10 < call["p99_ms"] <= 50
    assert g["source"] == prometheus and g["interval_s"] == 60.0


async def test_no_prometheus_is_said(tmp_path: Path) -> None:
    board = Dashboard(tmp_path, None, prometheus=f"http://127.0.0.1:{free_port()}")
    async with TestClient(TestServer(board.app())) as client:
        r = await client.get("/api/graph", params={"window": "60"})
        assert r.status == 502
        assert "no answer" in (await r.json())["error"]


def test_a_prometheus_that_is_not_a_url_is_refused(tmp_path: Path) -> None:
    r = subprocess.run([*MESHCTL, "dashboard", "--no-browser", "--prometheus", "127.0.0.1:9090"],
                       env={**os.environ, "MESH_HOME": str(tmp_path)}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert "--prometheus `127.0.0.1:9090` is not an http(s):// URL" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
