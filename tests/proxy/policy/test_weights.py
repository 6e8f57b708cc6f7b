"""Weighted split: exact for smooth WRR, statistical for the random variant."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from proxy.policy.weights import RandomWeightedPicker, WeightedPicker


def test_90_10_is_exact_over_1000_and_in_every_10() -> None:
    p = WeightedPicker([90, 10])
    picks = [p.pick() for _ in range(1000)]
    assert Counter(picks) == {0: 900, 1: 100}
    for start in range(0, 991):
        assert picks[start : start + 10].count(1) == 1  # every window of 10, not just aligned


def test_smooth_spreads_picks() -> None:
    p = WeightedPicker([5, 1, 1])
    assert [p.pick() for _ in range(7)] == [0, 0, 1, 0, 2, 0, 0]


@pytest.mark.parametrize("weights", [[50, 30, 20], [1, 2, 3, 4], [100, 0], [0, 7, 0, 3], [33, 67]])
def test_exact_split_over_a_period(weights: list[int]) -> None:
    p = WeightedPicker(weights)
    total = sum(weights)
    counts = Counter(p.pick() for _ in range(total * 5))
    assert [counts[i] for i in range(len(weights))] == [w * 5 for w in weights]


def test_huge_period_runs_live() -> None:
    p = WeightedPicker([10_007, 9_973])
    counts = Counter(p.pick() for _ in range(19_980))
    assert counts == {0: 10_007, 1: 9_973}


def test_random_variant_is_seeded_and_close() -> None:
    a = RandomWeightedPicker([90, 10], random.Random(9))
    b = RandomWeightedPicker([90, 10], random.Random(9))
    picks = [a.pick() for _ in range(10_000)]
    assert picks == [b.pick() for _ in range(10_000)]
    assert 850 < picks.count(1) < 1150


def test_random_variant_never_picks_zero_weight() -> None:
    p = RandomWeightedPicker([0, 5, 0, 5, 0], random.Random(1))
    assert {p.pick() for _ in range(1000)} == {1, 3}


@pytest.mark.parametrize("weights", [[], [0, 0], [10, -1]])
def test_invalid(weights: list[int]) -> None:
    with pytest.raises(ValueError, match="traffic split"):
        WeightedPicker(weights)
