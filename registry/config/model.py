"""The validated config snapshot: frozen, slotted dataclasses all the way down.

Collections are tuples; string maps (labels, env, headers) are tuples of `(key, value)`
pairs, sorted by key where order carries no meaning. Durations are float seconds. Hosts are
normalised to service names. Field meanings follow Istio's reference; docs/config.md lists
every field with its default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from registry.config.diagnostics import Source

Pairs = tuple[tuple[str, str], ...]

# Istio's retry policy for a route that sets none (pilot/pkg/networking/core/route/retry):
# 2 retries on connect-failure,refused-stream,unavailable,cancelled and status 503.
DEFAULT_RETRY_ON: tuple[str, ...] = (
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "503",
)
DEFAULT_RETRY_ATTEMPTS = 2
UINT32_MAX = 2**32 - 1


# --- mesh.yaml -------------------------------------------------------------------------


# Declared port protocols the proxy relays byte for byte: TCP, and Istio's HTTP/2 ones
# (h2c, gRPC, gRPC-Web: no HTTP/2 codec yet, issue 21). HTTP routes do not apply to them
# (registry/config/opaque.py says so wherever a route is shown).
RELAYED_AS_TCP = frozenset({"tcp", "http2", "grpc", "grpc-web"})


@dataclass(frozen=True, slots=True)
class Port:
    port: int
    # "http" | "auto" (not declared: detected per connection) | RELAYED_AS_TCP, as declared
    protocol: str
    name: str

    @property
    def relayed_as_tcp(self) -> bool:
        return self.protocol in RELAYED_AS_TCP

    @property
    def carried_as(self) -> str:
        """How the proxy carries a connection: "http", "tcp" or "auto" (detected)."""
        return "tcp" if self.protocol in RELAYED_AS_TCP else self.protocol


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A local token bucket on the service's inbound side."""

    requests_per_unit: int
    unit: str  # "second" | "minute"
    burst: int

    @property
    def fill_interval_s(self) -> float:
        return 1.0 if self.unit == "second" else 60.0


@dataclass(frozen=True, slots=True)
class RouteRateLimit:
    """A local token bucket for one named `http` route of the service's VirtualService,
    enforced by the caller's outbound proxy when that route matches."""

    route: str  # the `name` of an http route of the VirtualService for this service
    limit: RateLimit
    source: Source  # where mesh.yaml names the route, for errors


@dataclass(frozen=True, slots=True)
class ReadinessProbe:
    """How the proxy checks its app (Kubernetes `readinessProbe`, same fields and defaults):
    a TCP connect, or an HTTP GET that must answer 200-399."""

    kind: str  # "tcp" (tcpSocket) | "http" (httpGet)
    port: int  # the app's port (a named port resolved to the service port's number)
    path: str = "/"  # httpGet only
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1


@dataclass(frozen=True, slots=True)
class Workload:
    version: str
    command: tuple[str, ...]  # local runtime; relative paths resolve against MeshConfig.base_dir
    image: str | None  # docker runtime
    env: Pairs
    replicas: int
    labels: Pairs  # includes the implied app=<service> and version=<version>
    # Local runtime, transparent mode: who the app runs as (`name`, `uid`, `name:group`,
    # `uid:gid`, as Docker's `user:`); "" is the default (meshctl.launch.users).
    user: str = ""
    user_source: Source | None = None  # where `user:` is, for errors found at `up`
    readiness: ReadinessProbe | None = None  # None: a TCP connect to the first port
    # Istio's traffic.sidecar.istio.io/excludeInboundPorts: never captured inbound (every
    # other port is); added to the defaults (22 and the proxy's own ports).
    exclude_inbound_ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    ports: tuple[Port, ...]
    rate_limit: RateLimit | None
    access_log: str  # "off" | "stdout" | an absolute file path
    workloads: tuple[Workload, ...]
    source: Source
    route_rate_limits: tuple[RouteRateLimit, ...] = ()  # sorted by route name

    def port(self, number: int) -> Port | None:
        return next((p for p in self.ports if p.port == number), None)


# --- VirtualService ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringMatch:
    kind: str  # "exact" | "prefix" | "regex" | "present" (an empty match: the header exists)
    value: str


@dataclass(frozen=True, slots=True)
class HeaderOperations:
    set: Pairs = ()
    add: Pairs = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Headers:
    request: HeaderOperations = HeaderOperations()
    response: HeaderOperations = HeaderOperations()


