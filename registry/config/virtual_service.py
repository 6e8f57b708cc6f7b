"""VirtualService (networking.istio.io): routing, retries, timeouts, faults, mirroring.

Field names and meanings follow Istio's VirtualService reference; fields Istio has and we do
not implement yet are named in an error, never ignored.
"""

from __future__ import annotations

from yaml.nodes import Node

from registry.config.diagnostics import Source
from registry.config.gateway import external_host
from registry.config.model import (
    DEFAULT_RETRY_ON,
    Abort,
    Delay,
    Destination,
    Fault,
    HeaderOperations,
    Headers,
    HTTPMatch,
    HTTPRoute,
    Retries,
    Rewrite,
    RouteDestination,
    StringMatch,
    TCPRoute,
    VirtualService,
)
from registry.config.reader import (
    EMPTY,
    Conv,
    Cx,
    Obj,
    as_bool,
    as_duration,
    as_number,
    as_str,
    as_str_list,
    as_str_map,
    int_in,
    join,
    mapping_items,
)
from registry.config.regex import check_re2
from registry.config.scope import Scope, SubsetRef

__all__ = ["RETRY_ON", "export_to", "parse_virtual_service", "percentage"]

# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on conditions that Istio passes through.
RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "refused-stream",
    "retriable-status-codes",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
})
_RETRY_ON_UNSUPPORTED = frozenset({
    "retriable-headers", "reset-before-request", "envoy-ratelimited",
    "http3-post-connect-failure",
})
_MIN = 0.001  # Istio: "MUST BE >=1ms"


def percentage(cx: Cx, node: Node, path: str) -> float | None:
    """Istio's Percent message: `{value: 0..100}`."""
    o = Obj(cx, node, path, ("value",))
    value = o.require("value", as_number)
    if value is not None and not 0.0 <= value <= 100.0:
        cx.error(o.value_node("value"), o.sub("value"), f"percentage {value:g} is outside 0..100")
        return None
    return value


def export_to(cx: Cx, node: Node, path: str) -> tuple[str, ...] | None:
    values = as_str_list(cx, node, path)
    for v in values or ():
        if v not in ("*", "."):
            cx.error(node, path, f"exportTo `{v}` is not supported yet: this mesh has one "
                     "namespace, so only \"*\" and \".\" mean anything")
            return None
    return values


def _weight(cx: Cx, node: Node, path: str) -> int | None:
    return int_in(0, 100, "weight")(cx, node, path)


def parse_virtual_service(
    cx: Cx, scope: Scope, spec: Obj, name: str, source: Source
) -> VirtualService | None:
    gateways = gateway_names(cx, scope, spec)
    # Bound to the sidecars (`mesh`), hosts are mesh services; bound to gateways only, they
    # are the external names clients ask the gateway for (Istio's semantics).
    host_of = scope.host if gateways is not None and "mesh" in gateways else external_host
    hosts: list[str] = []
    host_items = spec.items("hosts")
    for hnode, hpath in host_items:
        h = host_of(cx, hnode, hpath)
        if h is not None:
            hosts.append(h)
    if "hosts" not in spec:
        spec.missing("hosts")
    export = spec.get("exportTo", export_to, EMPTY)
    http = [_http_route(cx, scope, n, p) for n, p in spec.items("http")]
    tcp = [_tcp_route(cx, scope, n, p) for n, p in spec.items("tcp")]
    if not http and not tcp and spec.ok:
        cx.error(spec.node, spec.path, "a VirtualService needs `http` or `tcp` routes")
    if tcp and gateways is not None and gateways != ("mesh",):
        cx.error(spec.key_node("tcp"), spec.sub("tcp"), "`tcp` routes on a Gateway are not "
                 "supported yet: bind this VirtualService to `mesh` only, or use `http`")
        return None
    if export is None or gateways is None or len(hosts) != len(host_items):
        return None
    return VirtualService(
        name=name,
        hosts=tuple(hosts),
        http=tuple(r for r in http if r is not None),
        tcp=tuple(r for r in tcp if r is not None),
        export_to=export,
        source=source,
        gateways=gateways,
    )


