"""DestinationRule (networking.istio.io): subsets, load balancing, connection pool, outlier
detection. Defaults are Istio's (destination_rule.proto), written into the model so the proxy
never has to know them; docs/config.md lists each."""

from __future__ import annotations

from yaml.nodes import Node

from registry.config.diagnostics import Source
from registry.config.mesh_file import DNS_LABEL
from registry.config.model import (
    UINT32_MAX,
    ConnectionPool,
    DestinationRule,
    HTTPSettings,
    LoadBalancer,
    OutlierDetection,
    Subset,
    TCPSettings,
    TrafficPolicy,
)
from registry.config.reader import EMPTY, Cx, Obj, as_duration, as_str, as_str_map, int_in, one_of
from registry.config.scope import Scope
from registry.config.virtual_service import export_to

__all__ = ["parse_destination_rule"]

_MIN = 0.001  # Istio: "MUST BE >=1ms"
_count = int_in(0, UINT32_MAX)
_positive = int_in(1, UINT32_MAX)


def parse_destination_rule(
    cx: Cx, scope: Scope, spec: Obj, name: str, source: Source
) -> DestinationRule | None:
    host = spec.require("host", scope.host)
    policy = spec.get("trafficPolicy", _traffic_policy)
    bad_policy = "trafficPolicy" in spec and policy is None
    subsets: list[Subset] = []
    for node, path in spec.items("subsets"):
        s = _subset(cx, node, path)
        if s is None:
            continue
        if any(x.name == s.name for x in subsets):
            cx.error(node, path, f"subset `{s.name}` is defined twice")
            continue
        subsets.append(s)
    export = spec.get("exportTo", export_to, EMPTY)
    svc = (scope.services or {}).get(host or "")
    if svc is not None and len(svc.ports) > 1:
        for key, pol in (("trafficPolicy", policy),
                         *(("subsets", sub.traffic_policy) for sub in subsets)):
            if pol is not None and pol.tls_mode == "DISABLE":
                # Plaintext between the proxies carries no SNI, so the inbound proxy could
                # not tell which of the ports was meant: refused rather than guessed.
                cx.error(spec.value_node(key), spec.sub(key),
                         f"tls.mode DISABLE for `{host}`, a service with {len(svc.ports)} "
                         "ports, is not supported yet: a plaintext hop does not carry the "
                         "port; use ISTIO_MUTUAL (the default)")
                break
    if host is None or bad_policy or export is None or not spec.ok:
        return None
    return DestinationRule(name, host, policy, tuple(subsets), export, source)


def _subset(cx: Cx, node: Node, path: str) -> Subset | None:
    o = Obj(cx, node, path, ("name", "labels", "trafficPolicy"))
    name = o.require("name", as_str)
    if name is not None and not DNS_LABEL.fullmatch(name):
        cx.error(o.value_node("name"), o.sub("name"), f"subset name `{name}` is not a DNS label")
        name = None
    labels = o.get("labels", as_str_map, EMPTY)
    policy = o.get("trafficPolicy", _traffic_policy)
    if name is None or labels is None or ("trafficPolicy" in o and policy is None) or not o.ok:
        return None
    return Subset(name, labels, policy)


def _traffic_policy(cx: Cx, node: Node, path: str) -> TrafficPolicy | None:
    o = Obj(cx, node, path, ("loadBalancer", "connectionPool", "outlierDetection", "tls"),
            ("portLevelSettings", "tunnel", "proxyProtocol"))
    lb = o.get("loadBalancer", _load_balancer)
    pool = o.get("connectionPool", _connection_pool)
    outlier = o.get("outlierDetection", _outlier_detection)
    tls_mode = None
    tls = o.obj("tls", ("mode",),
                ("clientCertificate", "privateKey", "caCertificates", "credentialName",
                 "subjectAltNames", "sni", "insecureSkipVerify", "caCrl"))
    if tls is not None:
        tls_mode = tls.require("mode", one_of(("ISTIO_MUTUAL", "DISABLE"), ("SIMPLE", "MUTUAL")))
    failed = any(k in o and v is None for k, v in (
        ("loadBalancer", lb), ("connectionPool", pool), ("outlierDetection", outlier),
        ("tls", tls_mode)))
    if failed or not o.ok:
        return None
    return TrafficPolicy(lb, pool, outlier, tls_mode)