@dataclass(frozen=True, slots=True)
class HTTPMatch:
    name: str | None
    uri: StringMatch | None
    method: StringMatch | None
    authority: StringMatch | None
    headers: tuple[tuple[str, StringMatch], ...]  # header names lowercased
    without_headers: tuple[tuple[str, StringMatch], ...]
    query_params: tuple[tuple[str, StringMatch], ...]
    port: int | None
    ignore_uri_case: bool


@dataclass(frozen=True, slots=True)
class Destination:
    host: str  # a service name
    subset: str | None
    port: int | None


@dataclass(frozen=True, slots=True)
class RouteDestination:
    destination: Destination
    weight: int  # percent; a lone destination without a weight gets 100
    headers: Headers


@dataclass(frozen=True, slots=True)
class Retries:
    attempts: int
    per_try_timeout_s: float | None
    retry_on: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Delay:
    fixed_delay_s: float
    percentage: float  # 0..100; Istio: unset means no request is delayed


@dataclass(frozen=True, slots=True)
class Abort:
    http_status: int
    percentage: float  # 0..100; Istio: unset means no request is aborted


@dataclass(frozen=True, slots=True)
class Fault:
    delay: Delay | None
    abort: Abort | None


@dataclass(frozen=True, slots=True)
class Rewrite:
    uri: str | None
    authority: str | None


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    name: str | None
    match: tuple[HTTPMatch, ...]  # empty: matches every request
    route: tuple[RouteDestination, ...]
    timeout_s: float | None  # None: no timeout (Istio's default)
    retries: Retries | None  # None: Istio's default (DEFAULT_RETRY_ATTEMPTS on DEFAULT_RETRY_ON)
    fault: Fault | None
    mirror: Destination | None
    mirror_percentage: float  # 100 when mirror is set and mirrorPercentage is not
    headers: Headers
    rewrite: Rewrite | None
    # Where the entry is, for warnings (registry/config/opaque.py); not part of its meaning.
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class TCPRoute:
    match_ports: tuple[int, ...]  # empty: every port
    route: tuple[RouteDestination, ...]


@dataclass(frozen=True, slots=True)
class VirtualService:
    name: str
    hosts: tuple[str, ...]  # service names
    http: tuple[HTTPRoute, ...]
    tcp: tuple[TCPRoute, ...]
    export_to: tuple[str, ...]
    source: Source
    # Istio `gateways`: "mesh" (the sidecars; what an absent field means) and/or Gateway
    # names. Bound to gateways only, `hosts` are external names (`shop.example.com`, `*`).
    gateways: tuple[str, ...] = ("mesh",)

    @property
    def for_mesh(self) -> bool:
        return "mesh" in self.gateways


# --- Gateway (networking.istio.io): the mesh's front door, served by a gateway proxy -----


@dataclass(frozen=True, slots=True)
class GatewayServer:
    port: int
    port_name: str
    protocol: str  # "HTTP" | "HTTPS"
    hosts: tuple[str, ...]  # lowercased; `*`, `*.example.com` or a name; `ns/` prefix removed
    https_redirect: bool  # tls.httpsRedirect: a plain HTTP server answers 301 to https
    tls_mode: str | None  # "SIMPLE" or None (plain HTTP)
    credential_name: str | None  # NAME: NAME.crt and NAME.key in the config directory
    credential_sha256: str  # of both files: a new certificate is a new config version


@dataclass(frozen=True, slots=True)
class Gateway:
    name: str
    selector: Pairs  # the gateway proxies it applies to, by their labels
    servers: tuple[GatewayServer, ...]
    source: Source


# --- DestinationRule ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    # None: our default, a latency-aware EWMA power-of-two-choices balancer ("DEFAULT").
    simple: str | None  # "ROUND_ROBIN" | "LEAST_REQUEST" | "RANDOM" | None
    consistent_hash_header: str | None  # consistentHash.httpHeaderName, lowercased


