"""VirtualService HTTP route matching, compiled once per snapshot (uri, method, authority, headers)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from proxy.http1 import Request
from proxy.policy.weights import WeightedPicker
from registry.config.model import HTTPMatch, HTTPRoute, StringMatch

Predicate = Callable[[bytes], bool]


def _string_predicate(m: StringMatch, ignore_case: bool = False) -> Predicate:
    if m.kind == "present":
        return lambda v: True
    raw = m.value.encode()
    if ignore_case:
        raw = raw.lower()
    if m.kind == "exact":
        return (lambda v: v.lower() == raw) if ignore_case else (lambda v: v == raw)
    if m.kind == "prefix":
        return (lambda v: v.lower().startswith(raw)) if ignore_case else (lambda v: v.startswith(raw))
    # Istio regexes are RE2 full matches (the validator refused what RE2 lacks).
    rx = re.compile(raw, re.IGNORECASE if ignore_case else 0)
    return lambda v: rx.fullmatch(v) is not None


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


@dataclass(slots=True)
class CompiledRoute:
    """One `http` entry of a VirtualService, ready to match and to pick a destination."""

    route: HTTPRoute
    matches: tuple[Callable[[Request], bool], ...]
    picker: WeightedPicker | None

    def matches_request(self, req: Request) -> bool:
        return not self.matches or any(m(req) for m in self.matches)

    def pick(self) -> int:
        return 0 if self.picker is None else self.picker.pick()


def compile_route(route: HTTPRoute) -> CompiledRoute:
    weights = [d.weight for d in route.route]
    return CompiledRoute(route=route, matches=tuple(_compile_match(m) for m in route.match),
                         picker=WeightedPicker(weights) if len(weights) > 1 else None)


def first_match(routes: tuple[CompiledRoute, ...], req: Request) -> CompiledRoute | None:
    """Istio evaluates `http` entries in order; the first whose match list matches wins."""
    for r in routes:
        if r.matches_request(req):
            return r
    return None
