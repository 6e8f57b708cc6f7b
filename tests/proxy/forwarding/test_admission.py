"""The outbound stack's per-request hold on a cluster: request gauge, retries, release."""

from __future__ import annotations

from proxy.forwarding.cluster import ClusterRuntime, Clusters
from proxy.outbound.stack import _Admission
from proxy.policy.limits import Gauges, PoolLimits
from proxy.tracing import CLIENT, Tracer


def _admitted(rt: ClusterRuntime, counters: dict[str, float]) -> _Admission:
    gauges = rt.gauges
    assert gauges.try_acquire_request()
    return _Admission(rt, gauges, counters, Tracer().start([], CLIENT))


def test_retries_are_held_until_release_on_the_gauges_of_admission() -> None:
    # A real runtime (the compiled core checks types): no policy, no endpoints.
    rt = Clusters().get("orders", None, None, [])
    rt.gauges = Gauges(PoolLimits(max_retries=2))
    counters: dict[str, float] = {"meshctl_proxy_retries_total": 0,
                                  "meshctl_proxy_retry_overflow_total": 0}
    first = _admitted(rt, counters)
    old = rt.gauges
    assert first.may_retry() and first.may_retry()
    assert old.in_flight["retries"] == 2 and old.in_flight["requests"] == 1
    # A second request finds maxRetries taken: refused and counted.
    second = _admitted(rt, counters)
    assert not second.may_retry()
    assert counters["meshctl_proxy_retry_overflow_total"] == 1
    # A config change replaces the cluster's gauges while both are in flight: a retry of
    # a request admitted before counts on the gauges it will be released from.
    rt.gauges = Gauges(PoolLimits(max_retries=2))
    assert not second.may_retry()  # still the old limit, still full
    first.release()
    second.release()
    assert old.in_flight == {"connections": 0, "pending": 0, "requests": 0, "retries": 0}
    assert rt.gauges.in_flight["retries"] == 0  # nothing leaked onto the new gauges
    assert counters["meshctl_proxy_retries_total"] == 2
