"""A proxy's view of one (config, catalog) pair, built once and swapped in atomically.

Everything a request needs is looked up here by dict access: the service an address
belongs to, its compiled routes, the endpoints of each subset. Requests hold the snapshot
they started with until they finish, so a swap never changes a request mid-flight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from common.vip import service_vip
from proxy.dns.answer import NameTable
from proxy.forwarding.authz import compile_policies
from proxy.forwarding.cluster import ClusterRuntime, Clusters
from proxy.forwarding.routing import CompiledRoute, compile_route
from proxy.policy.weights import WeightedPicker
from proxy.tracing import TRACE_HEADERS
from registry.config import MeshConfig
from registry.config.model import (
    AuthorizationPolicy,
    DestinationRule,
    HTTPRoute,
    HTTPSettings,
    Service,
    TrafficPolicy,
)
from registry.server.catalog import Endpoint

# Headers a client must never set on a hop we vouch for: identity is the verified
# certificate's only (Istio's forwardClientCertDetails SANITIZE_SET).
SPOOFABLE = frozenset((b"x-forwarded-client-cert",))
# What a route removes from every request besides its own removals: the spoofable fields,
# and the caller's trace headers (the outbound stack renders the next hop's from its span).
ROUTE_REMOVES: Final = SPOOFABLE | TRACE_HEADERS


@dataclass(slots=True)
class Cluster:
    """The endpoints of one service subset, its DestinationRule policy and its runtime state."""

    service: str
    subset: str | None
    endpoints: tuple[Endpoint, ...]
    policy: TrafficPolicy | None
    runtime: ClusterRuntime

    @property
    def connect_timeout_s(self) -> float:
        pol = self.policy
        if pol is not None and pol.connection_pool is not None:
            return pol.connection_pool.tcp.connect_timeout_s
        return 10.0  # Istio's connectTimeout default

    @property
    def mtls(self) -> bool:
        """mTLS to the peer proxies unless the DestinationRule says tls.mode DISABLE."""
        pol = self.policy
        return pol is None or pol.tls_mode != "DISABLE"

    @property
    def http(self) -> HTTPSettings:
        pol = self.policy
        if pol is not None and pol.connection_pool is not None:
            return pol.connection_pool.http
        return _DEFAULT_HTTP


_DEFAULT_HTTP: Final = HTTPSettings()


@dataclass(slots=True)
class TcpRoute:
    """A VirtualService `tcp` entry: ports it matches (empty: all), weighted subsets."""

    ports: frozenset[int]
    subsets: tuple[str | None, ...]
    picker: WeightedPicker | None

    def pick(self) -> str | None:
        return self.subsets[0 if self.picker is None else self.picker.pick()]


@dataclass(slots=True)
class ServiceView:
    service: Service
    vip: str
    routes: tuple[CompiledRoute, ...]  # from its VirtualService; empty: round robin, no subset
    clusters: dict[str | None, Cluster]
    default_route: CompiledRoute
    tcp_routes: tuple[TcpRoute, ...] = ()

    def cluster(self, subset: str | None) -> Cluster | None:
        return self.clusters.get(subset)

    def tcp_cluster(self, port: int) -> Cluster | None:
        """Istio `tcp` routes: the first entry whose ports match picks a weighted subset;
        none: every endpoint of the service."""
        for r in self.tcp_routes:
            if not r.ports or port in r.ports:
                return self.clusters.get(r.pick())
        return self.clusters.get(None)


def _subset_policy(dr: DestinationRule | None, subset: str | None) -> TrafficPolicy | None:
    if dr is None:
        return None
    if subset is not None:
        s = dr.subset(subset)
        if s is not None and s.traffic_policy is not None:
            return s.traffic_policy  # a subset's policy overrides the top-level one (Istio)
    return dr.traffic_policy


def _labels_match(ep: Endpoint, labels: Sequence[tuple[str, str]]) -> bool:
    return all(ep.labels.get(k) == v for k, v in labels)


def _default_route(name: str) -> HTTPRoute:
    from registry.config.model import Destination, Headers, RouteDestination

    return HTTPRoute(
        name="default",
        match=(),
        route=(
            RouteDestination(
                destination=Destination(host=name, subset=None, port=None),
                weight=100,
                headers=Headers(),
            ),
        ),
        timeout_s=None,
        retries=None,
        fault=None,
        mirror=None,
        mirror_percentage=0.0,
        headers=Headers(),
        rewrite=None,
    )


@dataclass(slots=True)
class ProxySnapshot:
    version: int
    catalog_version: int
    config: MeshConfig
    me: Service | None
    my_labels: Mapping[str, str]
    services: dict[str, ServiceView]
    by_address: dict[tuple[str, int], tuple[str, int]]  # (ip, port) -> (service, port)
    authz: tuple[AuthorizationPolicy, ...]
    compiled_authz: tuple[Any, ...]
    peer_mode: str  # STRICT | PERMISSIVE | DISABLE
    port_modes: dict[int, str]  # PeerAuthentication portLevelMtls
    dns: NameTable  # mesh names -> their VIP's A record (proxy/dns), made once per snapshot
    # A healthy endpoint's address -> (its service, the endpoint): where the app dials a
    # mesh workload directly on a port its service does not declare.
    endpoint_at: dict[str, tuple[str, Endpoint]] = field(default_factory=dict)

    @property
    def may_be_plaintext(self) -> bool:
        """Whether any port accepts plaintext: then the inbound listener must sniff the first
        byte of each connection (TLS or not) instead of going straight to the handshake.
        DISABLE is served like PERMISSIVE: meshctl's own clients always use mTLS."""
        return self.peer_mode != "STRICT" or any(m != "STRICT" for m in self.port_modes.values())

    def service_for(self, ip: str, port: int) -> tuple[ServiceView, int] | None:
        hit = self.by_address.get((ip, port))
        if hit is None:
            return None
        return self.services[hit[0]], hit[1]


