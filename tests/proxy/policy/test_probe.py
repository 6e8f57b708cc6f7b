"""App health verdicts: Kubernetes' thresholds and schedule, driven by a fake clock."""

from __future__ import annotations

import pytest

from proxy.policy.clock import FakeClock
from proxy.policy.probe import AppHealth, ProbeParams

TCP = ProbeParams("tcp", "127.0.0.1", 8080)
REFUSED = "connect refused on 127.0.0.1:8080"


def test_kubernetes_defaults() -> None:
    assert (TCP.period_s, TCP.timeout_s, TCP.failure_threshold, TCP.success_threshold) == (
        10.0, 1.0, 3, 1)


def test_starts_healthy_and_first_probe_is_one_period_after_start() -> None:
    clock = FakeClock()
    h = AppHealth(TCP, clock)
    assert h.health == "healthy" and h.reason == ""
    assert h.due_in() == 10.0
    clock.advance(4)
    assert h.due_in() == 6.0
    clock.advance(7)
    assert h.due_in() == 0.0  # late: run now


def test_initial_delay_adds_to_the_first_period() -> None:
    h = AppHealth(ProbeParams("tcp", "127.0.0.1", 8080, initial_delay_s=5), FakeClock())
    assert h.due_in() == 15.0


def test_unhealthy_after_failure_threshold_with_the_reason() -> None:
    clock = FakeClock()
    h = AppHealth(TCP, clock)
    assert not h.record(REFUSED)
    assert not h.record(REFUSED)
    assert h.health == "healthy"
    assert h.record(REFUSED)
    assert h.health == "unhealthy"
    assert h.reason == "app: connect refused on 127.0.0.1:8080 (3 failures)"
    # Further failures change nothing the registry holds: no report, same reason.
    assert not h.record("no answer within 1s from 127.0.0.1:8080")
    assert h.reason == "app: connect refused on 127.0.0.1:8080 (3 failures)"


def test_a_success_resets_the_failure_count() -> None:
    h = AppHealth(TCP, FakeClock())
    h.record(REFUSED)
    h.record(REFUSED)
    h.record(None)
    h.record(REFUSED)
    assert not h.record(REFUSED)
    assert h.health == "healthy"


def test_success_threshold_to_come_back() -> None:
    p = ProbeParams("http", "127.0.0.1", 8080, "/ready", failure_threshold=1, success_threshold=2)
    h = AppHealth(p, FakeClock())
    assert h.record("HTTP 503 from GET http://127.0.0.1:8080/ready")
    assert h.reason == "app: HTTP 503 from GET http://127.0.0.1:8080/ready (1 failure)"
    assert not h.record(None)
    assert h.record(REFUSED) is False  # a failure resets the success count
    assert not h.record(None)
    assert h.health == "unhealthy"
    assert h.record(None)
    assert (h.health, h.reason) == ("healthy", "")


def test_each_result_schedules_the_next_probe_one_period_later() -> None:
    clock = FakeClock()
    p = ProbeParams("tcp", "127.0.0.1", 8080, period_s=0.5, timeout_s=0.2)
    h = AppHealth(p, clock)
    clock.advance(0.7)  # the probe ran late (a busy loop)
    h.record(None)
    assert h.due_in() == 0.5


def test_a_new_probe_keeps_the_verdict_and_restarts_the_counts() -> None:
    clock = FakeClock()
    h = AppHealth(TCP, clock)
    for _ in range(3):
        h.record(REFUSED)
    h.record(REFUSED)
    faster = ProbeParams("tcp", "127.0.0.1", 9090, period_s=1)
    h.reconfigure(faster)
    assert h.health == "unhealthy" and h.failures == 0
    assert h.due_in() == 1.0  # no need to wait out the old 10 s period
    h.reconfigure(faster)  # the same probe again (every config push): nothing restarts
    assert h.due_in() == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [{"kind": "exec"}, {"period_s": 0}, {"timeout_s": -1}, {"failure_threshold": 0},
     {"success_threshold": 0}, {"initial_delay_s": -1}],
)
def test_bad_params_are_refused(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"kind": "tcp", "host": "127.0.0.1", "port": 8080}
    with pytest.raises(ValueError):
        ProbeParams(**{**base, **kwargs})  # type: ignore[arg-type]
