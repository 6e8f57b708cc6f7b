"""Balancers: spread, exclude for retries, P2C on load, peak-EWMA, consistent hashing."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from proxy.policy.balancer import (
    Balancer,
    ConsistentHash,
    LeastRequest,
    PeakEwma,
    Random,
    RoundRobin,
)
from proxy.policy.clock import FakeClock

EPS = ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80")


def balancers() -> list[Balancer]:
    rng = random.Random(42)
    return [
        RoundRobin(),
        Random(rng),
        LeastRequest(rng),
        PeakEwma(rng, FakeClock()),
        ConsistentHash(rng),
    ]


@pytest.mark.parametrize("b", balancers(), ids=lambda b: type(b).__name__)
def test_empty_gives_none(b: Balancer) -> None:
    assert b.pick((), key=b"k") is None


@pytest.mark.parametrize("b", balancers(), ids=lambda b: type(b).__name__)
def test_retry_goes_to_another_endpoint(b: Balancer) -> None:
    for i in range(200):
        key = f"user-{i}".encode()
        first = b.pick(EPS, key=key)
        assert first in EPS
        assert first is not None
        again = b.pick(EPS, exclude=frozenset({first}), key=key)
        assert again in EPS and again != first


@pytest.mark.parametrize("b", balancers(), ids=lambda b: type(b).__name__)
def test_all_excluded_still_answers(b: Balancer) -> None:
    assert b.pick(EPS[:1], exclude=frozenset(EPS[:1]), key=b"k") == EPS[0]
    assert b.pick(EPS, exclude=frozenset(EPS), key=b"k") in EPS


def test_round_robin_cycles() -> None:
    rr = RoundRobin()
    assert [rr.pick(EPS) for _ in range(8)] == list(EPS) * 2


def test_random_spreads() -> None:
    b = Random(random.Random(1))
    counts = Counter(b.pick(EPS) for _ in range(4000))
    assert all(800 < counts[e] < 1200 for e in EPS)


def test_least_request_avoids_busy_endpoint() -> None:
    b = LeastRequest(random.Random(3))
    for _ in range(10):
        b.on_start(EPS[0])
    counts = Counter(b.pick(EPS) for _ in range(3000))
    # P2C: the busy endpoint wins only when both choices are it, which distinct choices rule out.
    assert counts[EPS[0]] == 0
    for _ in range(10):
        b.on_end(EPS[0], 0.01, True)
    assert b.active(EPS[0]) == 0


def test_peak_ewma_prefers_the_fast_endpoint() -> None:
    clock = FakeClock()
    b = PeakEwma(random.Random(5), clock)
    fast, slow = EPS[0], EPS[1]
    counts: Counter[str] = Counter()
    for _ in range(2000):
        ep = b.pick((fast, slow))
        assert ep is not None
        counts[ep] += 1
        b.on_start(ep)
        latency = 0.005 if ep == fast else 0.200
        clock.advance(0.001)
        b.on_end(ep, latency, True)
    assert counts[fast] > 0.9 * 2000
    assert b.cost(fast) < b.cost(slow)


def test_peak_ewma_is_peak_sensitive_then_decays() -> None:
    clock = FakeClock()
    b = PeakEwma(random.Random(5), clock)
    ep = EPS[0]
    b.on_start(ep)
    b.on_end(ep, 1.0, True)  # one slow response: the estimate jumps to it
    assert b.cost(ep) == pytest.approx(1.0)
    clock.advance(10.0)  # one decay period: e^-1
    assert b.cost(ep) == pytest.approx(0.3679, rel=1e-3)
    b.on_start(ep)
    assert b.cost(ep) == pytest.approx(2 * 0.3679, rel=1e-3)  # (pending + 1)


def test_peak_ewma_new_endpoint_uses_default_rtt_and_retain_forgets() -> None:
    b = PeakEwma(random.Random(5), FakeClock())
    assert b.cost(EPS[2]) == pytest.approx(0.030)
    b.retain(EPS[:2])
    assert EPS[2] not in b._state


def test_consistent_hash_is_sticky_and_minimally_disrupted() -> None:
    b = ConsistentHash(random.Random(0))
    keys = [f"session-{i}".encode() for i in range(2000)]
    before = {k: b.pick(EPS, key=k) for k in keys}
    assert before == {k: b.pick(EPS, key=k) for k in keys}
    assert len(set(before.values())) == 4
    shrunk = EPS[:3]
    after = {k: b.pick(shrunk, key=k) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    # Only the keys of the removed endpoint move.
    assert all(before[k] == EPS[3] for k in moved)
    spread = Counter(before.values())
    assert all(spread[e] > 2000 / 4 * 0.6 for e in EPS)


def test_consistent_hash_without_key_is_random() -> None:
    b = ConsistentHash(random.Random(0))
    assert len({b.pick(EPS) for _ in range(100)}) == 4


def test_peak_ewma_tries_a_new_endpoint_next_to_fast_ones() -> None:
    """A replica that (re)joins next to a fast one starts at the fast one's estimate, so it
    gets traffic at once instead of waiting for a 30 ms default to decay."""
    from proxy.policy.balancer import PeakEwma
    from proxy.policy.clock import FakeClock

    clock = FakeClock(0.0)
    bal = PeakEwma(random.Random(1), clock)
    for _ in range(50):
        ep = bal.pick(("a",))
        assert ep == "a"
        bal.on_start(ep)
        clock.advance(0.001)
        bal.on_end(ep, 0.001, True)
    picks = []
    for _ in range(20):
        ep = bal.pick(("a", "b"))
        assert ep is not None
        picks.append(ep)
        bal.on_start(ep)
        clock.advance(0.001)
        bal.on_end(ep, 0.001, True)
    assert "b" in picks
