"""AuthorizationPolicy and PeerAuthentication (security.istio.io)."""

from __future__ import annotations

import ipaddress
import re

from yaml.nodes import Node, ScalarNode

from registry.config.diagnostics import Source
from registry.config.model import (
    AuthorizationPolicy,
    Condition,
    Operation,
    PeerAuthentication,
    Rule,
    RuleSource,
)
from registry.config.reader import (
    EMPTY,
    Cx,
    Obj,
    as_int,
    as_list,
    as_str,
    as_str_list,
    as_str_map,
    mapping_items,
    one_of,
)

__all__ = ["parse_authorization_policy", "parse_peer_authentication"]

_WHEN_KEYS = ("source.principal", "source.namespace", "destination.port")
_WHEN_HEADER = re.compile(r"request\.headers\[[^\]\s]+\]")
_MTLS = one_of(("STRICT", "PERMISSIVE", "DISABLE", "UNSET"))


def _selector(cx: Cx, spec: Obj) -> tuple[tuple[str, str], ...] | bool | None:
    """matchLabels of `selector`; None when absent; False after an error."""
    sel = spec.obj("selector", ("matchLabels",))
    if sel is None:
        return None
    labels = sel.get("matchLabels", as_str_map, EMPTY)
    return labels if labels is not None and sel.ok else False


def parse_authorization_policy(
    cx: Cx, spec: Obj, name: str, source: Source
) -> AuthorizationPolicy | None:
    selector = _selector(cx, spec)
    action = spec.get("action", one_of(("ALLOW", "DENY", "AUDIT"), ("CUSTOM",)), "ALLOW")
    rules = [_rule(cx, n, p) for n, p in spec.items("rules")]
    if selector is False or action is None or None in rules or not spec.ok:
        return None
    assert selector is not True
    return AuthorizationPolicy(
        name, selector, action, tuple(r for r in rules if r is not None), source
    )


def _rule(cx: Cx, node: Node, path: str) -> Rule | None:
    o = Obj(cx, node, path, ("from", "to", "when"))
    sources = [_source(cx, n, p) for n, p in o.items("from")]
    ops = [_operation(cx, n, p) for n, p in o.items("to")]
    conds = [_condition(cx, n, p) for n, p in o.items("when")]
    if None in sources or None in ops or None in conds or not o.ok:
        return None
    return Rule(
        tuple(s for s in sources if s is not None),
        tuple(x for x in ops if x is not None),
        tuple(c for c in conds if c is not None),
    )


def _source(cx: Cx, node: Node, path: str) -> RuleSource | None:
    wrap = Obj(cx, node, path, ("source",))
    o = wrap.obj("source", (*_SOURCE_STRINGS, *_SOURCE_BLOCKS),
                 ("requestPrincipals", "notRequestPrincipals"))
    if o is None:
        if wrap.ok:
            wrap.missing("source")
        return None
    fields = [o.get(k, as_str_list, EMPTY) for k in _SOURCE_STRINGS]
    blocks = [o.get(k, _ip_blocks, EMPTY) for k in _SOURCE_BLOCKS]
    if None in fields or None in blocks or not o.ok or not wrap.ok:
        return None
    for principal in (fields[0] or ()) + (fields[1] or ()):
        if principal.startswith("spiffe://"):
            key = "principals" if principal in (fields[0] or ()) else "notPrincipals"
            cx.error(o.value_node(key), o.sub(key), f"write principal `{principal}` without "
                     "`spiffe://`, as Istio does: <trust-domain>/ns/<namespace>/sa/<service>")
            return None
    a, b, c, d = (f or () for f in fields)
    e, f, g, h = (x or () for x in blocks)
    return RuleSource(a, b, c, d, e, f, g, h)


_SOURCE_STRINGS = ("principals", "notPrincipals", "namespaces", "notNamespaces")
# Both match the connection's source address: a sidecar trusts no X-Forwarded-For hop
# (Istio's numTrustedProxies 0), so the remote address is the peer's (docs/policies.md).
_SOURCE_BLOCKS = ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")


