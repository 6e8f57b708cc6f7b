"""Linkerd retry budget: 20 % of requests plus 10 retries/s over 10 s."""

from __future__ import annotations

import pytest

from proxy.policy.budget import RetryBudget
from proxy.policy.clock import FakeClock


def drain(budget: RetryBudget) -> int:
    allowed = 0
    while budget.try_withdraw():
        allowed += 1
    return allowed


def test_reserve_alone_allows_min_per_s_times_ttl() -> None:
    budget = RetryBudget(clock=FakeClock())
    assert drain(budget) == 100  # 10/s x 10 s
    assert budget.exhausted == 1
    assert not budget.try_withdraw()
    assert budget.exhausted == 2


def test_deposits_add_twenty_percent() -> None:
    clock = FakeClock()
    budget = RetryBudget(min_per_s=0, clock=clock)
    for _ in range(1000):
        budget.deposit()
    assert drain(budget) == 200
    assert budget.withdrawn == 200
    assert budget.exhausted == 1


def test_deposits_expire_after_ttl() -> None:
    clock = FakeClock()
    budget = RetryBudget(min_per_s=0, clock=clock)
    for _ in range(50):
        budget.deposit()
    clock.advance(5.0)
    assert budget.balance() == 50
    clock.advance(6.0)  # 11 s after the deposits: out of the window
    assert budget.balance() == 0
    assert not budget.try_withdraw()


def test_withdrawals_expire_so_the_reserve_comes_back() -> None:
    clock = FakeClock()
    budget = RetryBudget(clock=clock)
    assert drain(budget) == 100
    clock.advance(5.0)
    assert not budget.try_withdraw()
    clock.advance(6.0)
    assert drain(budget) == 100


def test_sliding_window_keeps_recent_slots() -> None:
    clock = FakeClock()
    budget = RetryBudget(min_per_s=0, ttl_s=10, clock=clock)
    for _ in range(10):
        budget.deposit()  # slot at t=0
    clock.advance(6.0)
    for _ in range(10):
        budget.deposit()  # slot at t=6
    clock.advance(5.0)  # t=11: the first slot expired, the second has not
    assert budget.balance() == 10
    assert drain(budget) == 2


def test_long_idle_clears_everything() -> None:
    clock = FakeClock()
    budget = RetryBudget(min_per_s=1, clock=clock)
    for _ in range(100):
        budget.deposit()
    clock.advance(3600.0)
    assert budget.balance() == 1 * 10 * 5


@pytest.mark.parametrize(("ratio", "ttl"), [(-0.1, 10.0), (0.2, 0.5), (0.2, 61.0)])
def test_invalid(ratio: float, ttl: float) -> None:
    with pytest.raises(ValueError):
        RetryBudget(ratio=ratio, ttl_s=ttl, clock=FakeClock())
