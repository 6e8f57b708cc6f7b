"""`meshctl why SOURCE DESTINATION [PATH]`: what the mesh does with one request, and why.

The explanation runs the proxy's own code on the live config: `build_snapshot` for the
source proxy (routes, subsets, endpoints), `first_match` for the route, the compiled
route's retry and timeout, and for the destination `build_snapshot` + `decide` for
AuthorizationPolicy with the source's SPIFFE ID as the peer. What a proxy would do is
therefore exactly what this says, short of runtime state: which endpoints are ejected comes
from the source proxy's /config_dump when one runs on this host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from proxy.forwarding.authz import decide
from proxy.forwarding.cluster import balancer_name
from proxy.forwarding.routing import CompiledRoute, first_match
from proxy.http1 import Request
from proxy.snapshot import ProxySnapshot, ServiceView, build_snapshot
from registry.ca import SpiffeId
from registry.config import MeshConfig
from registry.config.opaque import relay_note, tcp_ports_of
from registry.config.wire import to_wire
from registry.server.catalog import Endpoint


class ExplainError(Exception):
    """The question cannot be answered (unknown service, bad header); the message says why."""


def request_for(
    destination: str, port: int, path: str, method: str, headers: Sequence[tuple[str, str]]
) -> Request:
    hs = [(k.lower().encode(), v.encode()) for k, v in headers]
    host = next((v for k, v in hs if k == b"host"), f"{destination}:{port}".encode())
    if not any(k == b"host" for k, _ in hs):
        hs.insert(0, (b"host", host))
    return Request(
        method=method.upper().encode(),
        target=path.encode(),
        version=b"1.1",
        headers=hs,
        content_length=None,
        chunked=False,
        keep_alive=True,
        upgrade=None,
        expect_continue=False,
        host=host,
    )


def _route_wire(compiled: CompiledRoute, index: int, default: bool) -> dict[str, Any]:
    r = compiled.route
    retry = compiled.retry
    return {
        "index": None if default else index,
        "name": r.name or (None if default else f"route-{index}"),
        "default": default,  # no VirtualService: every request, no subset
        "match": [to_wire(m) for m in r.match],
        "timeout_s": r.timeout_s,
        "retries": {
            "attempts": retry.attempts,
            "per_try_timeout_s": retry.per_try_timeout_s,
            "retry_on": sorted(retry.retry_on),
            "source": "route" if r.retries is not None else "istio default",
        },
        "fault": to_wire(r.fault) if r.fault else None,
        "mirror": to_wire(r.mirror) if r.mirror else None,
        "mirror_percentage": r.mirror_percentage if r.mirror else None,
    }


def _cluster_wire(
    view: ServiceView, subset: str | None, weight: int, ejected: Mapping[Any, Sequence[str]]
) -> dict[str, Any]:
    cluster = view.cluster(subset)
    eps = cluster.endpoints if cluster else ()
    out_ej = set(ejected.get((view.service.name, subset), ()))
    pol = cluster.policy if cluster else None
    return {
        "service": view.service.name,
        "subset": subset,
        "weight": weight,
        "known_subset": cluster is not None,
        "endpoints": [
            {
                "id": e.id,
                "address": f"{e.address}:{e.inbound_port}",
                "labels": dict(e.labels),
                "ejected": f"{e.address}:{e.inbound_port}" in out_ej,
            }
            for e in eps
        ],
        "traffic_policy": to_wire(pol) if pol is not None else None,
        "balancer": balancer_name(pol),
    }


def explain(
    config_wire: dict[str, Any],
    endpoints_wire: list[dict[str, Any]],
    source: str,
    destination: str,
    path: str = "/",
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    port: int | None = None,
    ejected: Mapping[Any, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The whole answer as plain data (the CLI prints it, or dumps it as JSON). The request
    is `method path` with `headers`; Host defaults to `destination:port`."""
    config = MeshConfig.from_wire(config_wire)
    if config.service(source) is None:
        raise ExplainError(f"`{source}` is not a service in mesh.yaml")
    dsvc = config.service(destination)
    if dsvc is None:
        raise ExplainError(f"`{destination}` is not a service in mesh.yaml")
    if not dsvc.ports:
        raise ExplainError(f"`{destination}` has no ports in mesh.yaml")
    port = port or dsvc.ports[0].port
    proto = dsvc.port(port)
    if proto is None:
        known = ", ".join(str(p.port) for p in dsvc.ports)
        raise ExplainError(f"`{destination}` has no port {port} (ports: {known})")
    req = request_for(destination, port, path, method, headers)
    endpoints = [Endpoint.from_wire(e) for e in endpoints_wire]
    snap = build_snapshot(0, 0, config, endpoints, source, {"app": source})
    view = snap.services[destination]
    answer: dict[str, Any] = {
        "source": source,
        "destination": destination,
        "port": port,
        "protocol": proto.protocol,
        "carried_as": proto.carried_as,  # "http", "tcp" or "auto" (detected per connection)
        "request": {
            "method": req.method.decode(),
            "path": req.target.decode(),
            "headers": {k.decode(): v.decode() for k, v in req.headers},
        },
    }
    if proto.relayed_as_tcp:
        answer["route"] = {"default": True, "note": relay_note(proto)}
        vs = config.virtual_service_for(destination)
        answer["http_routes_not_applied"] = [
            {"index": i, "name": r.name or f"route-{i}", "source": str(r.source or vs.source)}
            for i, r in enumerate(vs.http)
            if proto in tcp_ports_of(r, dsvc)
        ] if vs is not None else []
        tcp = next((r for r in (vs.tcp if vs is not None else ())
                    if not r.match_ports or port in r.match_ports), None)
        answer["destinations"] = [
            _cluster_wire(snap.services[d.destination.host], d.destination.subset, d.weight,
                          ejected or {})
            for d in tcp.route
        ] if tcp is not None else [_cluster_wire(view, None, 100, ejected or {})]
    else:
        compiled = first_match(view.routes, req) if view.routes else view.default_route
        tried = []
        for i, r in enumerate(view.routes):
            tried.append({"index": i, "name": r.route.name, "matches": r.matches_request(req)})
        answer["routes_tried"] = tried
        if compiled is None:
            answer["route"] = None
            answer["outcome"] = "404 NR: no route of the VirtualService matches"
            answer["destinations"] = []
        else:
            idx = next((i for i, r in enumerate(view.routes) if r is compiled), 0)
            answer["route"] = _route_wire(compiled, idx, compiled is view.default_route)
            answer["destinations"] = [
                _cluster_wire(
                    snap.services[d.destination.host], d.destination.subset, d.weight,
                    ejected or {},
                )
                for d in compiled.route.route
            ]  # fmt: skip
    answer["authorization"] = _authz(config, endpoints, source, destination, req, port, answer)
    answer.setdefault("outcome", _outcome(answer))
    return answer


