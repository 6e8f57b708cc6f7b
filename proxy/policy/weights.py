"""Weighted traffic split: Istio ``HTTPRouteDestination.weight`` (Envoy ``weighted_clusters``).

Weighted traffic split over a route's destinations: Istio ``HTTPRouteDestination.weight``
(Envoy ``weighted_clusters``). Returns an index into the destinations.

``WeightedPicker`` is deterministic smooth weighted round robin (nginx's algorithm): over any
run of sum(weights)/gcd consecutive picks the split is exact, 90/10 gives 9:1 in every 10, and
the picks of each destination are spread out, not bunched. Envoy draws at random instead;
``RandomWeightedPicker`` does that, with a seeded ``random.Random``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from typing import Final

# Precompute the whole period when it is at most this long (Istio weights sum to 100, so the
# period is at most 100); past it, run the O(n) algorithm per pick.
_MAX_SCHEDULE: Final = 10_000


def _check(weights: Sequence[int]) -> tuple[int, ...]:
    ws = tuple(weights)
    if not ws:
        raise ValueError("traffic split: no destinations")
    if any(w < 0 for w in ws):
        raise ValueError(f"traffic split: weights must be >= 0, got {list(ws)}")
    if sum(ws) == 0:
        raise ValueError(f"traffic split: at least one weight must be > 0, got {list(ws)}")
    return ws


class WeightedPicker:
    """Smooth weighted round robin; ``pick()`` returns the index of the next destination."""

    __slots__ = ("_current", "_next", "_schedule", "_total", "weights")

    def __init__(self, weights: Sequence[int]) -> None:
        ws = _check(weights)
        g = math.gcd(*ws)
        self.weights = tuple(w // g for w in ws)
        self._total = sum(self.weights)
        self._current = [0] * len(ws)
        self._schedule: tuple[int, ...] = ()
        if self._total <= _MAX_SCHEDULE:
            self._schedule = tuple(self._step() for _ in range(self._total))
        self._next = itertools.cycle(self._schedule).__next__ if self._schedule else self._step

    def _step(self) -> int:
        current = self._current
        best = 0
        for i, w in enumerate(self.weights):
            current[i] += w
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return best

    def pick(self) -> int:
        return self._next()


class RandomWeightedPicker:
    """Envoy's weighted_clusters: an independent draw per request, O(log n)."""

    __slots__ = ("_cumulative", "_rng", "_total", "weights")

    def __init__(self, weights: Sequence[int], rng: random.Random) -> None:
        self.weights = _check(weights)
        self._cumulative = tuple(itertools.accumulate(self.weights))
        self._total = self._cumulative[-1]
        self._rng = rng

    def pick(self) -> int:
        # bisect_right skips zero-weight entries: their cumulative equals the previous one.
        return bisect.bisect_right(self._cumulative, self._rng.randrange(self._total))