def _ip_blocks(cx: Cx, node: Node, path: str) -> tuple[str, ...] | None:
    """An address (203.0.113.4) or a CIDR (203.0.113.0/24) per item, as Istio takes them."""
    items = as_list(cx, node, path)
    if items is None:
        return None
    out: list[str] = []
    for n, p in items:
        s = as_str(cx, n, p)
        if s is None:
            return None
        try:
            ipaddress.ip_network(s, strict=False)
        except ValueError:
            cx.error(n, p, f"`{s}` is not an IP address or CIDR (203.0.113.4, 203.0.113.0/24)")
            return None
        out.append(s)
    return tuple(out)


def _ports(cx: Cx, node: Node, path: str) -> tuple[int, ...] | None:
    """Istio writes Operation ports as strings ("8080"); integers are accepted too."""
    out: list[int] = []
    for n, p in as_list(cx, node, path) or []:
        if isinstance(n, ScalarNode) and n.tag == "tag:yaml.org,2002:int":
            v = as_int(cx, n, p)
        else:
            s = as_str(cx, n, p)
            if s is not None and not s.isdigit():
                cx.error(n, p, f"port `{s}` is not a number")
                return None
            v = int(s) if s is not None else None
        if v is None:
            return None
        if not 1 <= v <= 65535:
            cx.error(n, p, f"port {v} is outside 1..65535")
            return None
        out.append(v)
    return tuple(out)


def _operation(cx: Cx, node: Node, path: str) -> Operation | None:
    wrap = Obj(cx, node, path, ("operation",))
    o = wrap.obj("operation", ("methods", "notMethods", "paths", "notPaths", "ports",
                               "notPorts", "hosts", "notHosts"))
    if o is None:
        if wrap.ok:
            wrap.missing("operation")
        return None
    strs = {k: o.get(k, as_str_list, EMPTY) for k in
            ("methods", "notMethods", "paths", "notPaths", "hosts", "notHosts")}
    ports = o.get("ports", _ports, EMPTY)
    not_ports = o.get("notPorts", _ports, EMPTY)
    if None in strs.values() or ports is None or not_ports is None or not o.ok or not wrap.ok:
        return None
    s = {k: v or () for k, v in strs.items()}
    return Operation(s["methods"], s["notMethods"], s["paths"], s["notPaths"], ports, not_ports,
                     s["hosts"], s["notHosts"])


def _condition(cx: Cx, node: Node, path: str) -> Condition | None:
    o = Obj(cx, node, path, ("key", "values", "notValues"))
    key = o.require("key", as_str)
    values = o.get("values", as_str_list, EMPTY)
    not_values = o.get("notValues", as_str_list, EMPTY)
    if key is not None and key not in _WHEN_KEYS and not _WHEN_HEADER.fullmatch(key):
        cx.error(o.value_node("key"), o.sub("key"), f"condition key `{key}` is not supported "
                 f"yet (supported: request.headers[<name>], {', '.join(_WHEN_KEYS)})")
        return None
    if key is not None and not values and not not_values:
        cx.error(node, path, "a condition needs `values` or `notValues`")
        return None
    if key is None or values is None or not_values is None or not o.ok:
        return None
    return Condition(key, values, not_values)


def parse_peer_authentication(
    cx: Cx, spec: Obj, name: str, source: Source
) -> PeerAuthentication | None:
    selector = _selector(cx, spec)
    mode = "UNSET"
    mtls = spec.obj("mtls", ("mode",))
    if mtls is not None:
        mode = mtls.get("mode", _MTLS, "UNSET") or ""
    port_level: list[tuple[int, str]] = []
    ok = True
    if "portLevelMtls" in spec:
        for key, knode, vnode in mapping_items(cx, spec.value_node("portLevelMtls"),
                                               spec.sub("portLevelMtls")) or []:
            p = f"{spec.sub('portLevelMtls')}.{key}"
            if not key.isdigit() or not 1 <= int(key) <= 65535:
                cx.error(knode, p, f"`{key}` is not a port number")
                ok = False
                continue
            po = Obj(cx, vnode, p, ("mode",))
            m = po.get("mode", _MTLS, "UNSET")
            if m is None or not po.ok:
                ok = False
                continue
            port_level.append((int(key), m))
        if selector is None and port_level:
            cx.error(spec.key_node("portLevelMtls"), spec.sub("portLevelMtls"),
                     "portLevelMtls needs a `selector` (as in Istio)")
            ok = False
    if selector is False or not mode or not ok or not spec.ok or (mtls is not None and not mtls.ok):
        return None
    assert selector is not True
    return PeerAuthentication(name, selector, mode, tuple(sorted(port_level)), source)