def _load_balancer(cx: Cx, node: Node, path: str) -> LoadBalancer | None:
    o = Obj(cx, node, path, ("simple", "consistentHash"),
            ("localityLbSetting", "warmupDurationSecs", "warmup"))
    simple = o.get("simple", one_of(
        ("ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM", "UNSPECIFIED"),
        ("PASSTHROUGH",)))
    header = None
    ch = o.obj("consistentHash", ("httpHeaderName",),
               ("httpCookie", "useSourceIp", "httpQueryParameterName", "ringHash", "maglev",
                "minimumRingSize"))
    if ch is not None:
        header = ch.require("httpHeaderName", as_str)
        if "simple" in o:
            cx.error(o.key_node("consistentHash"), o.sub("consistentHash"),
                     "set `simple` or `consistentHash`, not both")
            return None
    if ("simple" in o and simple is None) or (ch is not None and header is None) or not o.ok:
        return None
    # LEAST_CONN is Istio's deprecated name for LEAST_REQUEST; UNSPECIFIED means "the default".
    simple = {"LEAST_CONN": "LEAST_REQUEST", "UNSPECIFIED": None}.get(simple or "", simple)
    return LoadBalancer(simple, header.lower() if header else None)


def _connection_pool(cx: Cx, node: Node, path: str) -> ConnectionPool | None:
    o = Obj(cx, node, path, ("tcp", "http"))
    tcp, http = TCPSettings(), HTTPSettings()
    t = o.obj("tcp", ("maxConnections", "connectTimeout"),
              ("tcpKeepalive", "maxConnectionDuration", "idleTimeout"))
    if t is not None:
        max_conn = t.get("maxConnections", _positive, tcp.max_connections)
        connect = t.get("connectTimeout", as_duration(_MIN), tcp.connect_timeout_s)
        if max_conn is None or connect is None or not t.ok:
            return None
        tcp = TCPSettings(max_conn, connect)
    h = o.obj("http", ("http1MaxPendingRequests", "http2MaxRequests", "maxRequestsPerConnection",
                       "maxRetries", "idleTimeout"),
              ("h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams"))
    if h is not None:
        values = (
            h.get("http1MaxPendingRequests", _count, http.http1_max_pending_requests),
            h.get("http2MaxRequests", _positive, http.http2_max_requests),
            h.get("maxRequestsPerConnection", int_in(0, 2**29), http.max_requests_per_connection),
            h.get("maxRetries", _count, http.max_retries),
        )
        idle = h.get("idleTimeout", as_duration(_MIN), http.idle_timeout_s)
        if None in values or idle is None or not h.ok:
            return None
        p, r, c, m = (v for v in values if v is not None)
        http = HTTPSettings(p, r, c, m, idle)
    return ConnectionPool(tcp, http) if o.ok else None


def _outlier_detection(cx: Cx, node: Node, path: str) -> OutlierDetection | None:
    o = Obj(cx, node, path,
            ("consecutive5xxErrors", "consecutiveGatewayErrors", "interval", "baseEjectionTime",
             "maxEjectionPercent", "minHealthPercent"),
            ("consecutiveErrors", "splitExternalLocalOriginErrors",
             "consecutiveLocalOriginFailures"))
    d = OutlierDetection()
    values = (
        o.get("consecutive5xxErrors", _count, d.consecutive_5xx_errors),
        o.get("consecutiveGatewayErrors", _count, d.consecutive_gateway_errors),
        o.get("maxEjectionPercent", int_in(0, 100, "maxEjectionPercent"), d.max_ejection_percent),
        o.get("minHealthPercent", int_in(0, 100, "minHealthPercent"), d.min_health_percent),
    )
    interval = o.get("interval", as_duration(_MIN), d.interval_s)
    base = o.get("baseEjectionTime", as_duration(_MIN), d.base_ejection_time_s)
    if None in values or interval is None or base is None or not o.ok:
        return None
    c5, cg, mx, mh = (v for v in values if v is not None)
    return OutlierDetection(c5, cg, interval, base, mx, mh)
