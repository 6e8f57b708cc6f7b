"""AuthorizationPolicy compiled once per snapshot; per request: attributes -> decision."""

from __future__ import annotations

from collections.abc import Sequence

from proxy.http1 import Request
from proxy.policy import authz
from registry.ca import SpiffeId
from registry.config.model import AuthorizationPolicy


def compile_policies(policies: Sequence[AuthorizationPolicy]) -> tuple[authz.Policy, ...]:
    out = []
    for p in policies:
        rules = tuple(
            authz.Rule(
                sources=tuple(
                    authz.Source.compile(
                        principals=s.principals,
                        not_principals=s.not_principals,
                        namespaces=s.namespaces,
                        not_namespaces=s.not_namespaces,
                    )
                    for s in r.from_
                ),
                operations=tuple(
                    authz.Operation.compile(
                        methods=o.methods,
                        not_methods=o.not_methods,
                        paths=o.paths,
                        not_paths=o.not_paths,
                        ports=o.ports,
                        not_ports=o.not_ports,
                        hosts=o.hosts,
                        not_hosts=o.not_hosts,
                    )
                    for o in r.to
                ),
                conditions=tuple(
                    authz.Condition.compile(c.key, values=c.values, not_values=c.not_values)
                    for c in r.when
                ),
            )
            for r in p.rules
        )
        out.append(authz.Policy(p.name, authz.Action(p.action), rules))
    return tuple(out)


def decide(
    policies: tuple[authz.Policy, ...], peer: SpiffeId | None, req: Request, port: int
) -> authz.Decision:
    """Istio's order: DENY, then ALLOW. Identity only from the verified certificate."""
    if not policies:
        return authz.Decision(True, None, "no policy selects this workload")
    path = authz.normalize_path(req.target)
    if path is None:
        return authz.Decision(False, None, "path cannot be normalised")
    attrs = authz.RequestAttrs(
        method=req.method.decode("latin-1"),
        path=path,
        host=(req.host or b"").decode("latin-1"),
        port=port,
        principal=peer.principal if peer else None,
        namespace=peer.namespace if peer else None,
        headers={n.decode("latin-1").lower(): v.decode("latin-1") for n, v in req.headers},
    )
    return authz.evaluate(policies, attrs)


def decide_tcp(policies: tuple[authz.Policy, ...], peer: SpiffeId | None, port: int
               ) -> authz.Decision:
    """A TCP connection has no method, path or headers: only source and port fields can
    match it (Istio: a rule naming HTTP-only fields never matches a TCP connection)."""
    if not policies:
        return authz.Decision(True, None, "no policy selects this workload")
    attrs = authz.RequestAttrs(method="", path="", host="", port=port,
                               principal=peer.principal if peer else None,
                               namespace=peer.namespace if peer else None, headers={})
    return authz.evaluate(policies, attrs)
