"""The service graph of the dashboard, from two scrapes of the proxies' metrics (pure).

Nodes are services (`orders`) and their versions (`orders v2`), plus `unknown` for callers
outside the mesh. Edges are caller version -> service, as the callers' proxies counted them
(reporter="source"), and service -> version, as each version's own proxies did
(reporter="destination"), with that version's share of the service's traffic; each with
requests/s, success rate, p50/p99 and mTLS. Health colours follow Kiali's defaults: degraded at
0.1 % errors or more, failing above 10 %.
"""

from __future__ import annotations

from typing import Any

from common.stats import Scrape, Window, collect, delta, quantile

__all__ = ["DEGRADED", "FAILING", "graph", "health", "mark_ejected"]

DEGRADED = 0.001  # error ratio at or above which a node or edge is degraded (Kiali)
FAILING = 0.10  # above which it is failing (Kiali)
_EDGE = ("source_app", "source_version", "destination_service_name", "connection_security_policy")
_NODE = ("destination_service_name", "destination_version")


def health(requests: float, failures: float) -> str:
    if requests <= 0:
        return "idle"
    ratio = failures / requests
    if ratio > FAILING:
        return "failing"
    return "degraded" if ratio >= DEGRADED else "healthy"


def _node_id(service: str, version: str) -> str:
    return f"{service} {version}" if version and version != "unknown" else service


def graph(first: Scrape, second: Scrape, interval_s: float) -> dict[str, Any]:
    """{"nodes": [...], "edges": [...]} for the interval between the scrapes.

    Callers' proxies know the service they call, not which version answered (the route
    picks it after them), so caller edges end at the service node; the service's own
    proxies report each version's share, drawn as `orders -> orders v2` edges.
    """
    dt = interval_s if interval_s > 0 else 1.0
    nodes: dict[str, dict[str, Any]] = {}

    def node(service: str, version: str, kind: str) -> dict[str, Any]:
        nid = _node_id(service or "unknown", version)
        return nodes.setdefault(nid, {"id": nid, "service": service or "unknown",
                                      "version": version if version != "unknown" else "",
                                      "kind": kind, "rps": 0.0, "success_rate": None,
                                      "health": "idle"})

    edges: list[dict[str, Any]] = []
    a_in, b_in = collect(first, "destination", _NODE), collect(second, "destination", _NODE)
    served: dict[str, list[tuple[str, float, float, dict[float, float]]]] = {}
    for (service, version), w in sorted(b_in.items()):
        n, fails, buckets = delta(a_in.get((service, version), Window()), w)
        served.setdefault(service, []).append((version, n, fails, buckets))
    for service, versions in served.items():
        total = sum(n for _, n, _, _ in versions)
        total_fails = sum(f for _, _, f, _ in versions)
        svc = node(service, "", "service")
        svc.update(rps=round(total / dt, 3), success_rate=_rate(total, total_fails),
                   health=health(total, total_fails))
        for version, n, fails, buckets in versions:
            if not version or version == "unknown":
                continue
            v = node(service, version, "version")
            v.update(rps=round(n / dt, 3), success_rate=_rate(n, fails), health=health(n, fails))
            # mTLS: None, the hop to a version is the route's choice, not a connection.
            edges.append(_edge(svc["id"], v["id"], service, n, fails, buckets, dt, None,
                               n / total if total else None))
    a_e, b_e = collect(first, "source", _EDGE), collect(second, "source", _EDGE)
    for key, w in sorted(b_e.items()):
        src_app, src_ver, dst, security = key
        n, fails, buckets = delta(a_e.get(key, Window()), w)
        source = node(src_app, src_ver, "version" if src_ver else "service")
        target = node(dst, "", "service")
        edges.append(_edge(source["id"], target["id"], dst, n, fails, buckets, dt,
                           security == "mutual_tls", None))
    return {"nodes": sorted(nodes.values(), key=lambda r: r["id"]), "edges": edges}


def _edge(source: str, target: str, service: str, n: float, fails: float,
          buckets: dict[float, float], dt: float, mtls: bool | None, share: float | None
          ) -> dict[str, Any]:
    plain = " (plaintext)" if mtls is False else ""
    return {"id": f"{source} -> {target}{plain}", "source": source, "target": target,
            "service": service, "rps": round(n / dt, 3), "requests": n,
            "success_rate": _rate(n, fails), "health": health(n, fails),
            "p50_ms": _ms(quantile(0.5, buckets)), "p99_ms": _ms(quantile(0.99, buckets)),
            "mtls": mtls, "share": None if share is None else round(share, 4)}


def _rate(n: float, fails: float) -> float | None:
    return round((n - fails) / n, 4) if n else None


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v, 1)



def mark_ejected(g: dict[str, Any], endpoints: list[dict[str, Any]],
                 ejected: dict[str, list[str]]) -> None:
    """Give each version node the endpoints of it that callers have ejected (`ejected`:
    address:port -> caller workloads); such a node is drawn red whatever its rates say."""
    where = {f"{e.get('address')}:{e.get('inbound_port')}":
             _node_id(str(e.get("service", "")), str(e.get("labels", {}).get("version", "")))
             for e in endpoints}
    for node in g["nodes"]:
        hosts = sorted(h for h, nid in where.items() if nid == node["id"] and h in ejected)
        if hosts:
            node["ejected"] = [{"endpoint": h, "by": sorted(set(ejected[h]))} for h in hosts]
