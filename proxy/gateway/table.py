"""What a gateway proxy serves, compiled once per snapshot: the servers of the Gateways
that select it, by port, and the routes of the VirtualServices bound to each Gateway, by
host (Istio's `gateways:` binding)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from common.hostmatch import host_matches, specificity
from proxy.forwarding.routing import CompiledRoute, compile_route
from proxy.snapshot import ROUTE_REMOVES
from registry.config.model import Gateway, GatewayServer, MeshConfig

__all__ = ["GATEWAY_REMOVES", "GatewayTable", "PortPlan", "build_table", "selects"]

# What a client must not set on a request the gateway forwards: besides the route's removals,
# the forwarding headers the gateway writes itself (proxy/gateway/forwarded.py).
GATEWAY_REMOVES: Final = ROUTE_REMOVES | frozenset(
    (b"x-forwarded-for", b"x-forwarded-proto", b"x-envoy-external-address"))


@dataclass(frozen=True, slots=True)
class PortPlan:
    """One listening port: its protocol and its servers, each with the Gateway it is of."""

    port: int
    protocol: str  # "HTTP" | "HTTPS"
    servers: tuple[tuple[str, GatewayServer], ...]

    def server_for(self, host: str) -> tuple[str, GatewayServer] | None:
        """The most specific server whose hosts match `host` (Istio's server selection)."""
        best: tuple[tuple[int, int], tuple[str, GatewayServer]] | None = None
        for gw, server in self.servers:
            for pattern in server.hosts:
                if host_matches(pattern, host):
                    rank = specificity(pattern)
                    if best is None or rank < best[0]:
                        best = (rank, (gw, server))
        return best[1] if best else None


@dataclass(frozen=True, slots=True)
class HostRoutes:
    pattern: str
    routes: tuple[CompiledRoute, ...]


@dataclass(frozen=True, slots=True)
class GatewayTable:
    ports: Mapping[int, PortPlan]
    # Gateway name -> its VirtualServices' routes by host pattern, most specific first.
    routes: Mapping[str, tuple[HostRoutes, ...]]

    def routes_for(self, gateway: str, host: str) -> tuple[CompiledRoute, ...] | None:
        for entry in self.routes.get(gateway, ()):
            if host_matches(entry.pattern, host):
                return entry.routes
        return None

    def https_port(self, gateway: str, host: str) -> int | None:
        """Where httpsRedirect sends a client: the Gateway's HTTPS server for this host."""
        for plan in self.ports.values():
            if plan.protocol == "HTTPS":
                hit = plan.server_for(host)
                if hit is not None and hit[0] == gateway:
                    return plan.port
        return None


def selects(gateway: Gateway, labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in gateway.selector)


def build_table(config: MeshConfig, labels: Mapping[str, str]) -> GatewayTable:
    mine = [g for g in config.gateways if selects(g, labels)]
    by_port: dict[int, list[tuple[str, GatewayServer]]] = {}
    for gw in mine:
        for server in gw.servers:
            by_port.setdefault(server.port, []).append((gw.name, server))
    ports = {}
    for port, servers in by_port.items():
        protocols = {s.protocol for _, s in servers}
        if len(protocols) > 1:  # two Gateways disagree: the registry checks one at a time
            where = ", ".join(sorted(f"{g} ({s.protocol})" for g, s in servers))
            raise ValueError(f"gateway port {port} is claimed with two protocols: {where}")
        ports[port] = PortPlan(port, protocols.pop(), tuple(servers))
    routes: dict[str, list[HostRoutes]] = {}
    names = {g.name for g in mine}
    for vs in config.virtual_services:  # sorted by name: the first one binding a host wins
        compiled = None
        for bound in vs.gateways:
            if bound not in names:
                continue
            if compiled is None:
                compiled = tuple(compile_route(r, GATEWAY_REMOVES) for r in vs.http)
            have = {e.pattern for e in routes.get(bound, ())}
            routes.setdefault(bound, []).extend(
                HostRoutes(h, compiled) for h in vs.hosts if h not in have)
    return GatewayTable(
        ports=ports,
        routes={g: tuple(sorted(r, key=lambda e: specificity(e.pattern)))
                for g, r in routes.items()},
    )
