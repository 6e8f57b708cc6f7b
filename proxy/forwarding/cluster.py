"""Per-destination state that outlives snapshots: balancer, outlier detection, limits, budget.

A snapshot names clusters (service, subset) with their endpoints and DestinationRule policy;
the runtime here keeps what must survive a swap (ejections, EWMA latencies, in-flight
counts), so a new snapshot never forgets that a host was failing. Decision logic lives in
proxy/policy; this module only wires it up per cluster.
"""

from __future__ import annotations

import random
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Final

from proxy.forwarding.forward import Target
from proxy.policy import balancer as lb
from proxy.policy.budget import RetryBudget
from proxy.policy.clock import Clock
from proxy.policy.limits import Gauges, PoolLimits
from proxy.policy.outlier import OutlierDetector, OutlierParams
from proxy.transport.streams import ConnLimiter
from registry.config.model import TrafficPolicy
from registry.server.catalog import Endpoint

_RNG: Final = random.Random()


def endpoint_key(ep: Endpoint) -> str:
    """The one identity of an endpoint on the request path ("ip:port" of its proxy): what
    the balancer picks, outlier detection ejects, and a retry's exclude set (Envoy's
    previous_hosts) holds. The pool key (Target.key) adds the port and certificate."""
    return f"{ep.address}:{ep.inbound_port}"


def _lb_choice(policy: TrafficPolicy | None) -> tuple[str | None, str | None]:
    """(loadBalancer.simple, consistentHash header) of a DestinationRule policy."""
    cfg = policy.load_balancer if policy is not None else None
    if cfg is None:
        return None, None
    return cfg.simple, cfg.consistent_hash_header


def _balancer(
    policy: TrafficPolicy | None, rng: random.Random, clock: Clock
) -> tuple[object, lb.Balancer, bytes | None]:
    simple, header = _lb_choice(policy)
    key: object = (simple, header)
    if header is not None:
        return key, lb.ConsistentHash(rng), header.encode()
    if simple == "ROUND_ROBIN":
        return key, lb.RoundRobin(), None
    if simple == "LEAST_REQUEST":
        return key, lb.LeastRequest(rng), None
    if simple == "RANDOM":
        return key, lb.Random(rng), None
    # Unset: latency-aware peak-EWMA with power of two choices (Linkerd's default).
    return key, lb.PeakEwma(rng, clock), None


def balancer_name(policy: TrafficPolicy | None) -> str:
    """The balancer `_balancer` builds for `policy`, as `meshctl why` shows it."""
    simple, header = _lb_choice(policy)
    if header is not None:
        return f"consistentHash on header {header}"
    if simple in ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"):
        return simple
    return "peak EWMA, power of two choices (the default, as Linkerd's)"


def _outlier_params(policy: TrafficPolicy | None) -> OutlierParams | None:
    od = policy.outlier_detection if policy is not None else None
    if od is None:
        return None
    return OutlierParams(
        consecutive_5xx=od.consecutive_5xx_errors or None,
        consecutive_gateway=od.consecutive_gateway_errors or None,
        interval_s=od.interval_s,
        base_ejection_s=od.base_ejection_time_s,
        max_ejection_percent=od.max_ejection_percent,
        min_health_percent=od.min_health_percent,
        # Envoy ejects a host only while the ejected share including it stays within
        # maxEjectionPercent (DetectorImpl::ejectHost); always_eject_one_host is off by
        # default and Istio never sets it. Set, a one-endpoint subset would lose its only
        # endpoint to one request retried three times on a failing path (issue 19).
        always_eject_one_host=False,
    )


def _limits(policy: TrafficPolicy | None) -> PoolLimits:
    cp = policy.connection_pool if policy is not None else None
    if cp is None:
        return PoolLimits()
    return PoolLimits(
        max_connections=cp.tcp.max_connections,
        max_pending=cp.http.http1_max_pending_requests,
        max_requests=cp.http.http2_max_requests,
        max_retries=cp.http.max_retries,
    )


@dataclass(slots=True)
class ClusterRuntime:
    key: tuple[str, str | None]
    endpoints: dict[str, Endpoint]
    hosts: tuple[str, ...]
    balancer: lb.Balancer
    balancer_key: Hashable
    hash_header: bytes | None
    outlier: OutlierDetector | None
    gauges: Gauges
    budget: RetryBudget
    limiter: ConnLimiter | None = None  # built by the proxy on first use
    # The outbound stack's Targets, built on first use within a snapshot (they close over
    # the snapshot's identity checks and pool settings); emptied by every update.
    targets: dict[tuple[object, ...], Target] = field(default_factory=dict)
    # Injected by Clusters (tests drive them): the policies' clock and randomness.
    clock: Clock = time.monotonic
    rng: random.Random = _RNG

    def update(self, policy: TrafficPolicy | None, endpoints: Sequence[Endpoint]) -> None:
        self.targets = {}
        self.endpoints = {endpoint_key(e): e for e in endpoints}
        self.hosts = tuple(self.endpoints)
        bkey, bal, header = _balancer(policy, self.rng, self.clock)
        if bkey != self.balancer_key:
            self.balancer, self.balancer_key, self.hash_header = bal, bkey, header
        params = _outlier_params(policy)
        if params is None:
            self.outlier = None
        elif self.outlier is None or self.outlier.params != params:
            self.outlier = OutlierDetector(params, self.hosts, self.clock)
        else:
            self.outlier.set_hosts(self.hosts)
        limits = _limits(policy)
        if limits != self.gauges.limits:
            self.gauges = Gauges(limits)  # in-flight requests release on the old gauges

    def available(self) -> tuple[str, ...]:
        return self.outlier.available_hosts() if self.outlier is not None else self.hosts

    def pick(self, exclude: frozenset[str], hash_key: bytes | None) -> Endpoint | None:
        host = self.balancer.pick(self.available(), exclude=exclude, key=hash_key)
        return self.endpoints.get(host) if host is not None else None

    def report(self, host: str, status: int | None, local_failure: bool, latency_s: float) -> None:
        self.balancer.on_end(host, latency_s, not local_failure and (status or 0) < 500)
        if self.outlier is not None:
            self.outlier.report(host, status, local_failure)


class Clusters:
    """All cluster runtimes of one proxy, by (service, subset)."""

    def __init__(self, clock: Clock = time.monotonic, rng: random.Random = _RNG) -> None:
        self._clock, self._rng = clock, rng
        self._by_key: dict[tuple[str, str | None], ClusterRuntime] = {}

    def get(
        self,
        service: str,
        subset: str | None,
        policy: TrafficPolicy | None,
        endpoints: Sequence[Endpoint],
    ) -> ClusterRuntime:
        key = (service, subset)
        rt = self._by_key.get(key)
        if rt is None:
            bkey, bal, header = _balancer(policy, self._rng, self._clock)
            rt = ClusterRuntime(
                key=key,
                endpoints={},
                hosts=(),
                balancer=bal,
                balancer_key=bkey,
                hash_header=header,
                outlier=None,
                gauges=Gauges(_limits(policy)),
                budget=RetryBudget(clock=self._clock),
                clock=self._clock,
                rng=self._rng,
            )
            self._by_key[key] = rt
        rt.update(policy, endpoints)
        return rt

    def retain(self, keys: set[tuple[str, str | None]]) -> None:
        for k in list(self._by_key):
            if k not in keys:
                del self._by_key[k]

    def all(self) -> list[ClusterRuntime]:
        return list(self._by_key.values())
