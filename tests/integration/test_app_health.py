"""App health: an endpoint whose app dies leaves the pool after the failure threshold, shows
unhealthy with the reason, and comes back when its app does (docs/config.md, readinessProbe)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.example import CONFIG
from tests.integration.harness import SHOP, Mesh, Proc, free_port, http_get, wait_until

pytestmark = pytest.mark.slow

PROBE = (
    "        readinessProbe:\n"
    "          tcpSocket: {port: http}\n"
    "          periodSeconds: 0.2\n"
    "          timeoutSeconds: 0.5\n"
    "          failureThreshold: 3\n"
)
# No retries and no outlier detection: a request sent to a dead endpoint fails, so every
# success below shows the dead endpoint was not picked.
ORDERS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: orders
spec:
  hosts: [orders]
  http:
    - name: all
      retries: {attempts: 0}
      route:
        - destination: {host: orders}
"""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    m = Mesh(tmp_path, CONFIG)
    mesh_yaml = m.config / "mesh.yaml"
    text = mesh_yaml.read_text()
    for version in ("v1", "v2"):
        line = (f'        command: ["python3", "apps/shop.py", "--service", "orders", '
                f'"--version", "{version}"]\n')
        assert text.count(line) == 1
        text = text.replace(line, line + PROBE)
    mesh_yaml.write_text(text)
    (m.config / "orders.yaml").write_text(ORDERS)
    yield m
    m.close()


def _shop(mesh: Mesh, version: str, port: int) -> Proc:
    argv = [sys.executable, str(SHOP), "--service", "orders", "--version", version,
            "--host", "127.0.0.1", "--port", str(port)]
    p = Proc(argv, mesh.env, mesh.tmp / f"app-orders-{version}-{port}.log").start()
    mesh.procs.append(p)
    wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200,
               what=f"orders {version} app on {port}")
    return p


def _endpoint(mesh: Mesh, proxy_id: str) -> dict[str, Any]:
    eps = mesh.api("GET", "/v1/catalog")["endpoints"]
    return next(e for e in eps if e["id"] == proxy_id)


def _orders_endpoints(front: dict[str, Any]) -> list[str]:
    dump = json.loads(http_get(f"http://127.0.0.1:{front['admin']}/config_dump")[1])
    return sorted(dump["services"]["orders"]["clusters"]["None"])


def _versions(local: int, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        status, body, _ = http_get(f"http://127.0.0.1:{local}/")
        seen[json.loads(body)["version"] if status == 200 else f"HTTP {status}"] += 1
    return seen


def test_dead_app_leaves_the_pool_and_comes_back(mesh: Mesh) -> None:
    mesh.start_registry()
    app_port = free_port()
    app1 = _shop(mesh, "v1", app_port)
    _, port2 = mesh.app("orders", "v2")
    px1 = mesh.proxy("orders", "v1", app_port=app_port)
    px2 = mesh.proxy("orders", "v2", app_port=port2)
    local = free_port()
    front = mesh.proxy("frontend", "v1", upstreams={"orders:8080": local})
    both = sorted(f"127.0.0.1:{px['inbound']}" for px in (px1, px2))
    wait_until(lambda: _orders_endpoints(front) == both, what="both orders endpoints")
    wait_until(lambda: _versions(local, 20).keys() == {"v1", "v2"}, what="both versions answer")

    app1.stop(signal.SIGKILL)
    why = f"app: connect refused on 127.0.0.1:{app_port} (3 failures)"
    wait_until(lambda: _endpoint(mesh, px1["id"])["health"] == "unhealthy", timeout=20,
               what="orders v1 unhealthy in the catalog")
    assert _endpoint(mesh, px1["id"])["reason"] == why
    assert _endpoint(mesh, px2["id"])["health"] == "healthy"
    only_v2 = [f"127.0.0.1:{px2['inbound']}"]
    wait_until(lambda: _orders_endpoints(front) == only_v2, what="frontend drops orders v1")
    assert _versions(local, 40) == Counter({"v2": 40})

    out = subprocess.run(
        [sys.executable, "-m", "meshctl", "status", "--output", "json"],
        env={**mesh.env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    shown = {e["id"]: e for e in json.loads(out.stdout)["endpoints"]}
    assert (shown[px1["id"]]["health"], shown[px1["id"]]["reason"]) == ("unhealthy", why)
    text = subprocess.run(
        [sys.executable, "-m", "meshctl", "status"], env={**mesh.env, "COLUMNS": "250"},
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout
    assert f"unhealthy {why}" in text, text

    _shop(mesh, "v1", app_port)  # the app comes back on its port
    wait_until(lambda: _endpoint(mesh, px1["id"])["health"] == "healthy", timeout=20,
               what="orders v1 healthy again")
    assert _endpoint(mesh, px1["id"])["reason"] == ""
    wait_until(lambda: _orders_endpoints(front) == both, what="frontend picks orders v1 again")
    wait_until(lambda: _versions(local, 20).keys() == {"v1", "v2"}, what="v1 answers again")

    # A reason that is not a string is a 400, and the endpoint stays as it was.
    with pytest.raises(urllib.error.HTTPError) as refused:
        mesh.api("PUT", f"/v1/endpoints/{px2['id']}", {"health": "unhealthy", "reason": 5})
    assert refused.value.code == 400
    assert b"field `reason` must be a string" in refused.value.read()
    assert (_endpoint(mesh, px2["id"])["health"], _endpoint(mesh, px2["id"])["reason"]) == (
        "healthy", "")
