"""App health: the readiness of the proxy's own app, from probe results (Kubernetes' rules).

Kubernetes' readinessProbe semantics (pkg/kubelet/prober/worker.go), which the proxy follows:
- a probe runs every `periodSeconds`, the first one `initialDelaySeconds` after start, and
  fails if no answer comes within `timeoutSeconds`;
- `failureThreshold` consecutive failures make the app not ready; `successThreshold`
  consecutive successes make it ready again; a result of the other kind resets the count.
One difference, on purpose: Kubernetes starts a container not ready until its first success;
an endpoint here starts healthy (as it did before app health existed) and the first probe
runs one period after start, so a proxy whose app binds a moment after it never flaps.

Pure: results come in through `record`, time from the injected clock. The asyncio loop that
connects to the app and reports transitions to the registry is `proxy/control/apphealth.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy.clock import Clock

HEALTHY, UNHEALTHY = "healthy", "unhealthy"


@dataclass(frozen=True, slots=True)
class ProbeParams:
    """What to probe and how often; defaults are Kubernetes' probe defaults."""

    kind: str  # "tcp" | "http"
    host: str
    port: int
    path: str = "/"
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("tcp", "http"):
            raise ValueError(f"probe kind must be tcp or http, got {self.kind!r}")
        if self.period_s <= 0 or self.timeout_s <= 0 or self.initial_delay_s < 0:
            raise ValueError("probe period and timeout must be > 0, initial delay >= 0")
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise ValueError("probe failure and success thresholds must be >= 1")

    @property
    def address(self) -> str:
        """host:port, an IPv6 host in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def target(self) -> str:
        """What a probe tries, as the reason names it."""
        return self.address if self.kind == "tcp" else f"GET http://{self.address}{self.path}"


class AppHealth:
    """Consecutive results -> healthy / unhealthy, with the reason a user reads in `status`.

    The reason is fixed at the transition ("app: connect refused on 127.0.0.1:8080
    (3 failures)"), so that further failures do not change what the registry holds and push
    a new catalog to every proxy each period.
    """

    __slots__ = ("_clock", "_due", "failures", "health", "params", "reason", "successes")

    def __init__(self, params: ProbeParams, clock: Clock) -> None:
        self._clock = clock
        self.params = params
        self.health = HEALTHY
        self.reason = ""
        self.failures = 0  # consecutive
        self.successes = 0  # consecutive
        self._due = clock() + params.initial_delay_s + params.period_s

    def due_in(self) -> float:
        """Seconds until the next probe should start (0 when it is late)."""
        return max(0.0, self._due - self._clock())

    def reconfigure(self, params: ProbeParams) -> None:
        """A new probe from a new config: keep the current verdict, restart the counts (the
        old probe's results say nothing about the new one) and probe within one period."""
        if params == self.params:
            return
        self.params = params
        self.failures = self.successes = 0
        self._due = min(self._due, self._clock() + params.period_s)

    def record(self, error: str | None) -> bool:
        """One probe's result: None for success, else what failed ("connect refused on
        127.0.0.1:8080"). Returns True when the health changed (report it)."""
        p = self.params
        self._due = self._clock() + p.period_s
        if error is None:
            self.failures = 0
            self.successes += 1
            if self.health != HEALTHY and self.successes >= p.success_threshold:
                self.health, self.reason = HEALTHY, ""
                return True
            return False
        self.successes = 0
        self.failures += 1
        if self.health == HEALTHY and self.failures >= p.failure_threshold:
            n = self.failures
            self.health = UNHEALTHY
            self.reason = f"app: {error} ({n} failure{'s' if n != 1 else ''})"
            return True
        return False
