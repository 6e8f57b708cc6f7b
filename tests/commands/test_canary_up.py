"""`meshctl route canary` end to end on the example shop started by `meshctl up` (local
runtime): a healthy v2 is promoted through every step, even with the CLI killed and the
registry restarted mid-way; a failing v2 (`/admin/fail`) is rolled back after --failures
checks and then gets no request at all. Intervals of 1 s (docs/canary.md has real ones)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from common.proxies import local_proxies
from meshctl.client import RegistryClient
from meshctl.observe.cli import scrape
from registry.canary.metrics import subset_traffic
from registry.config import load_directory
from tests.commands.support import (
    MESHCTL,
    REPO,
    Cli,
    copy_example,
    free_port,
    mesh_home,
    wait_until,
)

pytestmark = pytest.mark.slow
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
STEPS = "30,40,50,60,70,80,90,100"  # enough for the CLI and the registry to die mid-way


class Traffic:
    """Requests to the frontend (which calls orders) from four threads until stopped."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.stop = threading.Event()
        self.sent = 0
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(4)]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        for _ in range(200_000):  # bounded; stopped long before
            if self.stop.is_set():
                return
            try:
                with OPENER.open(self.url, timeout=5) as r:
                    r.read()
            except OSError:
                pass
            self.sent += 1

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


@contextmanager
def running_shop(tmp: Path, edit: Callable[[Path], None] | None = None
                 ) -> Iterator[tuple[Cli, Any, Path, Traffic]]:
    """The example shop under `meshctl up` (local runtime, explicit mode), with traffic;
    `edit` changes its config directory first."""
    config = copy_example(tmp)
    if edit is not None:
        edit(config)
    with mesh_home() as cli:
        cli.env["MESH_FORCE_EXPLICIT"] = "1"
        up = cli.json("up", str(config), "--runtime", "local", "--timeout", "30",
                      "--monitor-port", str(free_port()))  # fmt: skip
        traffic = Traffic(_app_port(up, "frontend-v1"))
        try:
            yield cli, up, config, traffic
        finally:
            traffic.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, Any, Path, Traffic]]:
    with running_shop(tmp_path_factory.mktemp("shop")) as running:
        yield running


def _app_port(up: Any, workload: str) -> int:
    w = next(w for w in up["workloads"] if w["name"].endswith(workload))
    return int(w["ports"]["app:8080"])


def _canary(cli: Cli) -> dict[str, Any]:
    """The canary of orders, as the registry has it (polled: the API, not a subprocess)."""
    (c,) = RegistryClient.from_home(cli.home).call("GET", "/v1/canaries")["canaries"]
    return dict(c)


def _weights(config: Path) -> dict[str, int]:
    cfg = load_directory(config).config
    assert cfg is not None
    vs = cfg.virtual_service_for("orders")
    assert vs is not None
    return {d.destination.subset or "": d.weight for d in vs.http[0].route}


def _v2_requests(cli: Cli) -> float:
    """Requests orders v2's own proxy has served since it started."""
    proxies = [p for p in local_proxies(cli.home) if p.workload == "orders-v2"]
    assert proxies, "no proxy of orders-v2"
    return subset_traffic({}, scrape(proxies), "orders", "v2").requests


def _all_run(cli: Cli, config: Path) -> bool:
    """The registry publishes the directory as it is now, and every proxy ACKed it."""
    cfg = load_directory(config).config
    st = RegistryClient.from_home(cli.home).call("GET", "/v1/status")
    return cfg is not None and st["config_digest"] == cfg.digest and all(
        p["acked_version"] == st["config_version"] for p in st["proxies"] if p["connected"])


