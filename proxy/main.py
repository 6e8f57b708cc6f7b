"""The proxy process, assembled top to bottom: identity, control stream, listeners, admin."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import resource
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from common.aio import spawn
from proxy import certinfo, compiled
from proxy.accesslog import AccessLog
from proxy.admin import TapHub, relayed_tap, start_servers, tap_event, write_discovery
from proxy.control.apphealth import app_health_loop, probe_params
from proxy.control.client import ControlClient, View
from proxy.forwarding.cluster import Clusters
from proxy.httpio import Server
from proxy.identity import Identity, load_identity, tls_context
from proxy.inbound.stack import Inbound
from proxy.memory import Trimmer
from proxy.outbound.stack import Outbound
from proxy.policy.probe import ProbeParams
from proxy.runtime import DataPlane, Runtime, Settings
from proxy.snapshot import ProxySnapshot, build_snapshot
from proxy.telemetry import Telemetry
from proxy.tracing import Tracer
from proxy.tracing.otlp import OtlpExporter
from proxy.transport.accept import Connections, accept_loop, listen, listen_both, streams_for
from proxy.transport.streams import ByteReader, ByteWriter, Pool
from proxy.transport.tcp import relay
from registry.config import MeshConfig
from registry.server.catalog import Endpoint

if TYPE_CHECKING:
    from proxy.dns.server import DnsServer  # imported when DNS is on (_start_dns)
    from proxy.gateway.server import GatewayMode, GatewayOptions

log = logging.getLogger("meshctl.proxy")
EPOCH_GRACE_S: Final = 30.0  # how long an empty catalog from a new registry epoch is not believed


@dataclass(frozen=True, slots=True)
class Upstream:
    """Explicit mode: a local listener for one upstream service port (Consul's upstreams)."""

    service: str
    port: int
    listen_host: str
    listen_port: int


@dataclass(slots=True)
class ProxyOptions:
    registry_url: str
    ca_file: Path
    token: str
    service: str
    home: Path
    version: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    advertise: str = "127.0.0.1"  # the address peers dial for this endpoint
    inbound: tuple[str, int] = ("0.0.0.0", 15006)
    outbound: tuple[str, int] | None = None  # transparent (iptables) listener, e.g. 127.0.0.1:15001
    dns: tuple[str, int] | None = None  # mesh names answered here, UDP and TCP (proxy/dns)
    # Docker's published ports: where iptables sends connections from the network's gateway
    # to a published service port (0.0.0.0:15007), served as ingress (docs/docker.md).
    published: tuple[str, int] | None = None
    upstreams: tuple[Upstream, ...] = ()
    # Gateway mode (proxy/gateway): serve the Gateways that select this proxy's labels
    # instead of standing beside an app (no inbound listener, no endpoint registered).
    gateway: GatewayOptions | None = None
    apps: Mapping[int, tuple[str, int]] = field(default_factory=dict)  # service port -> app addr
    admin: tuple[str, int] = ("127.0.0.1", 15000)
    metrics: tuple[str, int] = ("0.0.0.0", 15090)
    proxy_id: str = ""
    # A request body: no piece of it for body_idle_timeout_s, or not whole request_timeout_s
    # after its head arrived, is answered 408 (flag SI); 0 switches a timer off. Envoy's
    # stream_idle_timeout (5 min) and request_timeout (off), shorter here: docs/config.md.
    body_idle_timeout_s: float = 30.0
    request_timeout_s: float = 300.0
    header_timeout_s: float = 60.0  # a request head must arrive within this (slow loris)
    # Connection budgets, one per listener, past which a new connection is accepted and
    # closed at once (docs/policies.md "Downstream connection limits").
    max_connections: int = 10_000  # each outbound listener (transparent, each upstream)
    max_inbound_connections: int = 10_000  # the inbound listener (at most a quarter of fds)
    max_connections_per_source: int = 1024  # inbound, per source address (0: no limit)
    inbound_handshake_timeout_s: float = 5.0  # first byte + TLS handshake, inbound
    drain_s: float = 5.0  # on SIGTERM: how long in-flight requests get to finish
    # Tracing: percentage of new traces sampled, and the OTLP/HTTP collector (None: no spans,
    # only trace-context propagation). mesh.yaml has no field for these yet; the defaults
    # come from MESH_TRACE_SAMPLING and MESH_OTLP_ENDPOINT (the `--trace-sampling` and
    # `--otlp-endpoint` options of `meshctl proxy` read the same variables).
    trace_sampling: float = field(default_factory=lambda: _env_percent("MESH_TRACE_SAMPLING"))
    otlp_endpoint: str | None = field(
        default_factory=lambda: os.environ.get("MESH_OTLP_ENDPOINT") or None
    )


def _env_percent(name: str) -> float:
    raw = os.environ.get(name, "").strip().rstrip("%")
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a percentage from 0 to 100") from None
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"{name}={raw!r}: expected a percentage from 0 to 100")
    return value


