"""Passive health checking: Istio ``outlierDetection`` / Envoy ``cluster.outlier_detection``.

Passive health checking: Istio ``DestinationRule.trafficPolicy.outlierDetection`` on Envoy's
``cluster.outlier_detection`` (consecutive_5xx, consecutive_gateway_failure, interval,
base_ejection_time, max_ejection_time, max_ejection_percent, always_eject_one_host) and Istio's
``minHealthPercent`` (Envoy ``common_lb_config.healthy_panic_threshold``).

Semantics follow Envoy's source (source/common/upstream/outlier_detection_impl.cc):
- A host is ejected the moment its consecutive-error counter reaches the threshold, not at the
  sweep. Local-origin failures (connect failure, reset, timeout) count as a 503/504, i.e. both
  as a 5xx and as a gateway error (split_external_local_origin_errors = false).
- Ejection is refused (``ejections_overflow``) when (ejected + 1) / hosts > max_ejection_percent,
  unless ``always_eject_one_host`` and nothing is ejected yet.
- Every ``interval`` a sweep un-ejects hosts whose min(base x multiplier, max) has elapsed, and
  decrements the multiplier of hosts that have stayed in service for an interval since their
  last un-ejection. The multiplier goes up by one per ejection: 30 s, 60 s, 90 s ...
The sweeps run lazily: each call first runs the sweeps that fell due since the previous call,
each at its own due time, so the result is the same as with a timer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from proxy.policy.clock import Clock

_GATEWAY_ERRORS: Final = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class OutlierParams:
    """Istio defaults: consecutive5xxErrors 5, consecutiveGatewayErrors off, interval 10 s,
    baseEjectionTime 30 s, maxEjectionPercent 10, minHealthPercent 0 (panic off)."""

    consecutive_5xx: int | None = 5
    consecutive_gateway: int | None = None
    interval_s: float = 10.0
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0  # Envoy max_ejection_time (300 s, or base if larger)
    max_ejection_percent: float = 10.0
    min_health_percent: float = 0.0
    always_eject_one_host: bool = False  # Envoy >= 1.31 default; see docs/policies.md

    def __post_init__(self) -> None:
        for name in ("consecutive_5xx", "consecutive_gateway"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"outlierDetection {name} must be >= 1 or unset, got {value}")
        if self.interval_s <= 0 or self.base_ejection_s <= 0:
            raise ValueError("outlierDetection interval and baseEjectionTime must be > 0")
        for name in ("max_ejection_percent", "min_health_percent"):
            value = getattr(self, name)
            if not 0.0 <= value <= 100.0:
                raise ValueError(f"outlierDetection {name} must be within 0..100, got {value}")


class _Host:
    __slots__ = (
        "ejected",
        "ejected_at",
        "errors_5xx",
        "errors_gateway",
        "multiplier",
        "unejected_at",
    )

    def __init__(self) -> None:
        self.errors_5xx = 0
        self.errors_gateway = 0
        self.ejected = False
        self.ejected_at = 0.0
        self.unejected_at: float | None = None
        self.multiplier = 0  # Envoy's ejectTimeBackoff


class OutlierDetector:
    """Per-host consecutive-error ejection for one upstream cluster."""

    def __init__(self, params: OutlierParams, hosts: Sequence[str], clock: Clock) -> None:
        self.params = params
        self._clock = clock
        self._max_eject = max(params.max_ejection_s, params.base_ejection_s)
        self._next_sweep = clock() + params.interval_s
        self._hosts: dict[str, _Host] = {}
        self._all: tuple[str, ...] = ()
        self._healthy: tuple[str, ...] = ()
        self._in_panic = False
        self.ejections_total = 0  # ejections enforced
        self.ejections_overflow = 0  # ejections refused by max_ejection_percent
        self.panic = 0  # available_hosts() answered in panic (Envoy lb_healthy_panic)
        self.set_hosts(hosts)

    # -- membership ---------------------------------------------------------------------------

    def set_hosts(self, hosts: Iterable[str]) -> None:
        """Replace the host set; hosts that remain keep their counters and ejection."""
        old = self._hosts
        self._hosts = {h: old.get(h) or _Host() for h in dict.fromkeys(hosts)}
        self._all = tuple(self._hosts)
        self._recompute()

    def _recompute(self) -> None:
        # Runs on change only, so the per-request calls return a prebuilt tuple.
        self._healthy = tuple(h for h, s in self._hosts.items() if not s.ejected)
        total = len(self._all)
        min_pct = self.params.min_health_percent
        self._in_panic = total > 0 and min_pct > 0 and 100.0 * len(self._healthy) / total < min_pct

    # -- per request ------------------------------------------------------------------------------

    def report(self, host: str, status: int | None, local_origin_failure: bool = False) -> None:
        """Record one attempt's result: a status code, or a local-origin failure (connect
        failure, reset, timeout). ``status`` None without a failure (a TCP session that went
        well) counts as a success."""
        now = self._tick()
        state = self._hosts.get(host)
        if state is None:
            return  # removed while the request was in flight
        if local_origin_failure:
            status = 503  # Envoy resultToHttpCode: connect failure 503, timeout 504: same buckets
        if status is None or status < 500:
            state.errors_5xx = 0
            state.errors_gateway = 0
            return
        params = self.params
        if status in _GATEWAY_ERRORS:
            state.errors_gateway += 1
            if state.errors_gateway == params.consecutive_gateway:
                state.errors_gateway = 0
                self._eject(state, now)
        else:
            state.errors_gateway = 0
        state.errors_5xx += 1
        if state.errors_5xx == params.consecutive_5xx:
            state.errors_5xx = 0
            self._eject(state, now)

    def is_ejected(self, host: str) -> bool:
        self._tick()
        state = self._hosts.get(host)
        return state is not None and state.ejected

    def healthy_hosts(self) -> tuple[str, ...]:
        self._tick()
        return self._healthy

    def available_hosts(self) -> tuple[str, ...]:
        """The hosts to balance over: the healthy ones, or all of them in panic."""
        self._tick()
        if self._in_panic:
            self.panic += 1
            return self._all
        return self._healthy

    @property
    def ejections_active(self) -> int:
        return len(self._all) - len(self._healthy)

    @property
    def in_panic(self) -> bool:
        return self._in_panic

    def ejection_multiplier(self, host: str) -> int:
        self._tick()
        return self._hosts[host].multiplier

    def _tick(self) -> float:
        """Run the sweeps that fell due since the last call; return the time."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        return now

    # -- state machine ----------------------------------------------------------------------------

    def _eject(self, state: _Host, now: float) -> None:
        if state.ejected:
            return  # Envoy ignores a consecutive-error event for an already ejected host
        active = self.ejections_active
        allowed = 100.0 * (active + 1) / len(self._all) <= self.params.max_ejection_percent
        if not allowed and not (self.params.always_eject_one_host and active == 0):
            self.ejections_overflow += 1
            return
        state.ejected = True
        state.ejected_at = now
        base = self.params.base_ejection_s
        if state.multiplier * base < self._max_eject + base:
            state.multiplier += 1
        self.ejections_total += 1
        self._recompute()

    def _sweep(self, now: float) -> None:
        interval = self.params.interval_s
        base = self.params.base_ejection_s
        due = self._next_sweep
        changed = False
        while due <= now:
            busy = False  # anything left for a later sweep to do?
            for state in self._hosts.values():
                if state.ejected:
                    if min(base * state.multiplier, self._max_eject) <= due - state.ejected_at:
                        state.ejected = False
                        state.unejected_at = due
                        state.errors_5xx = state.errors_gateway = 0
                        changed = True
                    busy = True
                elif state.multiplier and state.unejected_at is not None:
                    if due - state.unejected_at >= interval:
                        state.multiplier -= 1
                    busy = busy or state.multiplier > 0
            due += interval
            if not busy and due <= now:
                # Nothing ejected and every multiplier at 0: the sweeps in between are no-ops.
                due += ((now - due) // interval + 1) * interval
        self._next_sweep = due
        if changed:
            self._recompute()