def test_healthy_v2_is_promoted_through_every_step(shop: tuple[Cli, Any, Path, Traffic]) -> None:
    cli, _, config, _ = shop
    comment = "# Canary: 90 % of orders traffic to v1"
    assert comment in (config / "orders.yaml").read_text()
    # --watch follows it; then the CLI is killed and the registry too: the canary goes on.
    watcher = subprocess.Popen(
        [*MESHCTL, "route", "canary", "orders", "--to", "v2", "--steps", STEPS,
         "--interval", "1s", "--min-requests", "3", "--p99", "5s", "--success-rate", "95",
         "--failures", "5", "--watch", "--output", "json"],
        env=cli.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        first = json.loads(watcher.stdout.readline())  # the `started` event
        assert first["kind"] == "started", first
        wait_until(lambda: _canary(cli)["step"] >= 1, 30, "the canary's first passing check")
    finally:
        watcher.kill()
        watcher.wait(10)
    registry = json.loads((cli.home / "registry" / "endpoint.json").read_text())["pid"]
    wait_until(lambda: _canary(cli)["step"] >= 2, 30, "a second passing check")
    os.kill(registry, signal.SIGKILL)  # the supervisor starts it again; it resumes
    c = wait_until(lambda: (c := _canary(cli))["phase"] != "progressing" and c, 90,
                   "the canary to end")
    assert c["phase"] == "promoted", c["events"]
    # A loaded machine may starve an interval (too few requests: a failed check), which
    # --failures 5 tolerates; each step was passed on real traffic.
    assert json.loads((cli.home / "registry" / "endpoint.json").read_text())["pid"] != registry
    kinds = [e["kind"] for e in c["events"]]
    assert kinds[0] == "started" and kinds[-1] == "promoted" and "resumed" in kinds
    steps = [e["message"] for e in c["events"] if e["kind"] == "step"]
    assert [s.split("; ")[1].split(",")[0] for s in steps] == [
        f"v2 {w}%" for w in STEPS.split(",")[1:]]
    assert cli.json("route", "canary", "status", "orders")["canaries"][0]["phase"] == "promoted"
    passed = [ch for ch in c["checks"] if ch["ok"]]
    assert [ch["weight"] for ch in passed] == [int(w) for w in STEPS.split(",")]
    assert all(ch["canary"]["requests"] >= 3 for ch in passed)
    assert _weights(config) == {"v1": 0, "v2": 100}
    assert comment in (config / "orders.yaml").read_text()  # edited in place
    log = (cli.home / "logs" / "registry.log").read_text()
    assert "canary orders: v2 promoted to 100%: every step passed" in log


def test_failing_v2_is_rolled_back_and_then_gets_nothing(
        shop: tuple[Cli, Any, Path, Traffic]) -> None:
    cli, up, config, traffic = shop
    cli.run("route", "set-weight", "orders", "v1=100", "v2=0", "--config", str(config))
    req = urllib.request.Request(
        f"http://127.0.0.1:{_app_port(up, 'orders-v2')}/admin/fail?status=503&count=-1",
        method="POST")
    with OPENER.open(req, timeout=5) as r:
        r.read()
    out = cli.json("route", "canary", "orders", "--to", "v2", "--steps", "30,60,100",
                   "--interval", "1s", "--min-requests", "3", "--failures", "2")
    assert out["canaries"][0]["phase"] == "progressing"
    c = wait_until(lambda: (c := _canary(cli))["phase"] != "progressing" and c, 60,
                   "the canary to end")
    assert c["phase"] == "rolled_back", c["events"]
    # Rolled back at the --failures-th check: every check failed, none passed before.
    assert [ch["ok"] for ch in c["checks"][-2:]] == [False, False] and c["failed"] == 2
    assert c["step"] == 0 and c["events"][-1]["kind"] == "rolled-back"
    assert "success rate" in c["events"][-1]["message"]
    assert _weights(config) == {"v1": 100, "v2": 0}
    log = (cli.home / "logs" / "registry.log").read_text()
    assert "canary orders: rolled back to v1 100% (v2 0%): 2 failed checks" in log
    # Once every proxy runs the rolled-back config, v2 serves nothing more.
    wait_until(lambda: _all_run(cli, config), 30, "every proxy to run the rollback")
    sent = traffic.sent  # requests in flight at the switch keep the config they began with
    wait_until(lambda: traffic.sent >= sent + 10, 60, "the requests in flight to end")
    before, sent = _v2_requests(cli), traffic.sent
    wait_until(lambda: traffic.sent >= sent + 100, 60, "100 more requests through the shop")
    assert _v2_requests(cli) == before


def test_a_file_edit_starts_a_declared_canary(shop: tuple[Cli, Any, Path, Traffic]) -> None:
    cli, up, config, _ = shop
    req = urllib.request.Request(
        f"http://127.0.0.1:{_app_port(up, 'orders-v2')}/admin/reset", method="POST")
    with OPENER.open(req, timeout=5) as r:
        r.read()
    assert _weights(config) == {"v1": 100, "v2": 0}
    (config / "canary.yaml").write_text("""\
apiVersion: meshctl.dev/v1alpha1
kind: Canary
metadata:
  name: orders
spec:
  service: orders
  to: v2
  analysis: {steps: [50, 100], interval: 1s, minRequests: 3, successRate: 95, p99: 5s}
""")
    c = wait_until(lambda: (c := _canary(cli))["origin"].startswith("Canary orders") and
                   c["phase"] != "progressing" and c, 60, "the declared canary to end")
    assert c["origin"] == "Canary orders (canary.yaml:1:1)"
    assert c["phase"] == "promoted", [e["message"] for e in c["events"]]
    assert _weights(config) == {"v1": 0, "v2": 100}
