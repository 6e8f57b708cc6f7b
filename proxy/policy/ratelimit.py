"""Local rate limit: a token bucket, as Envoy ``local_ratelimit`` ``token_bucket``.

Local rate limit: a token bucket, as Envoy's ``local_ratelimit`` filter ``token_bucket``
(max_tokens = ``burst``, refilled continuously at ``rate_per_s``). Over the limit the proxy
answers 429 with ``retry-after`` and response flag RL.
"""

from __future__ import annotations

import math

from proxy.policy.clock import Clock


class TokenBucket:
    """Starts full. ``take()`` spends one token if there is one; refill is lazy, on read."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "limited", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate limit: rate_per_s must be > 0, got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"rate limit: burst must be >= 1, got {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.limited = 0  # requests refused

    def _refill(self) -> float:
        now = self._clock()
        tokens = self._tokens + (now - self._last) * self.rate_per_s
        if tokens > self.burst:
            tokens = float(self.burst)
        self._tokens = tokens
        self._last = now
        return tokens

    def take(self) -> bool:
        if self._refill() >= 1.0:
            self._tokens -= 1.0
            return True
        self.limited += 1
        return False

    def retry_after_s(self) -> float:
        """Whole seconds until a token is available (0.0 if one is now), rounded up, for the
        ``retry-after`` header (RFC 9110 10.2.3 takes integer seconds)."""
        missing = 1.0 - self._refill()
        if missing <= 0.0:
            return 0.0
        return float(math.ceil(missing / self.rate_per_s))
