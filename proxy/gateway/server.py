"""The gateway's request path: listeners on the servers' ports -> TLS (SNI picks the
certificate) -> per request: server by Host -> httpsRedirect -> AuthorizationPolicy that
selects the gateway -> request size -> bound VirtualService routes -> X-Forwarded-For ->
the outbound stack (proxy/outbound/stack.py) to the service, over mTLS."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from common.aio import spawn
from common.hostmatch import request_host
from proxy.downstream.http1 import serve_requests
from proxy.forwarding.authz import decide
from proxy.forwarding.forward import Prep, Result, local_prep
from proxy.forwarding.routing import first_match, new_bucket, over_limit
from proxy.gateway.credentials import CredentialError, Credentials
from proxy.gateway.forwarded import forwarded_for
from proxy.gateway.table import GatewayTable, PortPlan, build_table
from proxy.http1 import Request, render_response_head
from proxy.policy.authz import IPAddress
from proxy.tracing import CLIENT, Hop
from proxy.transport.accept import Connections, accept_loop, listen, streams_for
from registry.config.model import RateLimit

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from pathlib import Path

    from proxy.main import Proxy
    from proxy.snapshot import ProxySnapshot

__all__ = ["GatewayMode", "GatewayOptions"]

log = logging.getLogger("meshctl.proxy.gateway")
_XFF: Final = b"x-forwarded-for"


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """`meshctl proxy --gateway`: where the servers' ports are opened, where credentialName
    pairs are read, and the edge's limits."""

    address: str = "0.0.0.0"  # the servers' ports are opened on this address
    credentials: Path | None = None  # NAME.crt / NAME.key for each credentialName
    trusted_hops: int = 0  # Istio's numTrustedProxies (Envoy's xff_num_trusted_hops)
    max_request_bytes: int = 0  # a declared body larger than this: 413 (0: no limit)
    rate_limit: RateLimit | None = None  # one token bucket for the whole gateway (429, RL)
    access_log: str = "off"  # "off" | "stdout" | an absolute path (a sidecar's: mesh.yaml)


def parse_rate_limit(text: str) -> RateLimit:
    """`--rate-limit`: REQUESTS/s or REQUESTS/m, optionally :BURST (default REQUESTS), the
    same bucket as mesh.yaml's rateLimit (Envoy's local_ratelimit token bucket)."""
    rate, colon, burst = text.partition(":")
    count, _, unit = rate.partition("/")
    units = {"s": "second", "second": "second", "m": "minute", "minute": "minute"}
    if not count.isdigit() or int(count) < 1 or unit not in units or not (
            not colon or (burst.isdigit() and int(burst) >= 1)):
        raise ValueError(f"`{text}`: expected REQUESTS/s or REQUESTS/m, optionally :BURST "
                         "(e.g. 100/s or 100/s:200)")
    return RateLimit(int(count), units[unit], int(burst) if burst else int(count))


@dataclass(slots=True)
class _Listener:
    sock: socket.socket
    task: asyncio.Task[None]