def gateway_names(cx: Cx, scope: Scope, spec: Obj) -> tuple[str, ...] | None:
    """Istio `gateways`: absent means `mesh` (the sidecars) only; a Gateway is named as
    `NAME` or `NAMESPACE/NAME`, and `mesh` must be listed too for the sidecars to apply the
    routes as well. Whether each named Gateway exists is checked once every file is read."""
    if "gateways" not in spec:
        return ("mesh",)
    out: list[str] = []
    items = spec.items("gateways")
    for node, path in items:
        name = as_str(cx, node, path)
        if name is None:
            continue
        ns, sep, rest = name.rpartition("/")
        if sep and ns != scope.namespace:
            cx.error(node, path, f"gateway `{name}` is in namespace `{ns}`: this mesh's "
                     f"Gateways are in namespace `{scope.namespace}`; write `{rest}`")
            continue
        out.append(rest)
    if not items and spec.ok:
        cx.error(spec.value_node("gateways"), spec.sub("gateways"),
                 "an empty `gateways` list binds the routes nowhere: remove it (the sidecars, "
                 "`mesh`) or name a Gateway")
        return None
    return tuple(out) if len(out) == len(items) else None


def _http_route(cx: Cx, scope: Scope, node: Node, path: str) -> HTTPRoute | None:
    o = Obj(cx, node, path,
            ("name", "match", "route", "timeout", "retries", "fault", "mirror",
             "mirrorPercentage", "headers", "rewrite"),
            ("redirect", "directResponse", "delegate", "mirrors", "corsPolicy", "mirrorPercent",
             "mirror_percent"))
    name = o.get("name", as_str)
    matches = [_match(cx, n, p) for n, p in o.items("match")]
    route = _destinations(cx, scope, o, with_headers=True)
    timeout = o.get("timeout", as_duration(_MIN))
    retries = None
    if "retries" in o:
        retries = _retries(cx, o.value_node("retries"), o.sub("retries"))
    fault = None
    if "fault" in o:
        fault = _fault(cx, o.value_node("fault"), o.sub("fault"))
    mirror = None
    if "mirror" in o:
        mirror = _destination(cx, scope, o.value_node("mirror"), o.sub("mirror"))
    mirror_pct = o.get("mirrorPercentage", percentage, 100.0)
    if "mirrorPercentage" in o and "mirror" not in o:
        cx.error(o.key_node("mirrorPercentage"), o.sub("mirrorPercentage"),
                 "mirrorPercentage without `mirror`")
    headers = o.get("headers", _headers, Headers())
    rewrite = None
    rw = o.obj("rewrite", ("uri", "authority"), ("uriRegexRewrite",))
    if rw is not None:
        rewrite = Rewrite(rw.get("uri", as_str), rw.get("authority", as_str))
    if not o.ok or route is None or None in matches or headers is None or mirror_pct is None:
        return None
    return HTTPRoute(
        name=name,
        match=tuple(m for m in matches if m is not None),
        route=route,
        timeout_s=timeout,
        retries=retries,
        fault=fault,
        mirror=mirror,
        mirror_percentage=mirror_pct,
        headers=headers,
        rewrite=rewrite,
        source=Source(cx.file, node.start_mark.line + 1, node.start_mark.column + 1),
    )


def _string_match(allow_present: bool, allow_prefix: bool = True) -> Conv[StringMatch]:
    def conv(cx: Cx, node: Node, path: str) -> StringMatch | None:
        o = Obj(cx, node, path, ("exact", "prefix", "regex") if allow_prefix
                else ("exact", "regex"), () if allow_prefix else ("prefix",))
        kinds = [k for k in ("exact", "prefix", "regex") if k in o]
        if not o.ok:
            return None
        if not kinds:
            if allow_present:
                return StringMatch("present", "")
            cx.error(node, path, "set one of `exact`, `prefix` or `regex`")
            return None
        if len(kinds) > 1:
            cx.error(node, path, f"set only one of `exact`, `prefix` or `regex`, not {kinds}")
            return None
        kind = kinds[0]
        value = o.get(kind, as_str)
        if value is None:
            return None
        if kind == "regex":
            problem = check_re2(value)
            if problem is not None:
                cx.error(o.value_node(kind), o.sub(kind), problem)
                return None
        return StringMatch(kind, value)

    return conv


