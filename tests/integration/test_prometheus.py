"""A real Prometheus server (Debian's `prometheus`) scrapes the proxies and answers PromQL for
the request rate between two services, by Istio's metric and label names."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.example import CONFIG
from tests.integration.harness import Mesh, Proc, free_port, http_get, wait_until
from tests.integration.test_tracing import only_v1

pytestmark = pytest.mark.slow
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    m = Mesh(tmp_path, CONFIG)
    only_v1(m)
    m.start_registry()
    yield m
    m.close()


def _start_prometheus(tmp: Path, targets: list[str]) -> tuple[Proc, int]:
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "meshctl-proxies",
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": targets}],
                    }
                ],
            }
        )
    )
    proc = Proc(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        {},
        tmp / "prometheus.log",
    ).start()
    return proc, port


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    status, body, _ = http_get(url)
    assert status == 200, body
    data = json.loads(body)
    assert data["status"] == "success", data
    return list(data["data"]["result"])


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus is not installed")
def test_prometheus_answers_the_request_rate_between_two_services(
    mesh: Mesh, tmp_path: Path
) -> None:
    _, orders_app = mesh.app("orders", "v1")
    orders = mesh.proxy("orders", "v1", app_port=orders_app)
    local = free_port()
    front = mesh.proxy("frontend", "v1", upstreams={"orders:8080": local})
    wait_until(lambda: http_get(f"http://127.0.0.1:{local}/")[0] == 200, what="route")
    targets = [f"127.0.0.1:{front['metrics']}", f"127.0.0.1:{orders['metrics']}"]
    prom, port = _start_prometheus(tmp_path, targets)
    try:
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{port}/-/ready")[0] == 200,
            timeout=30,
            what="prometheus ready",
        )
        wait_until(
            lambda: len(_query(port, "up == 1")) == 2, timeout=30, what="both proxies scraped"
        )
        # Traffic for a few scrape intervals, so rate() has samples on both sides of it.
        deadline = time.monotonic() + 4
        sent = 0
        while time.monotonic() < deadline:
            assert http_get(f"http://127.0.0.1:{local}/echo")[0] == 200
            sent += 1
        query = (
            'sum(rate(istio_requests_total{reporter="source",'
            'destination_service_name="orders"}[30s]))'
        )
        result = wait_until(
            lambda: (r := _query(port, query)) and float(r[0]["value"][1]) > 0 and r,
            timeout=20,
            what="a non-zero request rate from PromQL",
        )
        assert float(result[0]["value"][1]) > 0
        # The destination side agrees, with the caller's identity as a label.
        dest = _query(
            port,
            "sum by (source_workload, response_code) (increase(istio_requests_total{"
            'reporter="destination",destination_service_name="orders"}[30s]))',
        )
        assert any(
            r["metric"] == {"source_workload": "frontend", "response_code": "200"}
            and float(r["value"][1]) > 0
            for r in dest
        ), dest
        # Histogram buckets work with histogram_quantile (Istio's dashboards use it).
        p99 = _query(
            port,
            "histogram_quantile(0.99, sum by (le) (rate("
            'istio_request_duration_milliseconds_bucket{reporter="source"}[30s])))',
        )
        assert p99 and float(p99[0]["value"][1]) > 0
        # Proxy health series are there too.
        assert _query(port, "meshctl_proxy_config_version > 0")
        assert _query(port, "meshctl_proxy_registry_connected == 1")
        assert sent > 0
    finally:
        prom.stop()
