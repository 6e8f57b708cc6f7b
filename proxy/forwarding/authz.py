"""AuthorizationPolicy compiled once per snapshot; per request: attributes -> decision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

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
                        ip_blocks=s.ip_blocks,
                        not_ip_blocks=s.not_ip_blocks,
                        remote_ip_blocks=s.remote_ip_blocks,
                        not_remote_ip_blocks=s.not_remote_ip_blocks,
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


def _attrs(peer: SpiffeId | None, port: int, source_ip: authz.IPAddress | None,
           method: str = "", path: str = "", host: str = "",
           headers: dict[str, str] | None = None,
           remote_ip: authz.IPAddress | None = None) -> authz.RequestAttrs:
    # Identity comes only from the verified certificate, never from a header.
    return authz.RequestAttrs(method=method, path=path, host=host, port=port,
                              principal=peer.principal if peer else None,
                              namespace=peer.namespace if peer else None,
                              headers=headers or {}, source_ip=source_ip,
                              remote_ip=remote_ip)


_NO_POLICY: Final = authz.Decision(True, None, "no policy selects this workload")


def decide(
    policies: tuple[authz.Policy, ...], peer: SpiffeId | None, req: Request, port: int,
    source_ip: authz.IPAddress | None = None, remote_ip: authz.IPAddress | None = None,
) -> authz.Decision:
    """Istio's order: DENY, then ALLOW; paths matched after normalisation. `remote_ip`: the
    original client's address when not the connection's (a gateway's trusted hops)."""
    if not policies:
        return _NO_POLICY
    path = authz.normalize_path(req.target)
    if path is None:
        return authz.Decision(False, None, "path cannot be normalised")
    return authz.evaluate(policies, _attrs(
        peer, port, source_ip, req.method.decode("latin-1"), path,
        (req.host or b"").decode("latin-1"),
        {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in req.headers}, remote_ip))


def decide_tcp(policies: tuple[authz.Policy, ...], peer: SpiffeId | None, port: int,
               source_ip: authz.IPAddress | None = None) -> authz.Decision:
    """A TCP connection has no method, path or headers: only source and port fields can
    match it (Istio: a rule naming HTTP-only fields never matches a TCP connection)."""
    if not policies:
        return _NO_POLICY
    return authz.evaluate(policies, _attrs(peer, port, source_ip))