_uri_match = _string_match(allow_present=False)
_header_match = _string_match(allow_present=True)
_query_match = _string_match(allow_present=True, allow_prefix=False)


def _match_map(conv: Conv[StringMatch], lower: bool) -> Conv[tuple[tuple[str, StringMatch], ...]]:
    def read(cx: Cx, node: Node, path: str) -> tuple[tuple[str, StringMatch], ...] | None:
        out: list[tuple[str, StringMatch]] = []
        for key, _k, vnode in mapping_items(cx, node, path) or []:
            m = conv(cx, vnode, join(path, key))
            if m is not None:
                out.append((key.lower() if lower else key, m))
        return tuple(sorted(out, key=lambda kv: kv[0]))

    return read


def _match(cx: Cx, node: Node, path: str) -> HTTPMatch | None:
    o = Obj(cx, node, path,
            ("name", "uri", "method", "authority", "headers", "withoutHeaders", "queryParams",
             "port", "ignoreUriCase"),
            ("scheme", "sourceLabels", "gateways", "sourceNamespace", "statPrefix"))
    headers = o.get("headers", _match_map(_header_match, True), EMPTY)
    without = o.get("withoutHeaders", _match_map(_header_match, True), EMPTY)
    query = o.get("queryParams", _match_map(_query_match, False), EMPTY)
    if headers is None or without is None or query is None:
        return None
    m = HTTPMatch(
        name=o.get("name", as_str),
        uri=o.get("uri", _uri_match),
        method=o.get("method", _uri_match),
        authority=o.get("authority", _uri_match),
        headers=headers,
        without_headers=without,
        query_params=query,
        port=o.get("port", int_in(1, 65535, "port")),
        ignore_uri_case=bool(o.get("ignoreUriCase", as_bool, False)),
    )
    return m if o.ok else None


def _destination(cx: Cx, scope: Scope, node: Node, path: str) -> Destination | None:
    o = Obj(cx, node, path, ("host", "subset", "port"))
    host = o.require("host", scope.host)
    subset = o.get("subset", as_str)
    port = None
    po = o.obj("port", ("number",))
    if po is not None:
        port = po.require("number", int_in(1, 65535, "port"))
        if host is not None and port is not None:
            scope.port_of(cx, po.value_node("number"), po.sub("number"), host, port)
    if host is None:
        return None
    if subset is not None:
        scope.subset_refs.append(SubsetRef(cx, o.value_node("subset"), o.sub("subset"), host,
                                           subset))
    return Destination(host, subset, port)


def _destinations(
    cx: Cx, scope: Scope, o: Obj, *, with_headers: bool
) -> tuple[RouteDestination, ...] | None:
    """`route:` of an HTTP or TCP route, with Istio's weight rules: a lone destination may
    omit its weight (it gets 100); with several, the weights must add up to 100."""
    if "route" not in o:
        o.missing("route")
        return None
    items = o.items("route")
    if not items:
        cx.error(o.value_node("route"), o.sub("route"), "`route` needs at least one destination")
        return None
    out: list[RouteDestination] = []
    weights: list[int] = []
    ok = True
    for node, path in items:
        fields = ("destination", "weight", "headers") if with_headers else ("destination", "weight")
        d = Obj(cx, node, path, fields)
        dest = d.require("destination", lambda c, n, p: _destination(c, scope, n, p))
        weight = d.get("weight", _weight)
        headers = d.get("headers", _headers, Headers())
        if "weight" in d and weight is None:
            ok = False
        weights.append(weight or 0)
        if dest is None or headers is None or not d.ok:
            ok = False
            continue
        out.append(RouteDestination(dest, 100 if len(items) == 1 and "weight" not in d
                                    else (weight or 0), headers))
    if ok and len(items) > 1 and sum(weights) != 100:
        cx.error(o.value_node("route"), o.sub("route"),
                 f"weights add up to {sum(weights)}, not 100 ({' + '.join(map(str, weights))})")
        return None
    return tuple(out) if ok else None


