"""Outlier detection: ejection at the threshold, the multiplier, sweeps, max percent, panic."""

from __future__ import annotations

import pytest

from proxy.policy.clock import FakeClock
from proxy.policy.outlier import OutlierDetector, OutlierParams

HOSTS = [f"10.0.0.{i}:8080" for i in range(1, 11)]  # 10 hosts: 10 % is one host


def fail(d: OutlierDetector, host: str, n: int, status: int | None = 503) -> None:
    for _ in range(n):
        d.report(host, status, local_origin_failure=status is None)


def test_ejects_immediately_at_threshold() -> None:
    clock = FakeClock()
    d = OutlierDetector(OutlierParams(), HOSTS, clock)
    fail(d, HOSTS[0], 4)
    assert not d.is_ejected(HOSTS[0])
    fail(d, HOSTS[0], 1)
    assert d.is_ejected(HOSTS[0])  # no sweep has run yet
    assert HOSTS[0] not in d.healthy_hosts()
    assert d.available_hosts() == tuple(HOSTS[1:])
    assert d.ejections_total == 1 and d.ejections_active == 1


def test_a_success_resets_the_count() -> None:
    d = OutlierDetector(OutlierParams(), HOSTS, FakeClock())
    fail(d, HOSTS[0], 4)
    d.report(HOSTS[0], 200)
    fail(d, HOSTS[0], 4)
    assert not d.is_ejected(HOSTS[0])
    d.report(HOSTS[0], 404)  # a 4xx is a success for outlier detection
    fail(d, HOSTS[0], 4)
    assert not d.is_ejected(HOSTS[0])


def test_local_origin_failures_count_as_5xx() -> None:
    d = OutlierDetector(OutlierParams(), HOSTS, FakeClock())
    fail(d, HOSTS[0], 2, status=None)  # connect failures
    fail(d, HOSTS[0], 3, status=500)
    assert d.is_ejected(HOSTS[0])


def test_gateway_errors_detector() -> None:
    params = OutlierParams(consecutive_5xx=None, consecutive_gateway=3)
    d = OutlierDetector(params, HOSTS, FakeClock())
    fail(d, HOSTS[0], 5, status=500)  # not gateway errors, and the 5xx detector is off
    assert not d.is_ejected(HOSTS[0])
    fail(d, HOSTS[0], 2, status=502)
    d.report(HOSTS[0], 500)  # a non-gateway 5xx resets the gateway count
    fail(d, HOSTS[0], 2, status=504)
    assert not d.is_ejected(HOSTS[0])
    fail(d, HOSTS[0], 1, status=None)  # a connect failure is a gateway error too
    assert d.is_ejected(HOSTS[0])


def test_unejected_by_the_sweep_after_the_ejection_time() -> None:
    clock = FakeClock()
    d = OutlierDetector(OutlierParams(), HOSTS, clock)
    clock.advance(5.0)
    fail(d, HOSTS[0], 5)  # ejected at t=5 for 30 s
    clock.advance(30.0)  # t=35: sweeps ran at 10, 20, 30 -- 30 - 5 < 30
    assert d.is_ejected(HOSTS[0])
    clock.advance(5.0)  # t=40: sweep at 40, 35 s elapsed
    assert not d.is_ejected(HOSTS[0])
    assert d.available_hosts() == tuple(HOSTS)


def test_multiplier_30_60_90_then_decays() -> None:
    clock = FakeClock()
    d = OutlierDetector(OutlierParams(), HOSTS, clock)
    h = HOSTS[0]
    for expected in (30.0, 60.0, 90.0):
        fail(d, h, 5)  # ejected just after a sweep
        assert d.is_ejected(h)
        clock.advance(expected - 10.0)
        assert d.is_ejected(h), expected
        clock.advance(10.0)
        assert not d.is_ejected(h), expected
    assert d.ejection_multiplier(h) == 3
    # Healthy for three more intervals: the multiplier drops by one per interval.
    clock.advance(30.0)
    assert d.ejection_multiplier(h) == 0
    fail(d, h, 5)
    clock.advance(30.0)
    assert not d.is_ejected(h)  # back to the base time


