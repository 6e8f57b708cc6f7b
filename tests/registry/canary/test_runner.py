"""The canary runner on a real config directory, with a fake clock and fed metrics: the
weights it writes, its state file, a resume, the canaries the config declares."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.promparse import Sample
from common.stats import Scrape
from registry.canary.runner import CanaryError, Runner
from registry.config import load_directory
from registry.config.model import CanaryPolicy, MeshConfig
from registry.server.catalog import Endpoint
from tests.example import CONFIG as EXAMPLE

POLICY = CanaryPolicy(steps=(10, 50, 100), interval_s=1.0, min_requests=5, failures=2)
DECLARED = """\
# declared
apiVersion: meshctl.dev/v1alpha1
kind: Canary
metadata: {name: orders}
spec:
  service: orders
  to: v2
  analysis: {steps: [50, 100], interval: 1s, minRequests: 5, failures: 2}
"""


class Mesh:
    """A config directory, a catalog, counters per version and a clock, for one Runner."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.now = 1000.0
        self.ok: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.versions: list[str] = ["v1", "v2"]

    def config(self) -> MeshConfig | None:
        return load_directory(self.dir).config

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(f"orders-{v}", "orders", "127.0.0.1", 1, {"version": v, "app": "orders"})
                for v in self.versions]

    def scrape(self, service: str) -> Scrape:
        samples = []
        for v in ("v1", "v2"):
            for code, n in (("200", self.ok[v]), ("503", self.failed[v])):
                labels = {"reporter": "destination", "destination_service_name": service,
                          "destination_version": v, "response_code": code}
                samples.append(Sample("istio_requests_total", labels, float(n)))
        return {"p": samples}

    def runner(self, state: Path) -> Runner:
        return Runner(state, self.dir, self.config, self.endpoints, self.scrape,
                      clock=lambda: self.now)

    def weights(self) -> dict[str, int]:
        cfg = self.config()
        assert cfg is not None
        vs = cfg.virtual_service_for("orders")
        assert vs is not None
        return {d.destination.subset or "": d.weight for d in vs.http[0].route}

    def interval(self, runner: Runner, ok: int = 50, failed: int = 0) -> None:
        self.ok["v1"] += ok
        self.ok["v2"] += ok
        self.failed["v2"] += failed
        self.now += 1.0
        asyncio.run(runner.tick())


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    shutil.copytree(EXAMPLE, tmp_path / "mesh")
    yield Mesh(tmp_path / "mesh")


def test_promotion_writes_each_step_in_place(mesh: Mesh, tmp_path: Path) -> None:
    r = mesh.runner(tmp_path / "canaries.json")
    asyncio.run(r.begin("orders", "v2", None, None, POLICY))
    assert mesh.weights() == {"v1": 90, "v2": 10}
    mesh.interval(r)
    assert mesh.weights() == {"v1": 50, "v2": 50}
    mesh.interval(r)
    mesh.interval(r)
    assert mesh.weights() == {"v1": 0, "v2": 100}
    assert r.canaries["orders"].phase == "promoted"
    assert "# Canary: 90 % of orders traffic to v1" in (mesh.dir / "orders.yaml").read_text()
    saved = json.loads((tmp_path / "canaries.json").read_text())
    assert saved["canaries"]["orders"]["phase"] == "promoted"


def test_failing_canary_rolls_back(mesh: Mesh, tmp_path: Path) -> None:
    r = mesh.runner(tmp_path / "canaries.json")
    asyncio.run(r.begin("orders", "v2", "v1", None, POLICY))
    mesh.interval(r, ok=10, failed=10)
    assert mesh.weights() == {"v1": 90, "v2": 10} and r.canaries["orders"].failed == 1
    mesh.interval(r, ok=0, failed=0)  # no traffic at all: a failed check too
    assert mesh.weights() == {"v1": 100, "v2": 0}
    c = r.canaries["orders"]
    assert c.phase == "rolled_back" and "too few requests" in c.events[-1].message