def _authz(
    config: MeshConfig,
    endpoints: list[Endpoint],
    source: str,
    destination: str,
    req: Request,
    port: int,
    answer: dict[str, Any],
) -> list[dict[str, Any]]:
    """AuthorizationPolicy at each distinct workload (label set) the request may reach."""
    peer = SpiffeId.parse(config.spiffe_id(source))
    label_sets: list[dict[str, str]] = []
    for d in answer.get("destinations", []):
        for e in d["endpoints"]:
            if e["labels"] not in label_sets and d["service"] == destination:
                label_sets.append(e["labels"])
    if not label_sets:
        label_sets = [{"app": destination}]
    out = []
    for labels in label_sets:
        dsnap: ProxySnapshot = build_snapshot(0, 0, config, endpoints, destination, labels)
        if answer["carried_as"] == "tcp":
            from proxy.forwarding.authz import decide_tcp

            d = decide_tcp(dsnap.compiled_authz, peer, port)
        else:
            d = decide(dsnap.compiled_authz, peer, req, port)
        out.append(
            {
                "workload_labels": labels,
                "peer": str(peer),
                "policies": [p.name for p in dsnap.authz],
                "allowed": d.allowed,
                "policy": d.policy_name,
                "reason": d.reason,
                "peer_authentication": dsnap.peer_mode,
            }
        )
    return out


def _outcome(answer: dict[str, Any]) -> str:
    dests = answer.get("destinations", [])
    if any(not d["known_subset"] for d in dests):
        return "503 UH for the unknown subset: no DestinationRule defines it"
    if dests and all(not d["endpoints"] for d in dests):
        return "503 UH: no healthy endpoint"
    live = [e for d in dests for e in d["endpoints"] if not e["ejected"]]
    if dests and not live:
        return "503 UH: every endpoint is ejected (unless the pool is in panic)"
    authz = answer.get("authorization", [])
    if authz and all(not a["allowed"] for a in authz):
        return "403 RBAC: access denied"
    if authz and not all(a["allowed"] for a in authz):
        return "allowed at some workloads, denied (403) at others"
    return "forwarded"
