"""The injected monotonic clock every policy reads, and a fake one for tests."""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]
"""Monotonic seconds, e.g. ``time.monotonic`` or ``asyncio.get_running_loop().time``."""


class FakeClock:
    """A manually advanced clock: ``clock()`` reads it, ``advance(s)`` moves it forward."""

    __slots__ = ("now",)

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self.now += seconds
