"""mesh.yaml: the trust domain, the namespace, the registry address and the services."""

from __future__ import annotations

import re
from dataclasses import dataclass

from yaml.nodes import Node

from registry.config.diagnostics import Diagnostic, Source
from registry.config.model import (
    Port,
    RateLimit,
    RouteRateLimit,
    Service,
    VirtualService,
    Workload,
)
from registry.config.probe import parse_readiness_probe
from registry.config.reader import (
    EMPTY,
    Conv,
    Cx,
    Obj,
    as_duration,
    as_str,
    as_str_list,
    as_str_map,
    int_in,
    join,
    mapping_items,
    one_of,
    scalar_text,
)

__all__ = ["MeshFile", "check_route_rate_limits", "parse_mesh_file"]

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
# `user:` as Docker's: a name or a uid, optionally `:group` or `:gid` (shadow-utils' names).
_ID = r"(?:[a-z_][a-z0-9_.-]{0,31}|[0-9]{1,10})"
_USER = re.compile(rf"{_ID}(?::{_ID})?")
PROXY_UID = 1337  # the sidecars' uid: interception lets its traffic out unredirected
# Istio protocol names (port name prefixes / appProtocol) that we cannot proxy yet. Its
# HTTP/2 ones (http2, grpc, grpc-web) are accepted and relayed as TCP (model.RELAYED_AS_TCP).
_PROTOCOLS_UNSUPPORTED = ("https", "tls", "mongo", "mysql", "redis", "udp", "h2c")
_PROTOCOLS = ("HTTP", "TCP", "HTTP2", "GRPC", "GRPC-WEB")


@dataclass(frozen=True, slots=True)
class MeshFile:
    trust_domain: str
    namespace: str
    certificate_ttl_s: float
    registry_address: str
    registry_port: int
    services: tuple[Service, ...]


def _matching(pattern: re.Pattern[str], what: str) -> Conv[str]:
    def conv(cx: Cx, node: Node, path: str) -> str | None:
        v = as_str(cx, node, path)
        if v is not None and not pattern.fullmatch(v):
            cx.error(node, path, f"`{v}` is not a valid {what}")
            return None
        return v

    return conv


_trust_domain = _matching(_TRUST_DOMAIN, "trust domain (lowercase letters, digits, '.', '-', '_')")
_dns_label = _matching(DNS_LABEL, "name (a DNS label: lowercase letters, digits and '-')")
_label_value = _matching(_LABEL_VALUE, "label value")


def parse_mesh_file(cx: Cx, doc: Node) -> MeshFile | None:
    top = Obj(cx, doc, "", ("trustDomain", "namespace", "certificateTTL", "registry", "services"))
    if not top.ok and not top.fields:
        return None
    trust_domain = top.get("trustDomain", _trust_domain, "cluster.local")
    namespace = top.get("namespace", _dns_label, "default")
    ttl = top.get("certificateTTL", as_duration(60.0), 24 * 3600.0)
    address, port = "127.0.0.1", 15012
    reg = top.obj("registry", ("address", "port"))
    if reg is not None:
        address = reg.get("address", as_str, address) or address
        port = reg.get("port", int_in(1, 65535, "port"), port) or port
    services: list[Service] = []
    if "services" in top:
        for name, knode, vnode in mapping_items(cx, top.value_node("services"), "services") or []:
            path = join("services", name)
            if not DNS_LABEL.fullmatch(name):
                cx.error(knode, path, f"service name `{name}` is not a DNS label "
                         "(lowercase letters, digits and '-', at most 63)")
                continue
            svc = _service(cx, name, knode, vnode, path)
            if svc is not None:
                services.append(svc)
    else:
        top.missing("services")
    if not isinstance(trust_domain, str) or not isinstance(namespace, str) or ttl is None:
        return None
    return MeshFile(trust_domain, namespace, ttl, address, port, tuple(services))


