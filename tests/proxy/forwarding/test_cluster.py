"""Per-cluster runtime: outlier detection and balancing wired as Istio's DestinationRule
says, one endpoint identity for the balancer, the detector and a retry's exclude set."""

from __future__ import annotations

import random

import pytest

from proxy.forwarding.cluster import ClusterRuntime, Clusters, endpoint_key
from proxy.policy.clock import FakeClock
from registry.config.model import LoadBalancer, OutlierDetection, TrafficPolicy
from registry.server.catalog import Endpoint

EXAMPLE = OutlierDetection(  # the example's policy (examples/compose/mesh/orders.yaml)
    consecutive_5xx_errors=3, interval_s=10.0, base_ejection_time_s=30.0,
    max_ejection_percent=50,
)


def _eps(n: int) -> list[Endpoint]:
    return [Endpoint(f"backend-{i}", "backend", f"10.0.0.{i + 1}", 15006) for i in range(n)]


def _runtime(
    n: int, lb: LoadBalancer | None = None, od: OutlierDetection | None = EXAMPLE,
    clock: FakeClock | None = None, seed: int = 7,
) -> tuple[ClusterRuntime, list[Endpoint]]:
    eps = _eps(n)
    policy = TrafficPolicy(load_balancer=lb, connection_pool=None, outlier_detection=od,
                           tls_mode=None)
    clusters = Clusters(clock=clock or FakeClock(), rng=random.Random(seed))
    return clusters.get("backend", "v1", policy, eps), eps


def test_one_request_retried_on_a_failing_path_never_ejects_a_one_endpoint_subset() -> None:
    clock = FakeClock()
    rt, (ep,) = _runtime(1, clock=clock)
    host = endpoint_key(ep)
    for _ in range(4):  # one request, 3 retries, all 500
        rt.report(host, 500, False, 0.001)
    # (ejected + 1) / hosts = 100 % > 50 %: refused, as Envoy's DetectorImpl::ejectHost.
    assert rt.outlier is not None
    assert rt.outlier.ejections_overflow == 1 and rt.outlier.ejections_total == 0
    assert rt.available() == (host,)
    assert rt.pick(frozenset(), None) == ep
    clock.advance(10.0)  # a sweep changes nothing
    assert rt.pick(frozenset(), None) == ep


def test_two_endpoints_at_fifty_percent_eject_one_and_never_both() -> None:
    clock = FakeClock()
    rt, eps = _runtime(2, clock=clock)
    a, b = (endpoint_key(e) for e in eps)
    for _ in range(3):
        rt.report(a, 503, False, 0.001)
    assert rt.available() == (b,)  # 1/2 = 50 %: ejected
    for _ in range(3):
        rt.report(b, 503, False, 0.001)
    assert rt.available() == (b,)  # 2/2 > 50 %: refused
    assert rt.outlier is not None and rt.outlier.ejections_overflow == 1
    clock.advance(29.0)
    assert rt.available() == (b,)
    clock.advance(1.0)  # baseEjectionTime 30 s, at the sweep (interval 10 s) that ends it
    assert rt.available() == (a, b)


def test_the_denominator_is_the_cluster_istios_subset() -> None:
    # Envoy counts hosts per cluster, and Istio makes one cluster per subset: a subset of
    # one endpoint next to a big one is still one host of one.
    clusters = Clusters(clock=FakeClock(), rng=random.Random(1))
    policy = TrafficPolicy(None, None, EXAMPLE, None)
    eps = _eps(4)
    big = clusters.get("backend", None, policy, eps)
    small = clusters.get("backend", "v1", policy, eps[:1])
    only = endpoint_key(eps[0])
    for _ in range(3):
        big.report(only, 500, False, 0.001)
        small.report(only, 500, False, 0.001)
    assert big.outlier is not None and big.outlier.is_ejected(only)  # 1/4 <= 50 %
    assert small.available() == (only,)  # 1/1 > 50 %


BALANCERS = [
    LoadBalancer("ROUND_ROBIN", None),
    LoadBalancer("LEAST_REQUEST", None),
    LoadBalancer("RANDOM", None),
    None,  # peak EWMA, power of two choices
    LoadBalancer(None, "x-user"),  # ring hash
]


@pytest.mark.parametrize("lb", BALANCERS, ids=["rr", "least", "random", "ewma", "ring"])
def test_a_retry_excludes_the_endpoint_by_the_balancers_identity(lb: LoadBalancer | None) -> None:
    # What the forward loop adds to `exclude` (Target.endpoint = endpoint_key) is what the
    # balancer compares: the endpoint just tried is never picked again while another exists.
    rt, _ = _runtime(2, lb=lb, od=None)
    for i in range(500):
        key = b"user-%d" % i
        first = rt.pick(frozenset(), key)
        assert first is not None
        rt.balancer.on_start(endpoint_key(first))
        rt.report(endpoint_key(first), 503, False, 0.0001)  # fails fast: EWMA likes it
        again = rt.pick(frozenset({endpoint_key(first)}), key)
        assert again is not None and again != first
        rt.balancer.on_start(endpoint_key(again))
        rt.report(endpoint_key(again), 200, False, 0.010)
