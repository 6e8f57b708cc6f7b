"""Static stability and zero-downtime change: traffic keeps flowing while the registry dies,
while the config changes under load, and while certificates renew."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.example import CONFIG
from tests.integration.harness import (
    Mesh,
    free_port,
    http_get,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    m = Mesh(tmp_path, CONFIG)
    yield m
    m.close()


def _topology(mesh: Mesh) -> tuple[int, dict[str, object]]:
    for version in ("v1", "v2"):
        _, port = mesh.app("orders", version)
        mesh.proxy("orders", version, app_port=port)
    local = free_port()
    front = mesh.proxy("frontend", "v1", upstreams={"orders:8080": local})
    wait_until(lambda: len(mesh.api("GET", "/v1/catalog")["endpoints"]) == 3, what="endpoints")
    wait_until(lambda: http_get(f"http://127.0.0.1:{local}/")[0] == 200, what="route")
    return local, front


class Load:
    """Keep-alive clients sending requests until stopped (bounded by count and time)."""

    def __init__(
        self, port: int, clients: int = 2, max_requests: int = 20_000, max_seconds: float = 90.0
    ) -> None:
        self.port = port
        self.outcomes: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._budget = max_requests
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            with self._lock:
                if self._budget <= 0:
                    return
                self._budget -= 1
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                key = str(resp.status)
                if resp.status == 200:
                    with self._lock:
                        self.versions[json.loads(body)["version"]] += 1
            except (OSError, http.client.HTTPException) as exc:
                key = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            with self._lock:
                self.outcomes[key] += 1
        conn.close()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.outcomes.values())


def _admin(px: dict[str, object], path: str) -> dict[str, object]:
    return json.loads(http_get(f"http://127.0.0.1:{px['admin']}{path}")[1])


def test_registry_killed_traffic_continues_and_proxies_catch_up(mesh: Mesh) -> None:
    mesh.start_registry()
    local, front = _topology(mesh)
    assert mesh.registry is not None
    with Load(local) as load:
        wait_until(lambda: load.total > 50, what="load running")
        mesh.registry.stop(signal.SIGKILL)
        wait_until(
            lambda: not _admin(front, "/config_dump")["registry_connected"],
            what="proxy notices the outage",
        )
        seen = load.total
        wait_until(lambda: load.total > seen + 100, what="traffic during the outage")
        # The registry comes back with its state; proxies reconnect and get new config.
        mesh.start_registry()
        wait_until(
            lambda: _admin(front, "/config_dump")["registry_connected"],
            timeout=30,
            what="proxy reconnects",
        )
        vs = mesh.config / "orders.yaml"
        vs.write_text(
            vs.read_text().replace("weight: 90", "weight: 0").replace("weight: 10", "weight: 100")
        )
        version = mesh.api("GET", "/v1/status")
        wait_until(
            lambda: (
                _admin(front, "/config_dump")["config_version"] > version["config_version"] - 1
                and json.loads(http_get(f"http://127.0.0.1:{local}/")[1])["version"] == "v2"
            ),
            timeout=30,
            what="new config applied after the outage",
        )
    assert set(load.outcomes) == {"200"}, load.outcomes
    # Restarted while the proxies run, the registry must stop on SIGTERM with them connected.
    assert mesh.registry is not None
    mesh.registry.stop()


def test_config_swap_every_half_second_under_load_fails_nothing(mesh: Mesh) -> None:
    mesh.start_registry()
    local, front = _topology(mesh)
    vs = mesh.config / "orders.yaml"
    original = vs.read_text()
    flipped = original.replace("weight: 90", "weight: 30").replace("weight: 10", "weight: 70")
    start_version = _admin(front, "/config_dump")["config_version"]
    with Load(local, clients=3) as load:
        for i in range(12):
            vs.write_text(flipped if i % 2 == 0 else original)
            time.sleep(0.5)
    assert set(load.outcomes) == {"200"}, load.outcomes
    assert load.total > 100
    assert int(_admin(front, "/config_dump")["config_version"]) >= int(start_version) + 6
    assert load.versions["v1"] > 0 and load.versions["v2"] > 0


@pytest.mark.timeout(240)  # load for up to 80 s past a renewal: longer than the default
def test_certificate_renewal_under_load_fails_nothing(mesh: Mesh) -> None:
    mesh_yaml = mesh.config / "mesh.yaml"
    mesh_yaml.write_text(
        mesh_yaml.read_text().replace("certificateTTL: 24h", "certificateTTL: 60s")
    )
    mesh.start_registry()
    local, front = _topology(mesh)
    first = _admin(front, "/certs")
    with Load(local, clients=2, max_seconds=80) as load:
        # Renewal happens at about half the lifetime (27-30 s for 60 s).
        wait_until(
            lambda: int(_admin(front, "/certs")["renewals"]) >= 1,
            timeout=60,
            what="certificate renewed",
        )
        seen = load.total
        wait_until(lambda: load.total > seen + 100, what="traffic after renewal")
    renewed = _admin(front, "/certs")
    assert renewed["not_after"] > first["not_after"]
    assert renewed["certificate"] != first["certificate"]
    assert set(load.outcomes) == {"200"}, load.outcomes