def _retries(cx: Cx, node: Node, path: str) -> Retries | None:
    o = Obj(cx, node, path, ("attempts", "perTryTimeout", "retryOn"), ("retryRemoteLocalities",))
    attempts = o.require("attempts", int_in(0, 1000, "attempts"))
    per_try = o.get("perTryTimeout", as_duration(_MIN))
    retry_on: tuple[str, ...] | None = DEFAULT_RETRY_ON
    if "retryOn" in o:
        retry_on = _retry_on(cx, o.value_node("retryOn"), o.sub("retryOn"))
    if attempts is None or retry_on is None or not o.ok:
        return None
    return Retries(attempts, per_try, retry_on)


def _retry_on(cx: Cx, node: Node, path: str) -> tuple[str, ...] | None:
    text = as_str(cx, node, path)
    if text is None:
        return None
    out: list[str] = []
    for cond in (c.strip() for c in text.split(",")):
        if cond in RETRY_ON or (cond.isdigit() and 100 <= int(cond) <= 599):
            out.append(cond)
        elif cond in _RETRY_ON_UNSUPPORTED:
            cx.error(node, path, f"retryOn condition `{cond}` is not supported yet")
            return None
        else:
            cx.error(node, path, f"unknown retryOn condition `{cond}`: use "
                     f"{', '.join(sorted(RETRY_ON))} or an HTTP status code such as 503")
            return None
    return tuple(out)


def _fault(cx: Cx, node: Node, path: str) -> Fault | None:
    o = Obj(cx, node, path, ("delay", "abort"))
    delay = abort = None
    d = o.obj("delay", ("fixedDelay", "percentage"), ("percent", "exponentialDelay"))
    if d is not None:
        fixed = d.require("fixedDelay", as_duration(_MIN))
        pct = d.get("percentage", percentage, 0.0)
        delay = Delay(fixed, pct) if fixed is not None and pct is not None else None
    a = o.obj("abort", ("httpStatus", "percentage"), ("grpcStatus", "http2Error"))
    if a is not None:
        status = a.require("httpStatus", int_in(200, 599, "httpStatus"))
        pct = a.get("percentage", percentage, 0.0)
        abort = Abort(status, pct) if status is not None and pct is not None else None
    if d is None and a is None and o.ok:
        cx.error(node, path, "fault needs `delay` or `abort`")
    if (d is not None and delay is None) or (a is not None and abort is None) or not o.ok:
        return None
    return Fault(delay, abort)


def _header_ops(cx: Cx, node: Node, path: str) -> HeaderOperations | None:
    o = Obj(cx, node, path, ("set", "add", "remove"))
    set_ = o.get("set", as_str_map, EMPTY)
    add = o.get("add", as_str_map, EMPTY)
    remove = o.get("remove", as_str_list, EMPTY)
    if set_ is None or add is None or remove is None or not o.ok:
        return None
    return HeaderOperations(
        tuple((k.lower(), v) for k, v in set_),
        tuple((k.lower(), v) for k, v in add),
        tuple(r.lower() for r in remove),
    )


def _headers(cx: Cx, node: Node, path: str) -> Headers | None:
    o = Obj(cx, node, path, ("request", "response"))
    req = o.get("request", _header_ops, HeaderOperations())
    resp = o.get("response", _header_ops, HeaderOperations())
    if req is None or resp is None or not o.ok:
        return None
    return Headers(req, resp)


def _tcp_route(cx: Cx, scope: Scope, node: Node, path: str) -> TCPRoute | None:
    o = Obj(cx, node, path, ("match", "route"))
    ports: list[int] = []
    for mnode, mpath in o.items("match"):
        m = Obj(cx, mnode, mpath, ("port",),
                ("destinationSubnets", "sourceLabels", "gateways", "sourceNamespace",
                 "sourceSubnet"))
        port = m.get("port", int_in(1, 65535, "port"))
        if port is not None:
            ports.append(port)
    route = _destinations(cx, scope, o, with_headers=False)
    if route is None or not o.ok:
        return None
    return TCPRoute(tuple(ports), route)
