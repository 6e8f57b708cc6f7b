"""Circuit-breaker gauges: overflow per kind, release restores capacity."""

from __future__ import annotations

import pytest

from proxy.policy.limits import Gauges, PoolLimits


def test_envoy_defaults() -> None:
    assert PoolLimits() == PoolLimits(1024, 1024, 1024, 3)


def test_requests_overflow_and_recover() -> None:
    g = Gauges(PoolLimits(max_requests=2))
    assert g.try_acquire_request() and g.try_acquire_request()
    assert not g.try_acquire_request()
    assert not g.try_acquire_request()
    assert g.overflow == {"connections": 0, "pending": 0, "requests": 2, "retries": 0}
    g.release_request()
    assert g.try_acquire_request()
    assert g.in_flight["requests"] == 2


def test_retries_default_to_three_concurrent() -> None:
    g = Gauges()
    assert all(g.try_acquire_retry() for _ in range(3))
    assert not g.try_acquire_retry()
    assert g.overflow["retries"] == 1
    for _ in range(3):
        g.release_retry()
    assert g.in_flight["retries"] == 0


@pytest.mark.parametrize("kind", ["connection", "pending", "request", "retry"])
def test_each_kind_is_independent(kind: str) -> None:
    g = Gauges(PoolLimits(1, 1, 1, 1))
    acquire = getattr(g, f"try_acquire_{kind}")
    release = getattr(g, f"release_{kind}")
    assert acquire()
    assert not acquire()
    assert sum(g.overflow.values()) == 1
    release()
    with pytest.raises(RuntimeError, match="without a matching acquire"):
        release()


def test_zero_limit_refuses_everything() -> None:
    g = Gauges(PoolLimits(max_pending=0))
    assert not g.try_acquire_pending()
    assert g.overflow["pending"] == 1


def test_negative_limit_rejected() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        PoolLimits(max_connections=-1)
