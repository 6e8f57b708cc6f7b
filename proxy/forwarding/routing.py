"""VirtualService HTTP routes compiled once per snapshot: matching, weights, header ops."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proxy.http1 import Request, request_drop
from proxy.policy.clock import Clock
from proxy.policy.fault import FaultParams
from proxy.policy.ratelimit import TokenBucket
from proxy.policy.retry import RetryParams
from proxy.policy.weights import WeightedPicker
from registry.config.model import (
    Destination,
    Fault,
    HeaderOperations,
    HTTPMatch,
    HTTPRoute,
    RateLimit,
    Service,
    StringMatch,
)
from registry.config.regex import full_matcher

Predicate = Callable[[bytes], bool]


def _string_predicate(m: StringMatch, ignore_case: bool = False) -> Predicate:
    if m.kind == "present":
        return lambda v: True
    raw = m.value.encode()
    if m.kind == "regex":
        # Istio regexes are RE2 full matches, run by RE2 itself (linear time: no ReDoS),
        # compiled here once per snapshot by the engine that checked them at config load.
        # Istio's ignoreUriCase applies to exact and prefix matches only, never to a regex.
        return full_matcher(m.value)
    if ignore_case:
        raw = raw.lower()
    if m.kind == "exact":
        return (lambda v: v.lower() == raw) if ignore_case else (lambda v: v == raw)
    if m.kind == "prefix":
        return (
            (lambda v: v.lower().startswith(raw)) if ignore_case else (lambda v: v.startswith(raw))
        )
    raise ValueError(f"unknown string match kind {m.kind!r}")


def _path_of(target: bytes) -> bytes:
    q = target.find(b"?")
    return target if q < 0 else target[:q]


def _compile_match(m: HTTPMatch) -> Callable[[Request], bool]:
    checks: list[Callable[[Request], bool]] = []
    if m.uri is not None:
        p = _string_predicate(m.uri, m.ignore_uri_case)
        checks.append(lambda r: p(_path_of(r.target)))
    if m.method is not None:
        pm = _string_predicate(m.method)
        checks.append(lambda r: pm(r.method))
    if m.authority is not None:
        pa = _string_predicate(m.authority)
        checks.append(lambda r: pa(r.host or b""))
    for name, sm in m.headers:
        hn, ph = name.encode(), _string_predicate(sm)

        def header_ok(r: Request, hn: bytes = hn, ph: Predicate = ph) -> bool:
            v = r.get(hn)
            return v is not None and ph(v)

        checks.append(header_ok)
    for name, sm in m.without_headers:
        hn, ph = name.encode(), _string_predicate(sm)

        def header_absent(r: Request, hn: bytes = hn, ph: Predicate = ph) -> bool:
            v = r.get(hn)
            return v is None or not ph(v)

        checks.append(header_absent)
    if m.query_params:
        qps = [(k.encode(), _string_predicate(sm)) for k, sm in m.query_params]

        def query_ok(r: Request) -> bool:
            q = r.target.partition(b"?")[2]
            params = dict(kv.partition(b"=")[::2] for kv in q.split(b"&") if kv)
            return all(k in params and p(params[k]) for k, p in qps)

        checks.append(query_ok)
    if not checks:
        return lambda r: True
    if len(checks) == 1:
        return checks[0]
    return lambda r: all(c(r) for c in checks)


HeaderList = list[tuple[bytes, bytes]]


def _pairs(items: Iterable[tuple[str, str]]) -> HeaderList:
    return [(k.encode(), v.encode()) for k, v in items]


@dataclass(slots=True)
class CompiledRoute:
    """One `http` entry of a VirtualService, ready to match and to pick a destination.

    Everything a request needs from the route is computed here once per snapshot: retry
    parameters, header operations as bytes, the weighted picker.
    """

    route: HTTPRoute
    matches: tuple[Callable[[Request], bool], ...]
    picker: WeightedPicker | None
    retry: RetryParams
    # Per destination index: request headers to add, names to remove (route + destination).
    add_request: tuple[HeaderList, ...]
    remove_request: tuple[frozenset[bytes], ...]
    # remove_request plus what never goes upstream (proxy.http1.request_drop), per index.
    drop_request: tuple[frozenset[bytes], ...]
    response_ops: tuple[Callable[[HeaderList], HeaderList] | None, ...]
    fault: FaultParams | None
    # Per destination index: (host, subset, port) of route.route[i].destination, and the
    # route's timeout and mirror: read per request, so copied out of the config objects
    # (not compiled: each attribute read there is a generic lookup) once per snapshot.
    dests: tuple[tuple[str, str | None, int | None], ...]
    timeout_s: float | None
    mirror: Destination | None
    mirror_percentage: float
    # mesh.yaml `routeRateLimits` of the destination service for this route, put here by
    # RouteLimits.attach before the snapshot is swapped in.
    rate_limit: TokenBucket | None = None

    def matches_request(self, req: Request) -> bool:
        return not self.matches or any(m(req) for m in self.matches)

    def pick(self) -> int:
        return 0 if self.picker is None else self.picker.pick()


def _retry_params(route: HTTPRoute) -> RetryParams:
    r = route.retries
    if r is None:
        return RetryParams()  # Istio's default: 2 retries on connect-failure,refused-stream,...
    return RetryParams(
        attempts=r.attempts, per_try_timeout_s=r.per_try_timeout_s, retry_on=frozenset(r.retry_on)
    )


def _response_ops(
    route: HeaderOperations, dest: HeaderOperations
) -> Callable[[HeaderList], HeaderList] | None:
    set_ = _pairs((*route.set, *dest.set))
    add = _pairs((*route.add, *dest.add))
    drop = frozenset(
        {k.lower().encode() for k in (*route.remove, *dest.remove)} | {k.lower() for k, _ in set_}
    )
    if not (set_ or add or drop):
        return None

    def apply(headers: HeaderList) -> HeaderList:
        return [(n, v) for n, v in headers if n.lower() not in drop] + set_ + add

    return apply


def compile_route(route: HTTPRoute, spoofable: frozenset[bytes] = frozenset()) -> CompiledRoute:
    weights = [d.weight for d in route.route]
    ops = route.headers.request
    adds, removes, resp = [], [], []
    for d in route.route:
        dops = d.headers.request
        adds.append(_pairs((*ops.set, *ops.add, *dops.set, *dops.add)))
        removes.append(
            frozenset(
                spoofable
                | {k.lower().encode() for k in (*ops.remove, *dops.remove)}
                | {k.lower().encode() for k, _ in (*ops.set, *dops.set)}
            )
        )
        resp.append(_response_ops(route.headers.response, d.headers.response))
    return CompiledRoute(
        route=route,
        matches=tuple(_compile_match(m) for m in route.match),
        picker=WeightedPicker(weights) if len(weights) > 1 else None,
        retry=_retry_params(route),
        add_request=tuple(adds),
        remove_request=tuple(removes),
        drop_request=tuple(request_drop(r) for r in removes),
        response_ops=tuple(resp),
        fault=_fault_params(route.fault),
        dests=tuple((d.destination.host, d.destination.subset, d.destination.port)
                    for d in route.route),
        timeout_s=route.timeout_s,
        mirror=route.mirror,
        mirror_percentage=route.mirror_percentage,
    )


def _fault_params(fault: Fault | None) -> FaultParams | None:
    if fault is None:
        return None
    return FaultParams(
        delay_s=fault.delay.fixed_delay_s if fault.delay else 0.0,
        delay_percent=fault.delay.percentage if fault.delay else 0.0,
        abort_status=fault.abort.http_status if fault.abort else None,
        abort_percent=fault.abort.percentage if fault.abort else 0.0,
    )


def first_match(routes: tuple[CompiledRoute, ...], req: Request) -> CompiledRoute | None:
    """Istio evaluates `http` entries in order; the first whose match list matches wins."""
    for r in routes:
        if r.matches_request(req):
            return r
    return None


class RouteLimits:
    """The token buckets of mesh.yaml `routeRateLimits`, one per (service, route name).

    A bucket outlives snapshots while its parameters stay the same, so a config push (or a
    catalog change) neither refills nor empties it; `attach` puts each on the routes of a new
    snapshot once, so a request only reads `CompiledRoute.rate_limit`.
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[RateLimit, TokenBucket]] = {}

    def attach(self, views: Iterable[tuple[Service, tuple[CompiledRoute, ...]]]) -> None:
        kept: dict[tuple[str, str], tuple[RateLimit, TokenBucket]] = {}
        for service, routes in views:
            for rl in service.route_rate_limits:
                key = (service.name, rl.route)
                old = self._buckets.get(key)
                bucket = old[1] if old is not None and old[0] == rl.limit else new_bucket(
                    rl.limit, self._clock)
                kept[key] = (rl.limit, bucket)
                for r in routes:
                    if r.route.name == rl.route:
                        r.rate_limit = bucket
        self._buckets = kept


def new_bucket(limit: RateLimit, clock: Clock) -> TokenBucket:
    return TokenBucket(limit.requests_per_unit / limit.fill_interval_s, limit.burst, clock)


def over_limit(bucket: TokenBucket) -> int | None:
    """Spend a token; when there is none, the whole seconds for `retry-after` (at least 1)."""
    if bucket.take():
        return None
    return max(1, int(bucket.retry_after_s()))
