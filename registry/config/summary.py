"""A one-screen summary of a snapshot, for `meshctl validate`."""

from __future__ import annotations

from registry.config.duration import format_duration
from registry.config.model import (
    DestinationRule,
    HTTPRoute,
    MeshConfig,
    RouteDestination,
    VirtualService,
)

__all__ = ["summary_lines"]


def summary_lines(config: MeshConfig) -> list[str]:
    lines = [
        f"mesh {config.trust_domain}, namespace {config.namespace}, "
        f"certificates {format_duration(config.certificate_ttl_s)}, "
        f"registry {config.registry_address}:{config.registry_port}",
        f"digest sha256:{config.digest[:16]}",
        f"services ({len(config.services)}):",
    ]
    width = max((len(s.name) for s in config.services), default=0)
    for svc in config.services:
        ports = ", ".join(f"{p.protocol} {p.port}" for p in svc.ports)
        versions = ", ".join(f"{w.version} x{w.replicas}" for w in svc.workloads) or "no workloads"
        extra = ""
        if svc.rate_limit is not None:
            rl = svc.rate_limit
            extra = f"; rate limit {rl.requests_per_unit}/{rl.unit}"
        lines.append(f"  {svc.name:<{width}}  {ports}  [{versions}]{extra}")
    for vs in config.virtual_services:
        lines.extend(_virtual_service(vs))
    for dr in config.destination_rules:
        lines.append(_destination_rule(dr))
    for pa in config.peer_authentications:
        lines.append(f"PeerAuthentication {pa.name}: mTLS {pa.mode}"
                     + (f" for {_labels(pa.selector)}" if pa.selector else " mesh-wide"))
    for ap in config.authorization_policies:
        target = _labels(ap.selector) if ap.selector else "every workload"
        rules = f"{len(ap.rules)} rule(s)" if ap.rules else "no rules"
        lines.append(f"AuthorizationPolicy {ap.name}: {ap.action} on {target}, {rules}")
    for c in config.canaries:
        to = c.to or "the next version that registers"
        p = c.policy
        lines.append(f"Canary {c.name}: {c.service} to {to}, steps "
                     f"{','.join(map(str, p.steps))} every {format_duration(p.interval_s)}, "
                     f"rollback after {p.failures} failed check(s)")
    return lines


def _labels(pairs: tuple[tuple[str, str], ...] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in pairs or ())


def _split(route: tuple[RouteDestination, ...]) -> str:
    return " / ".join(
        f"{d.destination.host}{'@' + d.destination.subset if d.destination.subset else ''}"
        f" {d.weight}%" for d in route)


def _http(r: HTTPRoute) -> str:
    parts = [_split(r.route)]
    if r.timeout_s is not None:
        parts.append(f"timeout {format_duration(r.timeout_s)}")
    if r.retries is not None:
        per_try = (f" x {format_duration(r.retries.per_try_timeout_s)}"
                   if r.retries.per_try_timeout_s is not None else "")
        parts.append(f"retries {r.retries.attempts}{per_try} on {','.join(r.retries.retry_on)}")
    if r.fault is not None:
        parts.append("fault injection")
    if r.mirror is not None:
        parts.append(f"mirror to {r.mirror.host} {r.mirror_percentage:g}%")
    return "; ".join(parts)


def _virtual_service(vs: VirtualService) -> list[str]:
    head = f"VirtualService {vs.name} ({', '.join(vs.hosts)}):"
    routes = [f"    http{' ' + r.name if r.name else ''}: {_http(r)}" for r in vs.http]
    routes += [f"    tcp: {_split(r.route)}" for r in vs.tcp]
    return [head, *routes]


def _destination_rule(dr: DestinationRule) -> str:
    parts = [f"DestinationRule {dr.name} ({dr.host}):"]
    if dr.subsets:
        parts.append("subsets " + ", ".join(s.name for s in dr.subsets) + ";")
    p = dr.traffic_policy
    if p is not None and p.load_balancer is not None:
        parts.append(f"lb {p.load_balancer.simple or 'DEFAULT'};")
    if p is not None and p.outlier_detection is not None:
        o = p.outlier_detection
        parts.append(f"outlier {o.consecutive_5xx_errors}x5xx per "
                     f"{format_duration(o.interval_s)}, eject "
                     f"{format_duration(o.base_ejection_time_s)}, max {o.max_ejection_percent}%;")
    if p is not None and p.connection_pool is not None:
        c = p.connection_pool
        parts.append(f"pool {c.tcp.max_connections} conns, "
                     f"{c.http.http1_max_pending_requests} pending;")
    return " ".join(parts).rstrip(";")