@dataclass(frozen=True, slots=True)
class TCPSettings:
    max_connections: int = UINT32_MAX
    connect_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class HTTPSettings:
    http1_max_pending_requests: int = UINT32_MAX
    http2_max_requests: int = UINT32_MAX
    max_requests_per_connection: int = 0  # 0: unlimited
    max_retries: int = UINT32_MAX
    idle_timeout_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    tcp: TCPSettings = TCPSettings()
    http: HTTPSettings = HTTPSettings()


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_5xx_errors: int = 5  # 0 disables
    consecutive_gateway_errors: int = 0  # 0 disables
    interval_s: float = 10.0
    base_ejection_time_s: float = 30.0
    max_ejection_percent: int = 10
    min_health_percent: int = 0  # Istio's default: panic threshold disabled


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    load_balancer: LoadBalancer | None
    connection_pool: ConnectionPool | None
    outlier_detection: OutlierDetection | None
    # "ISTIO_MUTUAL" (what None means too) or "DISABLE": plaintext to the peer proxies,
    # which then accept it only where PeerAuthentication is PERMISSIVE or DISABLE.
    tls_mode: str | None


@dataclass(frozen=True, slots=True)
class Subset:
    name: str
    labels: Pairs
    traffic_policy: TrafficPolicy | None


@dataclass(frozen=True, slots=True)
class DestinationRule:
    name: str
    host: str  # a service name
    traffic_policy: TrafficPolicy | None
    subsets: tuple[Subset, ...]
    export_to: tuple[str, ...]
    source: Source

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)


# --- AuthorizationPolicy / PeerAuthentication --------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleSource:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()  # addresses or CIDRs, checked by the parser
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    not_ports: tuple[int, ...] = ()
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    values: tuple[str, ...]
    not_values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    from_: tuple[RuleSource, ...]  # `from` in YAML
    to: tuple[Operation, ...]
    when: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    name: str
    selector: Pairs | None  # matchLabels; None selects every workload
    action: str  # "ALLOW" | "DENY" | "AUDIT"
    rules: tuple[Rule, ...]  # ALLOW with no rules allows nothing
    source: Source


@dataclass(frozen=True, slots=True)
class PeerAuthentication:
    name: str
    selector: Pairs | None
    mode: str  # "STRICT" | "PERMISSIVE" | "DISABLE" | "UNSET"
    port_level: tuple[tuple[int, str], ...]
    source: Source


# --- Canary (meshctl.dev/v1alpha1): progressive delivery, run by the registry ------------


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    """How a canary moves: weights in turn, one check per interval (Flagger's analysis)."""

    steps: tuple[int, ...] = (5, 10, 25, 50, 100)  # the new subset's weight, percent
    interval_s: float = 30.0
    success_rate: float = 99.0  # percent of responses not 5xx, at least
    p99_ms: float = 500.0  # at most
    min_requests: int = 20  # fewer in an interval: a failed check (Flagger's rule)
    failures: int = 3  # failed checks before the rollback (Flagger's `threshold`)


@dataclass(frozen=True, slots=True)
class CanarySpec:
    """A declared canary: when `to` (or, without it, a new version of `service` in the
    catalog) appears, the registry shifts traffic from `from_` to it under `policy`."""

    name: str
    service: str
    from_: str | None  # `from` in YAML; None: the subset with the most weight
    to: str | None  # None: the next version of the service that registers
    route: str | None  # the http route's name, when the VirtualService has several
    policy: CanaryPolicy
    source: Source


# --- the snapshot --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeshConfig:
    trust_domain: str
    namespace: str
    certificate_ttl_s: float
    registry_address: str
    registry_port: int
    services: tuple[Service, ...]
    virtual_services: tuple[VirtualService, ...]
    destination_rules: tuple[DestinationRule, ...]
    authorization_policies: tuple[AuthorizationPolicy, ...]
    peer_authentications: tuple[PeerAuthentication, ...]
    base_dir: str  # the config directory's parent: relative workload paths resolve here
    digest: str  # sha256 over the sorted (file name, contents) of the directory
    canaries: tuple[CanarySpec, ...] = ()  # read by the registry only (registry.canary)
    gateways: tuple[Gateway, ...] = ()

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    def virtual_service_for(self, service: str) -> VirtualService | None:
        return next((v for v in self.virtual_services if v.for_mesh and service in v.hosts),
                    None)

    def destination_rule_for(self, service: str) -> DestinationRule | None:
        return next((d for d in self.destination_rules if d.host == service), None)

    def spiffe_id(self, service: str) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{service}"

    def to_wire(self) -> dict[str, Any]:
        from registry.config.wire import to_wire

        out = to_wire(self)
        assert isinstance(out, dict)
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> MeshConfig:
        from registry.config.wire import from_wire

        return from_wire(cls, data)