def inbound_passthrough(opts: ProxyOptions, port: int) -> bool:
    """Whether a connection to `port`, which the service does not declare, may be relayed
    to the app (Istio's inbound passthrough). Only in transparent mode, where 127.0.0.1 is
    the workload's own namespace (in explicit mode it is the host's: every other local
    service), and never to one of the proxy's own ports (inbound, outbound, admin,
    metrics, published, DNS): that would loop, or hand a peer the admin API."""
    own = own_ports(opts)
    return own is not None and port not in own


def own_ports(opts: ProxyOptions) -> frozenset[int] | None:
    """The proxy's own ports, which inbound passthrough never reaches; None in explicit
    mode, where there is no passthrough at all (see inbound_passthrough)."""
    if opts.outbound is None:
        return None
    own = {opts.inbound[1], opts.outbound[1], opts.admin[1], opts.metrics[1]}
    own.update(hp[1] for hp in (opts.published, opts.dns) if hp is not None)
    return frozenset(own)


def settings_of(opts: ProxyOptions) -> Settings:
    """The options the request path reads, for the data plane."""
    return Settings(
        service=opts.service,
        version=opts.version,
        header_timeout_s=opts.header_timeout_s,
        request_timeout_s=opts.request_timeout_s,
        body_idle_timeout_s=opts.body_idle_timeout_s,
        inbound_handshake_timeout_s=opts.inbound_handshake_timeout_s,
        apps=dict(opts.apps),
        own_ports=own_ports(opts),
    )


