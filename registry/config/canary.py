"""Canary (meshctl.dev/v1alpha1): a service's progressive-delivery policy, declared in the
config directory so that a file edit starts it, as a Flagger Canary does.

    apiVersion: meshctl.dev/v1alpha1
    kind: Canary
    metadata: {name: orders}
    spec:
      service: orders          # Flagger's targetRef
      from: v1                 # optional: the subset with the most weight
      to: v2                   # optional: the next version of `service` that registers
      route: canary            # optional: the http route, when the VirtualService has several
      analysis: {steps: [5, 10, 25, 50, 100], interval: 30s, successRate: 99, p99: 500ms,
                 minRequests: 20, failures: 3}

The analysis fields are the flags of `meshctl route canary`; their defaults are
CanaryPolicy's. The registry runs it (registry.canary); proxies never see it.
"""

from __future__ import annotations

import itertools

from yaml.nodes import Node

from registry.config.diagnostics import Source
from registry.config.mesh_file import DNS_LABEL
from registry.config.model import CanaryPolicy, CanarySpec
from registry.config.reader import Cx, Obj, as_duration, as_list, as_number, as_str, int_in
from registry.config.scope import Scope, SubsetRef

__all__ = ["API_VERSION", "SPEC_FIELDS", "parse_canary", "policy_problems"]

API_VERSION = "meshctl.dev/v1alpha1"
SPEC_FIELDS = ("service", "from", "to", "route", "analysis")
_ANALYSIS = ("steps", "interval", "successRate", "p99", "minRequests", "failures")
MIN_INTERVAL_S = 0.1


def parse_canary(cx: Cx, scope: Scope, spec: Obj, name: str, source: Source) -> CanarySpec | None:
    service = spec.require("service", scope.host)
    subsets: dict[str, str | None] = {}
    for key in ("from", "to"):
        subsets[key] = spec.get(key, as_str)
        value = subsets[key]
        if value is not None and service is not None:
            if not DNS_LABEL.fullmatch(value):
                cx.error(spec.value_node(key), spec.sub(key),
                         f"subset `{value}` is not a DNS label")
                return None
            scope.subset_refs.append(
                SubsetRef(cx, spec.value_node(key), spec.sub(key), service, value))
    if subsets["from"] is not None and subsets["from"] == subsets["to"]:
        cx.error(spec.value_node("to"), spec.sub("to"),
                 f"`to` is `from` (`{subsets['to']}`): a canary moves traffic to another subset")
        return None
    route = spec.get("route", as_str)
    policy = CanaryPolicy()
    if "analysis" in spec:
        parsed = _analysis(cx, spec.value_node("analysis"), spec.sub("analysis"))
        if parsed is None:
            return None
        policy = parsed
    if service is None or not spec.ok or ("route" in spec and route is None):
        return None
    return CanarySpec(name, service, subsets["from"], subsets["to"], route, policy, source)


def _analysis(cx: Cx, node: Node, path: str) -> CanaryPolicy | None:
    o = Obj(cx, node, path, _ANALYSIS)
    d = CanaryPolicy()
    steps: tuple[int, ...] | None = d.steps
    if "steps" in o:
        items = as_list(cx, o.value_node("steps"), o.sub("steps")) or []
        values = [int_in(1, 100, "weight")(cx, n, p) for n, p in items]
        steps = tuple(v for v in values if v is not None) if None not in values else None
        if steps is not None and (problem := _steps_problem(steps)):
            cx.error(o.value_node("steps"), o.sub("steps"), problem)
            steps = None
    interval = o.get("interval", as_duration(MIN_INTERVAL_S), d.interval_s)
    rate = o.get("successRate", as_number, d.success_rate)
    if rate is not None and not 0 <= rate <= 100:
        cx.error(o.value_node("successRate"), o.sub("successRate"),
                 f"successRate {rate:g} is not a percent (0..100)")
        rate = None
    p99 = o.get("p99", as_duration(0.001), d.p99_ms / 1000)
    minimum = o.get("minRequests", int_in(0, 10**9, "minRequests"), d.min_requests)
    failures = o.get("failures", int_in(1, 1000, "failures"), d.failures)
    if steps is None or interval is None or rate is None or p99 is None or minimum is None \
            or failures is None or not o.ok:
        return None
    return CanaryPolicy(steps, interval, rate, p99 * 1000, minimum, failures)


def _steps_problem(steps: tuple[int, ...]) -> str | None:
    if not steps:
        return "steps is empty: give the weights in turn, e.g. [5, 10, 25, 50, 100]"
    if any(b <= a for a, b in itertools.pairwise(steps)):
        return f"steps {list(steps)} must rise: each weight above the one before"
    return None


def policy_problems(policy: CanaryPolicy) -> list[str]:
    """What is wrong with a policy given on the command line or the API (the YAML path
    reports the same things with their positions)."""
    out = []
    if any(not 1 <= s <= 100 for s in policy.steps):
        out.append(f"steps {list(policy.steps)}: each weight must be 1..100")
    elif problem := _steps_problem(policy.steps):
        out.append(problem)
    if policy.interval_s < MIN_INTERVAL_S:
        out.append(f"interval must be at least {MIN_INTERVAL_S:g}s")
    if not 0 <= policy.success_rate <= 100:
        out.append(f"success rate {policy.success_rate:g} is not a percent (0..100)")
    if policy.p99_ms <= 0:
        out.append("p99 must be above 0")
    if policy.min_requests < 0:
        out.append("min-requests must be 0 or more")
    if policy.failures < 1:
        out.append("failures must be at least 1")
    return out