def _service(cx: Cx, name: str, knode: Node, node: Node, path: str) -> Service | None:
    o = Obj(cx, node, path, ("ports", "rateLimit", "routeRateLimits", "accessLog", "workloads"))
    ports: list[Port] = []
    for pnode, ppath in o.items("ports"):
        port = _port(cx, pnode, ppath, ports)
        if port is not None:
            ports.append(port)
    if "ports" not in o:
        o.missing("ports")
    rate_limit = None
    if "rateLimit" in o:
        rate_limit = _rate_limit(cx, o.value_node("rateLimit"), o.sub("rateLimit"))
    route_limits: tuple[RouteRateLimit, ...] = ()
    if "routeRateLimits" in o:
        key = "routeRateLimits"
        route_limits = _route_rate_limits(cx, o.value_node(key), o.sub(key))
    access_log = o.get("accessLog", _access_log, "off")
    workloads: list[Workload] = []
    for wnode, wpath in o.items("workloads"):
        w = _workload(cx, name, wnode, wpath, ports)
        if w is not None:
            workloads.append(w)
    versions = [w.version for w in workloads]
    if len(set(versions)) != len(versions):
        cx.error(o.value_node("workloads"), join(path, "workloads"),
                 "two workloads have the same version: versions must be unique per service")
    mark = knode.start_mark
    if access_log is None:
        return None
    return Service(name, tuple(ports), rate_limit, access_log, tuple(workloads),
                   Source(cx.file, mark.line + 1, mark.column + 1), route_limits)


def _rate_limit(cx: Cx, node: Node, path: str) -> RateLimit | None:
    rl = Obj(cx, node, path, ("requestsPerUnit", "unit", "burst"))
    per_unit = rl.require("requestsPerUnit", int_in(1, 10**9, "requestsPerUnit"))
    unit = rl.get("unit", one_of(("second", "minute")), "second")
    burst = rl.get("burst", int_in(1, 10**9, "burst"), per_unit)
    if per_unit is None or unit is None or burst is None:
        return None
    return RateLimit(per_unit, unit, burst)


def _route_rate_limits(cx: Cx, node: Node, path: str) -> tuple[RouteRateLimit, ...]:
    """`routeRateLimits: {<http route name>: {requestsPerUnit, unit, burst}}`; the names are
    checked against the service's VirtualService by `check_route_rate_limits`."""
    out: list[RouteRateLimit] = []
    for route, knode, vnode in mapping_items(cx, node, path) or []:
        limit = _rate_limit(cx, vnode, join(path, route))
        if limit is not None:
            mark = knode.start_mark
            out.append(RouteRateLimit(route, limit,
                                      Source(cx.file, mark.line + 1, mark.column + 1)))
    return tuple(sorted(out, key=lambda r: r.route))


def check_route_rate_limits(
    services: tuple[Service, ...], virtual_services: tuple[VirtualService, ...]
) -> list[Diagnostic]:
    """Every `routeRateLimits` key names an `http` route (by its `name`) of the VirtualService
    for that service: a limit on a route that never matches would silently limit nothing."""
    errors: list[Diagnostic] = []
    for svc in services:
        if not svc.route_rate_limits:
            continue
        vs = next((v for v in virtual_services if svc.name in v.hosts), None)
        names = [r.name for r in vs.http if r.name] if vs is not None else []
        for rl in svc.route_rate_limits:
            if rl.route in names:
                continue
            if vs is None:
                msg = (f"route `{rl.route}` is not defined: no VirtualService for `{svc.name}`; "
                       "routeRateLimits names `http` routes of the service's VirtualService")
            else:
                known = ", ".join(f"`{n}`" for n in names) or "none (give the routes a `name`)"
                msg = (f"unknown route `{rl.route}`: VirtualService `{vs.name}` ({vs.source}) "
                       f"names these http routes for `{svc.name}`: {known}")
            path = join(join(join("services", svc.name), "routeRateLimits"), rl.route)
            errors.append(Diagnostic(rl.source.file, rl.source.line, rl.source.column, path, msg))
    return errors


def _access_log(cx: Cx, node: Node, path: str) -> str | None:
    v = as_str(cx, node, path)
    if v is None:
        return None
    if v in ("stdout", "off") or v.startswith("/"):
        return v
    cx.error(node, path, f"accessLog `{v}` must be stdout, off or an absolute file path")
    return None


