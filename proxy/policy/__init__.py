"""Pure decision logic for the proxy: one module per policy, no I/O, an injected clock.

Place in the flow: the asyncio stacks in ``proxy/outbound`` and ``proxy/inbound`` call these
per request, in request order:

    inbound:   authz (Istio AuthorizationPolicy) -> ratelimit (token bucket) -> app
    outbound:  fault -> weights (traffic split) -> limits (circuit breaker) -> balancer
               (over outlier.available_hosts()) -> attempt -> retry + budget + backoff
               -> outlier.report()

Off the request path: ``probe`` turns the proxy's probes of its own app into the health
the registry publishes (``proxy/control/apphealth.py`` runs the probes).

Every module takes its own small frozen parameter dataclass (defaults from Envoy / Istio /
Linkerd, see docs/policies.md), time from ``clock: Callable[[], float]`` (monotonic seconds)
and randomness from an injected ``random.Random``: tests drive the clock, never ``sleep``.
Per-call work is O(1) or O(log n); anything that can be precomputed is done at construction.
"""