def test_a_new_runner_resumes_from_the_state_file(mesh: Mesh, tmp_path: Path) -> None:
    first = mesh.runner(tmp_path / "canaries.json")
    asyncio.run(first.begin("orders", "v2", None, None, POLICY))
    mesh.interval(first)
    assert mesh.weights()["v2"] == 50
    second = mesh.runner(tmp_path / "canaries.json")  # the registry restarted
    second.load()
    assert second.canaries["orders"].events[-1].kind == "resumed"
    mesh.interval(second)  # the resumed interval starts with its first tick
    mesh.interval(second)
    mesh.interval(second)
    assert second.canaries["orders"].phase == "promoted" and mesh.weights()["v2"] == 100


def test_refusals_change_nothing(mesh: Mesh, tmp_path: Path) -> None:
    r = mesh.runner(tmp_path / "canaries.json")
    raw = (mesh.dir / "orders.yaml").read_bytes()
    for args, message in [
        (("orders", "v3", None), "unknown subset `v3`"),
        (("payments", "v2", None), "no VirtualService routes `payments`"),
        (("orders", "v2", "v2"), "--from and --to are both `v2`"),
    ]:
        with pytest.raises(CanaryError, match=message):
            asyncio.run(r.begin(*args, None, POLICY))
    with pytest.raises(CanaryError, match="steps"):
        asyncio.run(r.begin("orders", "v2", None, None, CanaryPolicy(steps=(50, 10))))
    assert (mesh.dir / "orders.yaml").read_bytes() == raw and not r.canaries
    asyncio.run(r.begin("orders", "v2", None, None, POLICY))
    with pytest.raises(CanaryError, match="in progress"):
        asyncio.run(r.begin("orders", "v2", None, None, POLICY))
    asyncio.run(r.abort("orders"))
    assert mesh.weights() == {"v1": 100, "v2": 0}
    with pytest.raises(CanaryError, match="no canary of `orders` is in progress"):
        asyncio.run(r.promote("orders"))


def test_a_declared_canary_starts_once_its_version_registers(mesh: Mesh, tmp_path: Path) -> None:
    r = mesh.runner(tmp_path / "canaries.json")
    mesh.versions = ["v1"]
    (mesh.dir / "canary.yaml").write_text(DECLARED)
    asyncio.run(r.tick())
    assert not r.canaries  # v2 has no endpoint yet
    mesh.versions = ["v1", "v2"]
    asyncio.run(r.tick())
    c = r.canaries["orders"]
    assert c.origin.startswith("Canary orders (canary.yaml:2:1)") and c.weight == 50
    mesh.interval(r)
    mesh.interval(r)
    assert r.canaries["orders"].phase == "promoted"
    mesh.interval(r)
    assert r.canaries["orders"].events[0] == c.events[0]  # not started again
    # An edit of the resource starts it again (here: back to v1).
    (mesh.dir / "canary.yaml").write_text(DECLARED.replace("to: v2", "to: v1"))
    mesh.interval(r)
    assert r.canaries["orders"].canary == "v1" and r.canaries["orders"].baseline == "v2"


def test_without_to_a_new_version_in_the_catalog_starts_it(mesh: Mesh, tmp_path: Path) -> None:
    r = mesh.runner(tmp_path / "canaries.json")
    (mesh.dir / "canary.yaml").write_text(DECLARED.replace("  to: v2\n", ""))
    mesh.versions = ["v1"]
    asyncio.run(r.tick())
    assert not r.canaries  # v1 is the primary: nothing new
    mesh.versions = ["v1", "v2"]
    asyncio.run(r.tick())
    assert r.canaries["orders"].canary == "v2" and r.canaries["orders"].baseline == "v1"
    asyncio.run(r.promote("orders"))
    mesh.interval(r)
    assert r.canaries["orders"].phase == "promoted"  # v1 is not new: no canary back to it