def _port(cx: Cx, node: Node, path: str, earlier: list[Port]) -> Port | None:
    o = Obj(cx, node, path, ("port", "protocol", "name"))
    number = o.require("port", int_in(1, 65535, "port"))
    # No protocol: detected per connection from the client's first bytes (Istio's and
    # Linkerd's default), so server-first protocols work too (see proxy/transport/detect.py).
    protocol = o.get(
        "protocol",
        one_of(_PROTOCOLS, [p.upper() for p in _PROTOCOLS_UNSUPPORTED], upper=True),
        "AUTO",
    )
    if protocol is None or number is None:
        return None
    protocol = protocol.lower()
    name = o.get("name", _dns_label, None) or f"{protocol}-{number}"
    assert isinstance(name, str)
    if any(p.port == number for p in earlier):
        cx.error(o.value_node("port"), o.sub("port"), f"port {number} is listed twice")
        return None
    if any(p.name == name for p in earlier):
        cx.error(node, o.sub("name"), f"port name `{name}` is used twice")
        return None
    return Port(number, protocol, name)


def _user(cx: Cx, node: Node, path: str) -> str | None:
    """Who the app runs as. Only the syntax here; names are resolved on the host at `up`."""
    v = scalar_text(cx, node, path)
    if v is None:
        return None
    if not _USER.fullmatch(v):
        cx.error(node, path, f"user `{v}`: give a user name or uid, optionally with "
                 "`:group` or `:gid` (as Docker's `user:`), e.g. `app` or `1000:1000`")
        return None
    for part in v.split(":"):
        if part in ("root", "0"):
            cx.error(node, path, f"user `{v}` runs the app as root (id 0): workloads are not "
                     "trusted (SECURITY.md); choose an unprivileged user, or leave `user:` out "
                     "for the default (nobody)")
            return None
        if part == str(PROXY_UID):
            cx.error(node, path, f"user `{v}`: id {PROXY_UID} is the proxies' (its traffic "
                     "bypasses interception and it reads the proxies' keys); choose another")
            return None
    return v


def _workload(
    cx: Cx, service: str, node: Node, path: str, ports: list[Port]
) -> Workload | None:
    o = Obj(cx, node, path,
            ("version", "command", "image", "env", "replicas", "labels", "user",
             "readinessProbe", "excludeInboundPorts"))  # fmt: skip
    version = o.require("version", _label_value)
    command = o.get("command", as_str_list, EMPTY)
    image = o.get("image", as_str, None)
    env = o.get("env", as_str_map, EMPTY)
    replicas = o.get("replicas", int_in(0, 1000, "replicas"), 1)
    labels = o.get("labels", as_str_map, EMPTY)
    user = o.get("user", _user, "")
    if "user" in o and "command" not in o:
        cx.error(o.key_node("user"), o.sub("user"), "`user:` is for a workload with a "
                 "`command` (the local runtime starts it); a container runs as its image's or "
                 "its compose service's `user:`")
    probe = None
    if "readinessProbe" in o:
        key = "readinessProbe"
        probe = parse_readiness_probe(cx, o.value_node(key), o.sub(key), ports)
        if probe is None:
            return None
    excluded = _port_list(cx, o, "excludeInboundPorts")
    if "command" not in o and "image" not in o:
        cx.error(node, path, "a workload needs a `command` (local runtime) or an `image` (docker)")
    if command == () and "command" in o:
        cx.error(o.value_node("command"), o.sub("command"), "command must not be empty")
    for key, _ in labels or ():
        if key in ("app", "version"):
            cx.error(o.key_node("labels"), join(o.sub("labels"), key),
                     f"label `{key}` is implied (app=<service>, version=<version>); remove it")
            return None
    if not isinstance(version, str) or command is None or env is None or replicas is None:
        return None
    if labels is None or user is None or excluded is None:
        return None
    all_labels = tuple(sorted({**dict(labels), "app": service, "version": version}.items()))
    where = None
    if user:
        mark = o.value_node("user").start_mark
        where = Source(cx.file, mark.line + 1, mark.column + 1)
    return Workload(
        version, command, image, env, replicas, all_labels,
        user=user, user_source=where, readiness=probe,
        exclude_inbound_ports=excluded,
    )


def _port_list(cx: Cx, o: Obj, key: str) -> tuple[int, ...] | None:
    """A list of TCP ports (Istio's annotation is a comma-separated string; a YAML list here)."""
    out: list[int] = []
    for pnode, ppath in o.items(key):
        port = int_in(1, 65535, "port")(cx, pnode, ppath)
        if port is None:
            return None
        out.append(port)
    return tuple(sorted(set(out)))
