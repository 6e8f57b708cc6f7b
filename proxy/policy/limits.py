"""Circuit breaking: Envoy ``circuit_breakers.thresholds`` / Istio ``connectionPool``.

Envoy circuit-breaker thresholds (``cluster.circuit_breakers.thresholds``), as Istio's
``DestinationRule.trafficPolicy.connectionPool`` sets them: tcp.maxConnections ->
max_connections, http.http1MaxPendingRequests -> max_pending_requests, http.http2MaxRequests ->
max_requests, http.maxRetries -> max_retries.

These are gauges of what is in flight *now*, not rates: an acquire past the limit returns False,
counts an overflow for that kind, and the proxy answers 503 with response flag UO.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Envoy's defaults (1024, 1024, 1024, 3). Istio's own defaults are 2^32-1 (no limit)."""

    max_connections: int = 1024
    max_pending: int = 1024
    max_requests: int = 1024
    max_retries: int = 3

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_pending", "max_requests", "max_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"connectionPool {name} must be >= 0, got {getattr(self, name)}")


class Breaker:
    """One threshold: a count of what is in flight, its limit, and how often it overflowed."""

    __slots__ = ("in_flight", "kind", "limit", "overflow")

    def __init__(self, kind: str, limit: int) -> None:
        self.kind = kind
        self.limit = limit
        self.in_flight = 0
        self.overflow = 0

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limit:
            self.overflow += 1
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        if self.in_flight <= 0:
            raise RuntimeError(f"release of {self.kind} without a matching acquire")
        self.in_flight -= 1


class Gauges:
    """In-flight counts for one upstream cluster, checked against ``PoolLimits``.

    Every successful ``try_acquire_x()`` must be paired with one ``release_x()`` (try/finally);
    a release without an acquire is a bug and raises RuntimeError. The methods are the bound
    methods of one ``Breaker`` per kind, so a call costs one attribute lookup.
    """

    __slots__ = (
        "breakers",
        "limits",
        "release_connection",
        "release_pending",
        "release_request",
        "release_retry",
        "try_acquire_connection",
        "try_acquire_pending",
        "try_acquire_request",
        "try_acquire_retry",
    )

    def __init__(self, limits: PoolLimits = PoolLimits()) -> None:
        self.limits = limits
        # Envoy stats: upstream_cx_overflow, upstream_rq_pending_overflow (requests overflow
        # into it too in Envoy; kept apart here), upstream_rq_retry_overflow.
        connections = Breaker("connections", limits.max_connections)
        pending = Breaker("pending", limits.max_pending)
        requests = Breaker("requests", limits.max_requests)
        retries = Breaker("retries", limits.max_retries)
        self.breakers = (connections, pending, requests, retries)
        self.try_acquire_connection = connections.try_acquire
        self.release_connection = connections.release
        self.try_acquire_pending = pending.try_acquire
        self.release_pending = pending.release
        self.try_acquire_request = requests.try_acquire
        self.release_request = requests.release
        self.try_acquire_retry = retries.try_acquire
        self.release_retry = retries.release

    @property
    def in_flight(self) -> dict[str, int]:
        """Current gauges per kind (connections, pending, requests, retries), for metrics."""
        return {b.kind: b.in_flight for b in self.breakers}

    @property
    def overflow(self) -> dict[str, int]:
        """Overflows per kind since start, for metrics."""
        return {b.kind: b.overflow for b in self.breakers}