class GatewayMode:
    """A proxy's gateway side: the table per snapshot, the listeners that follow it."""

    def __init__(self, proxy: Proxy, opts: GatewayOptions) -> None:
        self.proxy = proxy
        self.opts = opts
        self.credentials = Credentials(opts.credentials)
        self.table = GatewayTable({}, {})
        self.tls: dict[int, ssl.SSLContext] = {}
        self._tables: tuple[ProxySnapshot | None, GatewayTable] = (None, self.table)
        self._listeners: dict[int, _Listener] = {}
        # One budget for every port of the gateway, and one per client address (the
        # sidecars' inbound knobs: --max-connections, --max-connections-per-source).
        self.connections = Connections(proxy.opts.max_connections,
                                       proxy.opts.max_connections_per_source)
        self.bucket = new_bucket(opts.rate_limit, time.monotonic) if opts.rate_limit else None

    # -- config path ------------------------------------------------------------------

    def apply(self, snap: ProxySnapshot) -> str | None:
        """Build the table for a snapshot and open its new ports, before it is swapped in;
        an error (a port that cannot be opened, a credential that cannot be loaded) is the
        NACK message, and the previous table and listeners stay."""
        try:
            table = build_table(snap.config, snap.my_labels)
        except ValueError as exc:  # two Gateways for this proxy disagree on a port
            return str(exc)
        try:
            tls = {port: self.credentials.for_port([s for _, s in plan.servers])
                   for port, plan in table.ports.items() if plan.protocol == "HTTPS"}
        except CredentialError as exc:
            return str(exc)
        opened: dict[int, socket.socket] = {}
        for port in table.ports:
            if port in self._listeners:
                continue
            try:
                opened[port] = listen(self.opts.address, port)
            except OSError as exc:
                for s in opened.values():
                    s.close()
                return (f"gateway port {port}: cannot listen on {self.opts.address}:{port}: "
                        f"{exc.strerror or exc}")
        for port in [p for p in self._listeners if p not in table.ports]:
            gone = self._listeners.pop(port)
            gone.sock.close()
            gone.task.cancel()
        for port, sock in opened.items():
            task = spawn(accept_loop(sock, self._handler(port), self.connections,
                                     self.proxy.telemetry), name=f"gateway-{port}")
            self._listeners[port] = _Listener(sock, task)
            log.info("gateway listening on %s:%d (%s)", self.opts.address, port,
                     table.ports[port].protocol)
        self.table, self.tls = table, tls
        self._tables = (snap, table)
        return None

    def close(self) -> None:
        for entry in self._listeners.values():
            entry.sock.close()
            entry.task.cancel()
        self._listeners.clear()

    @property
    def ports(self) -> list[int]:
        return sorted(self._listeners)

    # -- request path ------------------------------------------------------------------

    def _handler(self, port: int) -> Callable[[socket.socket], Coroutine[Any, Any, None]]:
        async def on_connection(sock: socket.socket) -> None:
            await self._serve(sock, port)

        return on_connection

    async def _serve(self, sock: socket.socket, port: int) -> None:
        proxy = self.proxy
        plan = self.table.ports.get(port)
        counters = proxy.telemetry.counters
        try:
            peer = sock.getpeername()[0]
            peer_ip = ipaddress.ip_address(peer)  # once per connection, for ipBlocks
        except (OSError, ValueError):
            sock.close()
            return
        if plan is None:
            sock.close()
            return
        ctx = self.tls.get(port) if plan.protocol == "HTTPS" else None
        try:
            reader, writer = await streams_for(sock, ctx, proxy.opts.inbound_handshake_timeout_s)
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            counters["meshctl_proxy_gateway_tls_failures_total"] += 1
            log.debug("gateway handshake failed: %s", exc)
            sock.close()
            return
        dests: dict[int, str] = {}  # id(request) -> the service it went to, for its metrics
        scheme = b"https" if ctx is not None else b"http"

        def prepare(req: Request, snap: ProxySnapshot) -> Prep:
            prep, dest = self._prepare(req, snap, plan, peer, peer_ip, scheme)
            dests[id(req)] = dest
            return prep

        def done(snap: ProxySnapshot, result: Result, start: float, req: Request,
                 hop: Hop | None, end: float) -> None:
            dest = dests.pop(id(req), "unknown")
            proxy.plane.record(snap, "source", dest, result, start, req, hop=hop, end=end)

        try:
            await serve_requests(proxy.plane, reader, writer, prepare, done)
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _table_for(self, snap: ProxySnapshot) -> GatewayTable:
        current, table = self._tables
        return table if current is snap else self.table

    def _prepare(self, req: Request, snap: ProxySnapshot, plan: PortPlan, peer: str,
                 peer_ip: IPAddress, scheme: bytes) -> tuple[Prep, str]:
        proxy = self.proxy
        hop = proxy.tracer.start(req.headers, CLIENT, req.names)
        table = self._table_for(snap)
        host = request_host(req.host)
        # The port's servers in the request's snapshot: a config change reaches open
        # connections at their next request, like routes do.
        current = table.ports.get(plan.port)
        if current is None or current.protocol != plan.protocol:
            return local_prep(hop, 404, "NR", close=True), "unknown"
        hit = current.server_for(host)
        if hit is None:  # no server of this port for that host (Envoy: no virtual host)
            return local_prep(hop, 404, "NR"), "unknown"
        gateway, server = hit
        if server.https_redirect:
            return self._redirect(hop, req, table, gateway, host), "unknown"
        sent = req.get(_XFF)
        xff, client = forwarded_for(sent, peer, self.opts.trusted_hops)
        if snap.compiled_authz:  # AuthorizationPolicy selecting the gateway's labels
            # ipBlocks: the connection's peer; remoteIpBlocks: the client past the trusted
            # hops (Istio's numTrustedProxies). An unparsable forwarded entry: the peer.
            try:
                remote_ip: IPAddress = ipaddress.ip_address(client.decode("latin-1"))
            except ValueError:
                remote_ip = peer_ip
            if not decide(snap.compiled_authz, None, req, plan.port, peer_ip,
                          remote_ip).allowed:
                proxy.telemetry.counters["meshctl_proxy_rbac_denied_total"] += 1
                return local_prep(hop, 403, "RBAC", result_flag="-"), "unknown"
        limit = self.opts.max_request_bytes
        if limit and (req.content_length or 0) > limit:  # the parser's declared length
            return local_prep(hop, 413, "", close=True), "unknown"
        if self.bucket is not None:  # the gateway's local rate limit (Envoy local_ratelimit)
            wait = over_limit(self.bucket)
            if wait is not None:
                proxy.telemetry.counters["meshctl_proxy_rate_limited_total"] += 1
                return local_prep(hop, 429, "RL", extra=[(b"retry-after", b"%d" % wait)]), (
                    "unknown")
        routes = table.routes_for(gateway, host)
        compiled = first_match(routes, req) if routes else None
        if compiled is None:
            return local_prep(hop, 404, "NR"), "unknown"
        extra = [(_XFF, xff), (b"x-forwarded-proto", scheme),
                 (b"x-envoy-external-address", client)]
        prep = proxy.outbound.prepare_route(req, snap, compiled, 0, hop, extra)
        dest = compiled.dests[0][0] if len(compiled.dests) == 1 else _picked(prep)
        return prep, dest

    def _redirect(self, hop: Hop, req: Request, table: GatewayTable, gateway: str,
                  host: str) -> Prep:
        """tls.httpsRedirect: 301 to the same host and path over https (Envoy's
        https_redirect), on the Gateway's HTTPS port for the host when it is not 443."""
        port = table.https_port(gateway, host)
        authority = host if port in (None, 443) else f"{host}:{port}"
        location = b"https://" + authority.encode() + req.target
        head = render_response_head(301, b"Moved Permanently", [
            (b"location", location), (b"content-length", b"0"), (b"server", b"meshctl")])
        return Prep(hop, reply=head, result=Result(301, "-", 0, 0, "", 0, True))


def _picked(prep: Prep) -> str:
    """The service a weighted route picked: the admission's aim names it."""
    aim = getattr(prep.admission, "aim", None)
    if aim is not None:
        return str(aim[2].service.name)
    return "unknown"
