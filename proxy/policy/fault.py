"""Fault injection: Istio ``HTTPFaultInjection`` delay/abort (Envoy ``fault`` filter).

Fault injection: Istio ``HTTPFaultInjection`` (delay.fixedDelay + delay.percentage,
abort.httpStatus + abort.percentage), Envoy's ``fault`` HTTP filter. Response flags DI / FI.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What to do to this request: sleep ``delay_s`` first, then answer ``abort_status``."""

    delay_s: float = 0.0
    abort_status: int | None = None


NO_FAULT: Final = FaultDecision()


@dataclass(frozen=True, slots=True)
class FaultParams:
    """Percentages are Istio's floats in 0..100; an unset percentage means 100 (Istio: "if left
    unspecified, all requests will be delayed"). ``delay_s`` 0 or ``abort_status`` None turns
    that fault off."""

    delay_s: float = 0.0
    delay_percent: float = 100.0
    abort_status: int | None = None
    abort_percent: float = 100.0
    # The three possible faulty decisions, built once so decide() never allocates.
    _delay_only: FaultDecision = field(init=False, repr=False, compare=False, default=NO_FAULT)
    _abort_only: FaultDecision = field(init=False, repr=False, compare=False, default=NO_FAULT)
    _both: FaultDecision = field(init=False, repr=False, compare=False, default=NO_FAULT)

    def __post_init__(self) -> None:
        if self.delay_s < 0:
            raise ValueError(f"fault.delay.fixedDelay must be >= 0, got {self.delay_s}")
        for name in ("delay_percent", "abort_percent"):
            value = getattr(self, name)
            if not 0.0 <= value <= 100.0:
                raise ValueError(f"fault {name} must be within 0..100, got {value}")
        if self.abort_status is not None and not 200 <= self.abort_status <= 599:
            raise ValueError(
                f"fault.abort.httpStatus must be within 200..599, got {self.abort_status}"
            )
        object.__setattr__(self, "_delay_only", FaultDecision(self.delay_s, None))
        object.__setattr__(self, "_abort_only", FaultDecision(0.0, self.abort_status))
        object.__setattr__(self, "_both", FaultDecision(self.delay_s, self.abort_status))


def decide(params: FaultParams, rng: random.Random) -> FaultDecision:
    """Draw the delay and the abort independently, as Envoy does (both may apply: delay first)."""
    delay = params.delay_s > 0.0 and rng.random() * 100.0 < params.delay_percent
    abort = params.abort_status is not None and rng.random() * 100.0 < params.abort_percent
    if delay:
        return params._both if abort else params._delay_only
    return params._abort_only if abort else NO_FAULT
