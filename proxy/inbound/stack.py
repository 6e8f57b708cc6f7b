"""The inbound stack, in request order: TLS, SPIFFE identity -> trace -> authz -> rate limit
-> app. The trace step opens the SERVER span, a child of the caller's CLIENT span."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Final

from proxy.downstream.http1 import recorder, serve_requests
from proxy.forwarding.forward import Admission, Plan, Prep, Target, local_prep
from proxy.http1 import Request, request_drop
from proxy.identity import parse_sni, peer_identity
from proxy.intercept.origdst import original_dst
from proxy.policy.authz import IPAddress
from proxy.tracing import SERVER, TRACE_HEADERS
from proxy.transport.accept import first_byte, streams_for
from proxy.transport.detect import detect
from proxy.transport.streams import Channel, open_channel
from proxy.transport.tcp import relay, relay_framed
from registry.ca import SpiffeId

if TYPE_CHECKING:
    from proxy.runtime import DataPlane
    from proxy.snapshot import ProxySnapshot

log = logging.getLogger("meshctl.proxy.inbound")
# Identity headers a peer must not forge: we set x-forwarded-client-cert from the verified
# certificate only (Istio's forwardClientCertDetails SANITIZE_SET).
STRIP = frozenset((b"x-forwarded-client-cert",))
# The trace headers are re-rendered for the app: the server span becomes its parent.
STRIP_AND_TRACE: Final = STRIP | TRACE_HEADERS
_DROP: Final = request_drop(STRIP_AND_TRACE)


class Inbound:
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def on_connection(self, sock: socket.socket) -> None:
        plane = self.plane
        snap = plane.snapshot
        if snap is None or plane.identity is None:
            sock.close()
            return
        tel = plane.telemetry.counters
        plain_port: int | None = None
        # One deadline for the first byte and the TLS handshake (Envoy's
        # transport_socket_connect_timeout): a connection that never starts or never
        # finishes TLS holds its slot that long at most. Nothing is allocated for TLS until
        # the first byte is there, so idle connections cost a socket and a task.
        timeout = plane.settings.inbound_handshake_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            b = await first_byte(sock, timeout)
            if not b:
                sock.close()  # closed before sending anything
                return
            tls = b == b"\x16" or not snap.may_be_plaintext  # STRICT: TLS, or it fails
            if not tls:
                # Which port the plaintext client wanted: the original destination when
                # iptables redirected it here, else the service's first port (explicit mode).
                plain_port = _original_port(sock) or plane.default_inbound_port(snap)
                if snap.port_modes.get(plain_port or 0, snap.peer_mode) == "STRICT":
                    tel["meshctl_proxy_inbound_plaintext_refused_total"] += 1
                    sock.close()
                    return
            reader, writer = await streams_for(
                sock,
                plane.server_ctx if tls else None,
                max(0.001, deadline - asyncio.get_running_loop().time()),
            )
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            if isinstance(exc, TimeoutError):
                tel["meshctl_proxy_inbound_handshake_timeouts_total"] += 1
            tel["meshctl_proxy_inbound_tls_failures_total"] += 1
            log.debug("inbound handshake failed: %s", exc)
            sock.close()
            return
        try:
            ssl_obj = writer.get_extra_info("ssl_object")
            peer = peer_identity(ssl_obj) if tls else None
            if tls and (peer is None or peer.trust_domain != snap.config.trust_domain):
                tel["meshctl_proxy_inbound_identity_refused_total"] += 1
                return
            if not tls:
                tel["meshctl_proxy_inbound_plaintext_total"] += 1
            target = parse_sni(getattr(ssl_obj, "meshctl_sni", None)) if tls else None
            port = target[1] if target else (plain_port or plane.default_inbound_port(snap))
            await self._serve_port(reader, writer, port, snap, peer, target, source_ip(sock))
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def on_published(self, sock: socket.socket) -> None:
        """A connection through one of the container's published ports (docs/docker.md).

        Only the published-port rules (`-s GATEWAY`, and `! -s NETWORK` for a port bound
        beyond loopback, `--dport P -j REDIRECT`: proxy/intercept/rules.py) send connections
        here, so this is ingress: plaintext, no peer identity
        (AuthorizationPolicy sees no principal), counted as from "unknown". A client that
        dials this listener itself was not redirected: refused, like an undeclared port.
        """
        plane = self.plane
        snap = plane.snapshot
        tel = plane.telemetry.counters
        port = _original_port(sock)
        if snap is None or plane.identity is None or port is None or not snap.me:
            tel["meshctl_proxy_inbound_published_refused_total"] += 1
            sock.close()
            return
        try:
            reader, writer = await streams_for(sock, None)
        except OSError:
            sock.close()
            return
        tel["meshctl_proxy_inbound_published_total"] += 1
        try:
            await self._serve_port(reader, writer, port, snap, None, None, source_ip(sock))
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve_port(
        self,
        reader: Channel,
        writer: Channel,
        port: int | None,
        snap: ProxySnapshot,
        peer: SpiffeId | None,
        target: tuple[str, int, str] | None,
        src: IPAddress | None,
    ) -> None:
        """One accepted connection for service port `port`, by the port's protocol; `src`
        is the connection's source address (ipBlocks, remoteIpBlocks)."""
        me = snap.me
        p = me.port(port) if me and port else None
        tel = self.plane.telemetry.counters
        if p is None and port is not None and self.plane.settings.inbound_passthrough(port):
            # A port the service does not declare (every port is captured): Istio's
            # inbound passthrough, a TCP relay to the app on that port after authorization.
            tel["meshctl_proxy_inbound_passthrough_total"] += 1
            await self._serve_tcp(reader, writer, port, snap, peer, src)
            return
        if p is None or port is None:
            tel["meshctl_proxy_inbound_unknown_port_total"] += 1
            return
        protocol, first = p.carried_as, b""  # http2/grpc: TCP for now
        if protocol == "auto":
            # Undeclared: the peer proxy says what it detected (SNI); a plaintext client
            # (PERMISSIVE, or through a published port) is sniffed here the same way.
            if target is not None:
                protocol = target[2]
            else:
                protocol, first = await detect(reader, port)
        if protocol == "tcp":
            await self._serve_tcp(reader, writer, port, snap, peer, src, first)
        else:
            await self._serve_http(reader, writer, port, peer, src, first)

    def _app_target(self, port: int) -> Target:
        host, app_port = self.plane.settings.app_address(port)

        async def connect() -> Channel:
            return await open_channel(host, app_port)

        return Target(f"app:{port}", connect, 5.0)

    async def _serve_tcp(
        self,
        reader: Channel,
        writer: Channel,
        port: int,
        snap: ProxySnapshot,
        peer: SpiffeId | None,
        src: IPAddress | None,
        first: bytes = b"",
    ) -> None:
        plane = self.plane
        me = snap.me.name if snap.me else ""
        if not plane.authorize_tcp(peer, port, src):
            plane.telemetry.counters["meshctl_proxy_authz_denied_total"] += 1
            return
        t = self._app_target(port)
        try:
            app = await asyncio.wait_for(t.connect(), t.connect_timeout_s)
            ar = aw = app
        except (OSError, TimeoutError):
            plane.telemetry.counters["meshctl_proxy_tcp_connect_failures_total"] += 1
            return
        plane.record_tcp(snap, "destination", me, peer, opened=True)
        if first:
            aw.write(first)  # what protocol detection already read
        # Peer proxies frame the stream (half-close across TLS); a plaintext client in
        # PERMISSIVE mode sends raw bytes.
        if peer is not None:
            received, sent = await relay_framed(ar, aw, reader, writer)
        else:
            received, sent = await relay(reader, writer, ar, aw)
        aw.close()
        plane.record_tcp(snap, "destination", me, peer, sent=sent, received=received)

    async def _serve_http(
        self,
        reader: Channel,
        writer: Channel,
        port: int,
        peer: SpiffeId | None,
        src: IPAddress | None,
        first: bytes = b"",
    ) -> None:
        plane = self.plane
        me = str(plane.identity.spiffe_id) if plane.identity else ""
        xfcc = [(b"x-forwarded-client-cert", f"By={me};URI={peer}".encode())] if peer else []
        tracer = plane.tracer
        counters = plane.telemetry.counters
        app = Admission(self._app_target(port))  # the app: one target for the connection

        def prepare(req: Request, snap: ProxySnapshot) -> Prep:
            """Authorization, then the service's rate limit, then the app (no I/O)."""
            hop = tracer.start(req.headers, SERVER, req.names)
            if not plane.authorize(peer, req, port, src):
                counters["meshctl_proxy_authz_denied_total"] += 1
                return local_prep(hop, 403, "RBAC", result_flag="-")
            limited = plane.rate_limited()
            if limited is not None:
                counters["meshctl_proxy_rate_limited_total"] += 1
                return local_prep(hop, 429, "RL", extra=[(b"retry-after", b"%d" % limited)])
            plan = Plan(
                admission=app,
                add_request_headers=hop.headers_after(xfcc),
                remove_request_headers=STRIP_AND_TRACE,
                drop_request_headers=_DROP,
                retry=None,
                timeout_s=None,
            )
            return Prep(hop, plan=plan, pool=plane.app_pool)

        done = recorder(plane, "destination", None, peer)
        await serve_requests(plane, reader, writer, prepare, done, first)


def source_ip(sock: socket.socket) -> IPAddress | None:
    """The connection's source address, once per connection (IPv4-mapped IPv6 as IPv4)."""
    try:
        ip = ipaddress.ip_address(sock.getpeername()[0])
    except (OSError, ValueError, IndexError):
        return None
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped or ip


def _original_port(sock: socket.socket) -> int | None:
    try:
        return original_dst(sock)[1]
    except OSError:
        return None  # not redirected: the client dialled the inbound port itself
