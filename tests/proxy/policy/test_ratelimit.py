"""Token bucket: burst, refill, retry-after."""

from __future__ import annotations

import pytest

from proxy.policy.clock import FakeClock
from proxy.policy.ratelimit import TokenBucket


def test_burst_then_limited() -> None:
    clock = FakeClock()
    b = TokenBucket(rate_per_s=2.0, burst=5, clock=clock)
    assert all(b.take() for _ in range(5))
    assert not b.take()
    assert b.limited == 1


def test_refill_and_cap() -> None:
    clock = FakeClock()
    b = TokenBucket(2.0, 5, clock)
    for _ in range(5):
        b.take()
    clock.advance(0.5)  # one token
    assert b.take()
    assert not b.take()
    clock.advance(100.0)  # refill stops at burst
    assert sum(b.take() for _ in range(10)) == 5


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    clock = FakeClock()
    b = TokenBucket(0.25, 1, clock)  # one token per 4 s
    assert b.retry_after_s() == 0.0
    assert b.take()
    assert b.retry_after_s() == 4.0
    clock.advance(2.5)
    assert b.retry_after_s() == 2.0  # 1.5 s rounded up
    clock.advance(1.5)
    assert b.retry_after_s() == 0.0
    fast = TokenBucket(100.0, 1, clock)
    fast.take()
    assert fast.retry_after_s() == 1.0  # 10 ms still means "retry-after: 1"


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (1.0, 0)])
def test_invalid(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        TokenBucket(rate, burst, FakeClock())
