"""Faults under load: a sidecar (the destination's proxy) restarted with graceful drain on
SIGTERM, while a bounded load runs through the mesh with the seed's retry policy."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.chaos.support import Load, Service, record, seed_mesh
from tests.integration.harness import Mesh, wait_until

__all__ = ["seed_mesh"]
# Longer than the default per-test timeout (pyproject.toml): load runs of up to 90 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_sidecar_restart_with_graceful_drain_fails_no_idempotent_request(
    seed_mesh: Mesh, record_property: Any
) -> None:
    """EXPECTED FAILED: 0. Two replicas; r0's proxy gets SIGTERM while r0 answers slowly (so
    requests are in flight at that moment), drains and exits 0 within its drain bound; a new
    proxy with a new token joins for the same app, and traffic comes back to it."""
    svc = Service.start(seed_mesh, 2)
    r0 = svc.replicas[0]
    svc.app_admin(r0, "slow?ms=200&count=-1")  # in flight during the drain, under perTryTimeout
    with Load(svc.local, clients=3, max_seconds=90) as load:
        load.wait_more(200)
        proc = r0.proxy["proc"]
        proc.stop(signal.SIGTERM, timeout=30)
        drained_rc = proc.p.returncode
        served_during = load.total
        svc.app_admin(r0, "reset")
        load.wait_more(300)
        new_px = seed_mesh.proxy("backend", "r0", app_port=r0.app_port)
        svc.wait_endpoints(2)
        before = load.versions["r0"]
        wait_until(lambda: load.versions["r0"] > before + 20, timeout=45,
                   what=f"traffic reaches the restarted sidecar ({load.versions})")
        load.wait_more(300)
    record(record_property, requests=load.total, failed=load.failed,
           outcomes=dict(load.outcomes), drain_exit=drained_rc)
    assert drained_rc == 0, "the proxy did not exit cleanly within its drain bound"
    assert served_during > 0 and new_px["proc"].p.poll() is None
    assert load.failed == 0, load.outcomes