class Proxy:
    """The process shell: identity, the control stream, listeners, admin, DNS, drain. The
    stacks receive its data plane (`self.plane`, proxy/runtime.py), never the shell."""

    def __init__(self, opts: ProxyOptions) -> None:
        self.opts = opts
        # Stable across restarts (service + host, no pid): a restarted proxy replaces its
        # own entry in the registry instead of leaving a dead one beside it.
        self.proxy_id = opts.proxy_id or f"{opts.service}-{socket.gethostname()}"
        labels = {"app": opts.service, **dict(opts.labels)}
        if opts.version:
            labels["version"] = opts.version
        self.labels = labels
        self.telemetry = Telemetry()
        self.identity: Identity | None = None
        self.control = ControlClient(
            opts.registry_url, opts.ca_file, opts.home / "tls", self.proxy_id
        )
        self.control.on_identity(self._on_identity)
        self.control.admin_get = self._admin_get
        self.control.admin_tap = functools.partial(relayed_tap, self)
        self.ready = asyncio.Event()
        self._listeners: list[socket.socket] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._servers: list[Server] = []  # admin, metrics
        self.server_ctx = tls_context(server=True)  # the inbound one, reloaded on renewal
        self._epoch = ""
        self._epoch_endpoints: list[Endpoint] = []
        self._grace_endpoints: list[Endpoint] = []
        self._grace_until = 0.0
        self._last_view: View | None = None
        # Set once start() is through (discovery file written): /ready waits for it, so
        # whoever sees ready also finds the proxy's admin.json.
        self.started = False
        self.trimmer = Trimmer()  # memory back to the system after an inbound flood
        self.inbound_connections = Connections(
            _fd_budget(opts.max_inbound_connections), opts.max_connections_per_source
        )
        self.access_log = AccessLog("off")
        self.tap = TapHub(self.telemetry.counters)
        self.discovery_file: Path | None = None
        self.dns: DnsServer | None = None
        self.exporter: OtlpExporter | None = None
        if opts.otlp_endpoint:
            resource = (
                ("service.name", opts.service),
                ("service.version", opts.version or "unknown"),
                ("service.instance.id", self.proxy_id),
                ("telemetry.sdk.name", "meshctl"),
            )
            self.exporter = OtlpExporter(opts.otlp_endpoint, resource, self.telemetry.counters)
        self.tracer = Tracer(
            opts.trace_sampling, self.exporter.offer if self.exporter is not None else None
        )
        self.plane = DataPlane(
            settings_of(opts), self.proxy_id, self.telemetry, self.tracer, self.tap,
            functools.partial(tap_event, self), self.server_ctx,
        )  # fmt: skip
        self.outbound = Outbound(self.plane)
        self.inbound = Inbound(self.plane)
        self.gateway: GatewayMode | None = None
        if opts.gateway is not None:
            from proxy.gateway.server import GatewayMode

            self.gateway = GatewayMode(self, opts.gateway)

    # -- what the admin pages read (the stacks read the data plane) --------------------

    @property
    def snapshot(self) -> ProxySnapshot | None:
        return self.plane.snapshot

    @property
    def pool(self) -> Pool:
        return self.plane.pool

    @property
    def clusters(self) -> Clusters:
        return self.plane.clusters

    @property
    def inflight(self) -> int:
        return self.plane.inflight

    @property
    def draining(self) -> bool:
        return self.plane.draining

    # -- identity and config ---------------------------------------------------------

    def _on_identity(self, ident: Identity) -> None:
        cert, key = self.opts.home / "tls" / "svid.crt", self.opts.home / "tls" / "svid.key"
        load_identity(self.server_ctx, cert, key, ident.bundle_pem)
        self.identity = ident
        snap = self.plane.snapshot
        if snap is not None:  # new connections to peers present the new certificate
            self.plane.runtime = Runtime(snap, ident, self.access_log)
        gauges = self.telemetry.gauges
        gauges["meshctl_proxy_certificate_expiry_seconds"] = ident.not_after.timestamp()
        gauges["meshctl_proxy_certificate_lifetime_seconds"] = _lifetime_s(ident.cert_pem)

    def apply_view(self, view: View) -> str | None:
        """Build the snapshot for a view and swap it in; an error is the NACK message."""
        try:
            config = MeshConfig.from_wire(view.config)
            endpoints = self._with_grace(view, [Endpoint.from_wire(e) for e in view.endpoints])
            snap = build_snapshot(
                view.config_version,
                view.catalog_version,
                config,
                endpoints,
                self.opts.service,
                self.labels,
                self.plane.clusters,
            )
            self.plane.route_limits.attach((v.service, v.routes) for v in snap.services.values())
        except Exception as exc:  # a NACK carries the reason; the old snapshot stays
            log.exception("config version %d refused", view.config_version)
            self.telemetry.counters["meshctl_proxy_config_rejected_total"] += 1
            return f"{type(exc).__name__}: {exc}"
        if snap.me is None and self.gateway is None:
            return f"service `{self.opts.service}` is not in mesh.yaml"
        if self.gateway is not None:
            refused = self.gateway.apply(snap)
            if refused is not None:
                log.error("config version %d refused: %s", view.config_version, refused)
                self.telemetry.counters["meshctl_proxy_config_rejected_total"] += 1
                return refused
        if snap.me is not None:
            target = snap.me.access_log
        elif self.opts.gateway is not None:  # a gateway's: its --access-log
            target = self.opts.gateway.access_log
        else:
            target = self.access_log.target
        old = self.access_log
        if old.target != target:
            self.access_log = AccessLog(target)
        self.plane.runtime = Runtime(snap, self.identity, self.access_log)  # the swap
        if old is not self.access_log:
            old.flush()
            old.close()
        self.telemetry.gauges["meshctl_proxy_config_version"] = snap.version
        self.telemetry.gauges["meshctl_proxy_catalog_version"] = snap.catalog_version
        self.ready.set()
        return None

    def _with_grace(self, view: View, endpoints: list[Endpoint]) -> list[Endpoint]:
        """A registry that lost its catalog (a new epoch) starts empty and fills up as proxies
        re-register within a heartbeat. Do not take an empty catalog as truth at once: for
        EPOCH_GRACE_S after an epoch change, a service the new catalog has no endpoint for
        keeps the endpoints the previous epoch had (Envoy keeps its last EDS on a reset
        control plane too)."""
        now = time.monotonic()
        if self._epoch and view.epoch != self._epoch:
            self._grace_until = now + EPOCH_GRACE_S
            self._grace_endpoints = self._epoch_endpoints
            log.warning("registry epoch changed (%s -> %s): keeping the last endpoints of "
                        "services the new catalog lacks for %.0f s", self._epoch, view.epoch,
                        EPOCH_GRACE_S)
            # Rebuild once the grace ends, so stale endpoints do not outlive it.
            asyncio.get_running_loop().call_later(EPOCH_GRACE_S + 0.1, self._regrace)
        self._epoch = view.epoch
        self._epoch_endpoints = endpoints
        self._last_view = view
        if now >= self._grace_until:
            return endpoints
        present = {e.service for e in endpoints}
        return endpoints + [e for e in self._grace_endpoints if e.service not in present]

    def _regrace(self) -> None:
        if self._last_view is not None and time.monotonic() >= self._grace_until:
            self.apply_view(self._last_view)

    def _probe(self) -> ProbeParams | None:
        snap = self.snapshot
        return (probe_params(snap.me, snap.my_labels, self.plane.settings.app_address)
                if snap else None)

    async def _app_health(self, health: str, reason: str) -> None:
        self.endpoint["health"], self.endpoint["reason"] = health, reason
        await self.control.report_health(self.endpoint)

    # -- listeners -------------------------------------------------------------------

    async def _explicit(self, up: Upstream, sock: socket.socket) -> None:
        try:
            reader, writer = await streams_for(sock, None)
        except OSError:
            sock.close()
            return
        await self.outbound.serve(reader, writer, up.service, up.port)

    async def _transparent(self, sock: socket.socket) -> None:
        from proxy.intercept.origdst import original_dst

        try:
            ip, port = original_dst(sock)
            reader, writer = await streams_for(sock, None)
        except OSError:
            sock.close()
            return
        snap = self.snapshot
        hit = snap.service_for(ip, port) if snap else None
        if hit is None:
            direct = snap.endpoint_at.get(ip) if snap else None
            if direct is not None and await self.outbound.serve_endpoint_port(
                reader, writer, direct[0], direct[1], port
            ):
                return
            await self._passthrough(reader, writer, ip, port)
            return
        await self.outbound.serve(reader, writer, hit[0].service.name, hit[1])

    async def _passthrough(
        self, reader: ByteReader, writer: ByteWriter, ip: str, port: int
    ) -> None:
        """Not a mesh service: relay to where the app meant to go (our uid is not redirected)."""

        self.telemetry.counters["meshctl_proxy_passthrough_total"] += 1
        try:
            ur, uw = await asyncio.wait_for(asyncio.open_connection(ip, port), 10)
        except (OSError, TimeoutError):
            writer.close()
            return
        await relay(reader, writer, ur, uw)
        uw.close()
        writer.close()

    async def start(self) -> None:
        opts = self.opts
        await self.control.resume_or_join(opts.token, opts.service)
        self._tasks.append(spawn(self.control.stream_loop(self.apply_view), name="stream"))
        self._tasks.append(spawn(self.control.renew_loop(), name="renew"))
        await asyncio.wait_for(self.ready.wait(), 30)
        # Transparent mode: IPv6 is captured too (ip6tables), so listen on both families.
        both = listen_both if opts.outbound is not None else lambda h, p: [listen(h, p)]
        if self.gateway is not None:  # a gateway stands beside no app: its ports are its own
            await self._start_gateway()
            return
        for s in both(*opts.inbound):  # IPv4 first: _listeners[0] is the inbound
            self._listeners.append(s)
            self._tasks.append(
                spawn(accept_loop(
                    s, self.inbound.on_connection, self.inbound_connections, self.telemetry
                ))
            )
        inbound_port = self._listeners[0].getsockname()[1]
        for up in opts.upstreams:
            us = listen(up.listen_host, up.listen_port)
            self._listeners.append(us)
            self._tasks.append(
                spawn(
                    accept_loop(
                        us,
                        functools.partial(self._explicit, up),
                        Connections(opts.max_connections),
                        self.telemetry,
                    )
                )
            )
        # The transparent listener's two families share one budget (one listener, for
        # --max-connections), separate from inbound's and each explicit upstream's.
        transparent = Connections(opts.max_connections)
        for os_ in listen_both(*opts.outbound) if opts.outbound is not None else ():
            self._listeners.append(os_)
            self._tasks.append(
                spawn(accept_loop(os_, self._transparent, transparent, self.telemetry))
            )
        if opts.dns is not None:
            await self._start_dns(opts.dns)
        if opts.published is not None:
            ps = listen(*opts.published)
            self._listeners.append(ps)
            self._tasks.append(
                spawn(accept_loop(ps, self.inbound.on_published, self.inbound_connections,
                                  self.telemetry))
            )
        await self._start_admin()
        self.endpoint = {
            "id": self.proxy_id,
            "service": opts.service,
            "address": opts.advertise,
            "inbound_port": inbound_port,
            "labels": self.labels,
            "health": "healthy",
        }
        self._tasks.append(spawn(self.control.heartbeat_loop(self.endpoint), name="heartbeat"))
        self._tasks.append(spawn(app_health_loop(self._probe, self._app_health), name="app-health"))
        self._tasks.append(spawn(self._flush_loop(), name="flush"))
        if self.exporter is not None:
            self._tasks.append(spawn(self.exporter.run(), name="otlp-export"))
        self.discovery_file = write_discovery(self, self._servers)
        self.started = True
        log.info(
            "proxy %s ready: inbound %s:%d, config version %d, core %s",
            self.proxy_id,
            opts.inbound[0],
            inbound_port,
            self.snapshot.version if self.snapshot else 0,
            compiled.STATUS,
        )

    async def _start_gateway(self) -> None:
        assert self.gateway is not None
        self._tasks.append(spawn(self._flush_loop(), name="flush"))
        if self.exporter is not None:
            self._tasks.append(spawn(self.exporter.run(), name="otlp-export"))
        await self._start_admin()
        self.discovery_file = write_discovery(self, self._servers)
        self.started = True
        log.info("gateway %s ready: ports %s on %s, config version %d, core %s",
                 self.proxy_id, ", ".join(map(str, self.gateway.ports)) or "none yet",
                 self.gateway.opts.address, self.snapshot.version if self.snapshot else 0,
                 compiled.STATUS)

    async def _start_dns(self, where: tuple[str, int]) -> None:
        from proxy.dns.server import DnsServer, read_upstreams

        self.dns = DnsServer(
            lambda: self.snapshot.dns if self.snapshot is not None else None,
            read_upstreams(),  # once, at start: the proxy's uid is not redirected
            counters=self.telemetry.counters,
        )
        host, port = await self.dns.start(*where)
        log.info("DNS for mesh names on %s:%d (udp, tcp), forwarding to %s", host, port,
                 ", ".join(f"{h}:{p}" for h, p in self.dns.upstreams))

    @property
    def ports(self) -> dict[str, int]:
        return {"inbound": self._listeners[0].getsockname()[1]} if self._listeners else {}

    async def _start_admin(self) -> None:
        self._servers = await start_servers(self)

    async def _admin_get(self, path: str) -> tuple[int, str]:
        """A read of this proxy's own admin page (or `/metrics`), for the registry's relay."""
        from proxy.httpio import Client

        host, port = self.opts.metrics if path == "/metrics" else self.opts.admin
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        client = Client(f"http://{host}:{port}")
        try:
            r = await client.request("GET", path, timeout=10)
            return r.status, r.text()
        finally:
            await client.close()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.access_log.flush()
            if self.trimmer.tick(self.inbound_connections.open):
                self.telemetry.counters["meshctl_proxy_memory_trims_total"] += 1

    async def stop(self) -> None:
        """Graceful drain (SIGTERM): stop accepting, tell the registry we are draining so peers
        stop choosing us, let in-flight requests finish (bounded by drain_s), then exit."""
        self.plane.draining = True
        if self.discovery_file is not None:
            with contextlib.suppress(OSError):
                self.discovery_file.unlink()
        for s in self._listeners:
            s.close()
        if self.gateway is not None:
            self.gateway.close()
        if hasattr(self, "endpoint"):
            await self.control.deregister(self.endpoint["id"])
        deadline = time.monotonic() + self.opts.drain_s
        while self.plane.inflight > 0 and time.monotonic() < deadline:  # noqa: ASYNC110 - a bounded poll
            await asyncio.sleep(0.05)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for server in self._servers:
            await server.close()
        if self.dns is not None:
            await self.dns.close()
        self.plane.pool.close_all()
        self.plane.app_pool.close_all()
        self.access_log.flush()
        self.access_log.close()
        await self.control.close()


def _fd_budget(inbound_limit: int) -> int:
    """The inbound ceiling, within a quarter of the file descriptors (the soft limit raised
    to the hard one first, as Go's runtime does): a flood of the inbound port must leave
    descriptors for the app's outbound connections, upstream pools and files. Envoy's
    advice is to keep all listener limits under half the fd limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY or inbound_limit <= soft // 4:
        return inbound_limit
    budget = max(16, soft // 4)
    log.info("inbound connection limit %d lowered to %d: a quarter of the fd limit (%d)",
                inbound_limit, budget, soft)
    return budget


def _lifetime_s(cert_pem: bytes) -> float:
    """notAfter - notBefore of the leaf: what `meshctl check` measures the 25 % against
    (read by proxy/certinfo.py: importing cryptography would cost ~9 MiB of RSS)."""
    return certinfo.read(cert_pem).lifetime_s
