"""Linkerd's retry budget (tower ``TpsBudget``): retries <= 20 % of requests + 10/s over 10 s.

Linkerd's retry budget (linkerd2-proxy, tower ``TpsBudget``): retries may add ``ratio`` of the
requests seen over ``ttl_s``, plus ``min_per_s`` retries per second, so a failing upstream never
sees a retry storm. (Envoy's equivalent is ``circuit_breakers.thresholds.retry_budget``.)

The window is a ring of 10 slots of ``ttl_s / 10`` each, like tower's: a deposit or withdrawal
lands in the current slot and stops counting once its slot is older than ``ttl_s``. Amounts are
integers: with ratio 0.2 a request deposits 1 and a retry withdraws 5, and the reserve is
``min_per_s * ttl_s * 5``, so over any 10 s: retries <= 0.2 x requests + 10 x 10.
"""

from __future__ import annotations

from typing import Final

from proxy.policy.clock import Clock

_SLOTS: Final = 10


class RetryBudget:
    """``deposit()`` once per original request; ``try_withdraw()`` before each retry."""

    __slots__ = (
        "_clock",
        "_deposit",
        "_index",
        "_reserve",
        "_slot_started",
        "_slots",
        "_window",
        "_window_total",
        "_withdraw",
        "_writer",
        "exhausted",
        "withdrawn",
    )

    def __init__(
        self,
        *,
        clock: Clock,
        ratio: float = 0.2,
        min_per_s: int = 10,
        ttl_s: float = 10.0,
    ) -> None:
        if not 1.0 <= ttl_s <= 60.0:
            raise ValueError(f"retry budget ttl must be within 1..60 s, got {ttl_s}")
        if not 0.0 <= ratio <= 1000.0:
            raise ValueError(f"retry budget ratio must be within 0..1000, got {ratio}")
        if min_per_s < 0:
            raise ValueError(f"retry budget min_per_s must be >= 0, got {min_per_s}")
        # Integer token amounts as tower computes them, so 0.2 means exactly 1 retry per 5 requests.
        if ratio == 0.0:
            self._deposit, self._withdraw = 0, 1
        elif ratio <= 1.0:
            self._deposit, self._withdraw = 1, int(round(1.0 / ratio, 9))
        else:
            self._deposit, self._withdraw = 1000, int(round(1000.0 / ratio, 9))
        self._reserve = min_per_s * int(ttl_s) * self._withdraw
        self._window = ttl_s / _SLOTS
        self._slots = [0] * _SLOTS
        self._window_total = 0  # sum of _slots, kept so a check is O(1)
        self._writer = 0  # the current slot, committed when it expires
        self._index = 0
        self._clock = clock
        self._slot_started = clock()
        self.exhausted = 0  # retries refused for lack of budget
        self.withdrawn = 0  # retries allowed

    def _expire(self, now: float) -> None:
        elapsed = now - self._slot_started
        if elapsed < self._window:
            return
        slots = self._slots
        self._window_total += self._writer - slots[self._index]
        slots[self._index] = self._writer
        self._writer = 0
        idx = (self._index + 1) % _SLOTS
        # Clear the slots that went by without traffic (at most the whole ring).
        skipped = 0
        while elapsed > self._window and skipped < _SLOTS:
            self._window_total -= slots[idx]
            slots[idx] = 0
            elapsed -= self._window
            idx = (idx + 1) % _SLOTS
            skipped += 1
        self._index = idx
        self._slot_started = now

    def balance(self) -> int:
        """Tokens available now (a retry needs ``withdraw`` of them)."""
        self._expire(self._clock())
        return self._writer + self._window_total + self._reserve

    def deposit(self) -> None:
        self._expire(self._clock())
        self._writer += self._deposit

    def try_withdraw(self) -> bool:
        self._expire(self._clock())
        if self._writer + self._window_total + self._reserve >= self._withdraw:
            self._writer -= self._withdraw
            self.withdrawn += 1
            return True
        self.exhausted += 1
        return False
