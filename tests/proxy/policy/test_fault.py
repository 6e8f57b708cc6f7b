"""Fault injection percentages."""

from __future__ import annotations

import random

import pytest

from proxy.policy.fault import NO_FAULT, FaultDecision, FaultParams, decide


def test_defaults_inject_nothing() -> None:
    assert decide(FaultParams(), random.Random(1)) is NO_FAULT


def test_unset_percentage_means_all_requests() -> None:
    p = FaultParams(delay_s=0.5, abort_status=503)
    assert all(decide(p, random.Random(i)) == FaultDecision(0.5, 503) for i in range(50))


def test_percentages_are_independent_floats() -> None:
    p = FaultParams(delay_s=1.0, delay_percent=10.0, abort_status=503, abort_percent=0.5)
    rng = random.Random(11)
    results = [decide(p, rng) for _ in range(100_000)]
    delays = sum(r.delay_s > 0 for r in results)
    aborts = sum(r.abort_status == 503 for r in results)
    assert 9_500 < delays < 10_500
    assert 400 < aborts < 600
    both = sum(r.delay_s > 0 and r.abort_status is not None for r in results)
    assert 20 < both < 90  # ~0.05 %: drawn independently


def test_zero_percent_never() -> None:
    p = FaultParams(delay_s=1.0, delay_percent=0.0, abort_status=500, abort_percent=0.0)
    rng = random.Random(2)
    assert all(decide(p, rng) is NO_FAULT for _ in range(1000))


@pytest.mark.parametrize(
    "kwargs", [{"delay_percent": 100.1}, {"abort_percent": -1.0}, {"abort_status": 99}]
)
def test_invalid(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="fault"):
        FaultParams(**kwargs)  # type: ignore[arg-type]