def test_ejection_time_capped_by_max() -> None:
    clock = FakeClock()
    d = OutlierDetector(OutlierParams(max_ejection_s=60.0), HOSTS, clock)
    h = HOSTS[0]
    for _ in range(4):
        fail(d, h, 5)
        clock.advance(60.0)
        assert not d.is_ejected(h)


def test_max_ejection_percent() -> None:
    d = OutlierDetector(OutlierParams(max_ejection_percent=20), HOSTS, FakeClock())
    for h in HOSTS[:3]:
        fail(d, h, 5)
    assert d.ejections_active == 2
    assert not d.is_ejected(HOSTS[2])
    assert d.ejections_overflow == 1


def test_small_cluster_under_ten_percent_ejects_nothing_by_default() -> None:
    # Envoy >= 1.31: (ejected + 1) / hosts must stay <= max_ejection_percent.
    d = OutlierDetector(OutlierParams(), HOSTS[:2], FakeClock())
    fail(d, HOSTS[0], 5)
    assert not d.is_ejected(HOSTS[0])
    assert d.ejections_overflow == 1


def test_always_eject_one_host() -> None:
    d = OutlierDetector(OutlierParams(always_eject_one_host=True), HOSTS[:2], FakeClock())
    fail(d, HOSTS[0], 5)
    fail(d, HOSTS[1], 5)
    assert d.is_ejected(HOSTS[0])
    assert not d.is_ejected(HOSTS[1])  # only the first one
    assert d.available_hosts() == (HOSTS[1],)


def test_panic_balances_over_all_hosts() -> None:
    params = OutlierParams(max_ejection_percent=100, min_health_percent=70)
    d = OutlierDetector(params, HOSTS, FakeClock())
    for h in HOSTS[:3]:
        fail(d, h, 5)
    assert not d.in_panic  # 70 % healthy
    assert d.available_hosts() == tuple(HOSTS[3:])
    fail(d, HOSTS[3], 5)  # 60 % < 70 %
    assert d.in_panic
    assert d.available_hosts() == tuple(HOSTS)
    assert d.healthy_hosts() == tuple(HOSTS[4:])
    assert d.panic == 1


def test_min_health_zero_disables_panic() -> None:
    d = OutlierDetector(OutlierParams(max_ejection_percent=100), HOSTS[:1], FakeClock())
    fail(d, HOSTS[0], 5)
    assert d.available_hosts() == ()
    assert not d.in_panic


def test_set_hosts_keeps_state_of_remaining_hosts() -> None:
    d = OutlierDetector(OutlierParams(), HOSTS, FakeClock())
    fail(d, HOSTS[0], 5)
    fail(d, HOSTS[1], 4)
    d.set_hosts([*HOSTS[:2], "10.0.0.99:8080", *HOSTS[3:]])
    assert d.is_ejected(HOSTS[0])
    d.report(HOSTS[1], 503)
    assert d.ejections_overflow == 1  # the count survived; 2 of 10 > 10 %
    d.set_hosts(HOSTS[1:])
    assert d.ejections_active == 0
    d.report(HOSTS[0], 503)  # a removed host's late report is ignored
    assert not d.is_ejected(HOSTS[0])


def test_healthy_tuple_is_not_rebuilt_per_call() -> None:
    d = OutlierDetector(OutlierParams(), HOSTS, FakeClock())
    assert d.available_hosts() is d.available_hosts()


def test_long_idle_skips_sweeps_quickly() -> None:
    clock = FakeClock()
    d = OutlierDetector(OutlierParams(), HOSTS, clock)
    fail(d, HOSTS[0], 5)
    clock.advance(86_400.0 * 365)
    assert not d.is_ejected(HOSTS[0])
    assert d.ejection_multiplier(HOSTS[0]) == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"consecutive_5xx": 0}, {"interval_s": 0}, {"max_ejection_percent": 101}],
)
def test_invalid_params(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        OutlierParams(**kwargs)  # type: ignore[arg-type]