def build_snapshot(
    version: int,
    catalog_version: int,
    config: MeshConfig,
    endpoints: Sequence[Endpoint],
    me: str | None,
    my_labels: Mapping[str, str],
    runtimes: Clusters | None = None,
) -> ProxySnapshot:
    """Everything per-request lookups need, computed once for this (config, catalog) pair."""
    runtimes = runtimes if runtimes is not None else Clusters()
    used: set[tuple[str, str | None]] = set()

    def cluster(
        service: str, subset: str | None, eps: tuple[Endpoint, ...], policy: TrafficPolicy | None
    ) -> Cluster:
        used.add((service, subset))
        return Cluster(service, subset, eps, policy, runtimes.get(service, subset, policy, eps))

    healthy: dict[str, list[Endpoint]] = {}
    for ep in endpoints:
        if ep.health == "healthy":
            healthy.setdefault(ep.service, []).append(ep)
    services: dict[str, ServiceView] = {}
    by_address: dict[tuple[str, int], tuple[str, int]] = {}
    endpoint_at: dict[str, tuple[str, Endpoint]] = {}
    for svc in config.services:
        eps = tuple(healthy.get(svc.name, ()))
        dr = config.destination_rule_for(svc.name)
        clusters: dict[str | None, Cluster] = {
            None: cluster(svc.name, None, eps, _subset_policy(dr, None))
        }
        if dr is not None:
            for sub in dr.subsets:
                clusters[sub.name] = cluster(
                    svc.name,
                    sub.name,
                    tuple(e for e in eps if _labels_match(e, sub.labels)),
                    _subset_policy(dr, sub.name),
                )
        vs = config.virtual_service_for(svc.name)
        routes = tuple(compile_route(r, ROUTE_REMOVES) for r in vs.http) if vs is not None else ()
        tcp_routes = tuple(
            TcpRoute(frozenset(t.match_ports), tuple(d.destination.subset for d in t.route),
                     WeightedPicker([d.weight for d in t.route]) if len(t.route) > 1 else None)
            for t in (vs.tcp if vs is not None else ()))
        vip = service_vip(svc.name)
        services[svc.name] = ServiceView(
            service=svc,
            vip=vip,
            routes=routes,
            clusters=clusters,
            default_route=compile_route(_default_route(svc.name), ROUTE_REMOVES),
            tcp_routes=tcp_routes,
        )
        for p in svc.ports:
            by_address[(vip, p.port)] = (svc.name, p.port)
            for ep in eps:
                by_address.setdefault((ep.address, p.port), (svc.name, p.port))
        for ep in eps:
            endpoint_at.setdefault(ep.address, (svc.name, ep))
    runtimes.retain(used)
    me_svc = config.service(me) if me else None
    authz = tuple(p for p in config.authorization_policies if _selects(p.selector, my_labels))
    peer_mode, port_modes = _peer_mode(config, my_labels)
    return ProxySnapshot(
        version=version,
        catalog_version=catalog_version,
        config=config,
        me=me_svc,
        my_labels=dict(my_labels),
        services=services,
        by_address=by_address,
        authz=authz,
        compiled_authz=compile_policies(authz),
        peer_mode=peer_mode,
        port_modes=port_modes,
        dns=NameTable.build(((v.service.name, v.vip) for v in services.values()),
                            config.namespace),
        endpoint_at=endpoint_at,
    )


def _selects(selector: Sequence[tuple[str, str]] | None, labels: Mapping[str, str]) -> bool:
    return selector is None or all(labels.get(k) == v for k, v in selector)


def _peer_mode(config: MeshConfig, labels: Mapping[str, str]) -> tuple[str, dict[int, str]]:
    """PeerAuthentication in force for this workload: a selecting policy beats a mesh-wide
    one (Istio's precedence); unset anywhere is STRICT, as the article promises."""
    mode, ports = "STRICT", {}
    chosen: Any = None
    for pa in config.peer_authentications:
        if (pa.selector is None and chosen is None) or (
            pa.selector is not None and _selects(pa.selector, labels)
        ):
            chosen = pa
    if chosen is not None:
        if chosen.mode not in (None, "UNSET"):
            mode = chosen.mode
        ports = {p: m for p, m in chosen.port_level if m not in ("UNSET",)}
    return mode, ports
