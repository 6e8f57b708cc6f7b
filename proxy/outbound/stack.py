"""The outbound stack, in request order: trace -> route -> route rate limit -> fault -> limits
-> forward (retry, mTLS). The trace step opens the CLIENT span and renders the next hop's trace
headers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from functools import partial
from typing import TYPE_CHECKING, Final

from common.aio import spawn
from proxy.downstream.http1 import recorder, serve_requests
from proxy.forwarding.cluster import ClusterRuntime, endpoint_key
from proxy.forwarding.forward import Admission, Plan, Prep, Result, Target, local_prep
from proxy.forwarding.routing import CompiledRoute, HeaderList, first_match, over_limit
from proxy.http1 import (
    EndOfMessage,
    Request,
    render_request_head,
    strip_hop_by_hop,
)
from proxy.http1.grammar import index_of
from proxy.identity import PeerIdentityError, peer_identity, sni_for
from proxy.policy.limits import Gauges
from proxy.snapshot import Cluster, ProxySnapshot, ServiceView
from proxy.tracing import CLIENT, TRACE_HEADERS, Hop
from proxy.transport.detect import detect
from proxy.transport.streams import Channel, open_channel
from proxy.transport.tcp import relay, relay_framed
from proxy.transport.tls import Resumption
from registry.server.catalog import Endpoint

if TYPE_CHECKING:
    from proxy.runtime import DataPlane

log = logging.getLogger("meshctl.proxy.outbound")


class Outbound:
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def _target(
        self,
        snap: ProxySnapshot,
        view: ServiceView,
        cluster: Cluster,
        port: int,
        hash_key: bytes | None,
        exclude: frozenset[str],
        tcp: bool = False,
    ) -> Target | None:
        """The target for one attempt, `exclude`d endpoints aside (a request's
        `_Admission.pick` calls this with its aim)."""
        rt = cluster.runtime
        ep = rt.pick(exclude, hash_key)
        if ep is None:
            return None
        plane = self.plane
        ident = plane.identity
        # A Target per (endpoint, port, protocol, certificate), built once per snapshot:
        # the runtime drops them when the next snapshot updates it.
        mtls = cluster.mtls
        key = (ep.id, port, tcp, id(ident) if mtls else 0)
        cached = rt.targets.get(key)
        if cached is not None:
            rt.balancer.on_start(cached.endpoint)
            return cached
        expected = snap.config.spiffe_id(view.service.name)
        sni = sni_for(view.service.name, port, snap.config.namespace, tcp)

        resume = Resumption()  # this target's (endpoint, port, protocol, certificate)

        async def connect(ep: Endpoint = ep) -> Channel:
            if not mtls:  # DestinationRule tls.mode DISABLE: plaintext to the peer proxy
                return await open_channel(ep.address, ep.inbound_port)
            assert ident is not None
            return await self._dial_peer(ep, ident.client_ctx, sni, expected, resume)

        host = endpoint_key(ep)
        rt.balancer.on_start(host)
        http = cluster.http

        # The pool key includes the identity in use: after a renewal new connections
        # present the new certificate while open ones finish on the old.
        target = rt.targets[key] = Target(
            f"{host}/{port}/{id(ident) if mtls else 'plain'}",
            connect,
            cluster.connect_timeout_s,
            max_requests=http.max_requests_per_connection,
            limiter=plane.limiter(rt),
            idle_timeout_s=http.idle_timeout_s,
            report=partial(rt.report, host),
            endpoint=host,
        )
        return target

    async def _dial_peer(
        self,
        ep: Endpoint,
        ctx: ssl.SSLContext,
        sni: str,
        expected: str,
        resume: Resumption | None = None,
    ) -> Channel:
        """mTLS to the endpoint's proxy, whose certificate must name `expected`."""
        plane = self.plane
        w = await open_channel(
            ep.address, ep.inbound_port, ssl=ctx, server_hostname=sni, resume=resume
        )
        peer = peer_identity(w.get_extra_info("ssl_object"))
        if peer is None or str(peer) != expected:
            if resume is not None:
                resume.last = None  # nothing of this peer's to resume
            w.close()
            plane.telemetry.counters["meshctl_proxy_peer_identity_mismatch_total"] += 1
            where = f"{ep.address}:{ep.inbound_port}"
            raise PeerIdentityError(f"{where} is {peer}, expected {expected}")
        return w

    async def serve_endpoint_port(
        self, reader: Channel, writer: Channel, service: str, ep: Endpoint, port: int
    ) -> bool:
        """The app dialled a mesh endpoint's own address on a port its service does not
        declare: mTLS to that endpoint's proxy, the port named in the SNI, and a TCP relay
        (the peer relays to its app on that port, after its AuthorizationPolicy). False,
        nothing done, when the service's DestinationRule turns mTLS off: the caller then
        passes the connection through as it would any destination."""
        snap, ident = self.plane.snapshot, self.plane.identity
        view = snap.services.get(service) if snap else None
        cluster = view.cluster(None) if view else None
        if snap is None or ident is None or view is None or cluster is None or not cluster.mtls:
            return False
        counters = self.plane.telemetry.counters
        sni = sni_for(service, port, snap.config.namespace, True)
        expected = snap.config.spiffe_id(service)
        try:
            up = await asyncio.wait_for(
                self._dial_peer(ep, ident.client_ctx, sni, expected), cluster.connect_timeout_s
            )
        except (OSError, TimeoutError, ConnectionError, PeerIdentityError):
            counters["meshctl_proxy_tcp_connect_failures_total"] += 1
            writer.close()
            return True
        counters["meshctl_proxy_endpoint_port_total"] += 1
        self.plane.record_tcp(snap, "source", service, None, opened=True)
        try:
            sent, received = await relay_framed(reader, writer, up, up)
        finally:
            up.close()
            writer.close()
        self.plane.record_tcp(snap, "source", service, None, sent=sent, received=received)
        return True

    async def serve(
        self, reader: Channel, writer: Channel, service: str, port: int
    ) -> None:
        """One downstream connection from the app to `service:port`."""
        snap = self.plane.snapshot
        view = snap.services.get(service) if snap else None
        proto = view.service.port(port) if view else None
        try:
            if snap is None or view is None or proto is None:
                writer.close()
                return
            protocol, first = proto.carried_as, b""  # http2/grpc: TCP for now
            if protocol == "auto":  # no protocol declared: look at what the client sends
                protocol, first = await detect(reader, port)
            if protocol == "tcp":
                await self._serve_tcp(reader, writer, snap, view, port, first)
            else:
                await self._serve_http(reader, writer, view.service.name, port, first)
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve_tcp(
        self,
        reader: Channel,
        writer: Channel,
        snap: ProxySnapshot,
        view: ServiceView,
        port: int,
        first: bytes = b"",
    ) -> None:
        cluster = view.tcp_cluster(port)
        target = (self._target(snap, view, cluster, port, None, frozenset(), tcp=True)
                  if cluster else None)
        if target is None:
            self.plane.telemetry.counters["meshctl_proxy_tcp_no_healthy_upstream_total"] += 1
            return
        try:
            up = await asyncio.wait_for(target.connect(), target.connect_timeout_s)
        except (OSError, TimeoutError, ConnectionError):
            self.plane.telemetry.counters["meshctl_proxy_tcp_connect_failures_total"] += 1
            return
        plane = self.plane
        plane.record_tcp(snap, "source", view.service.name, None, opened=True)
        if cluster is not None and not cluster.mtls:
            # Plaintext to the peer proxy: raw bytes, a real half-close (no frames needed).
            if first:
                up.write(first)
            sent, received = await relay(reader, writer, up, up)
            sent += len(first)
        else:
            sent, received = await relay_framed(reader, writer, up, up, first)
        up.close()
        plane.record_tcp(snap, "source", view.service.name, None, sent=sent, received=received)

    async def _serve_http(
        self,
        reader: Channel,
        writer: Channel,
        service: str,
        port: int,
        first: bytes = b"",
    ) -> None:
        plane = self.plane

        def prepare(req: Request, snap: ProxySnapshot) -> Prep:
            return self._prepare(req, snap, service, port)

        done = recorder(plane, "source", service, None)
        await serve_requests(plane, reader, writer, prepare, done, first)

    def _prepare(self, req: Request, snap: ProxySnapshot, service: str, port: int) -> Prep:
        """The route and its policies for one request, decided before any I/O."""
        hop = self.plane.tracer.start(req.headers, CLIENT, req.names)
        view = snap.services.get(service)
        if view is None:  # the service left the config while the connection was open
            return local_prep(hop, 404, "NR", close=True)
        compiled = first_match(view.routes, req) if view.routes else view.default_route
        if compiled is None:
            return local_prep(hop, 404, "NR")
        return self.prepare_route(req, snap, compiled, port, hop)

    def prepare_route(
        self,
        req: Request,
        snap: ProxySnapshot,
        compiled: CompiledRoute,
        port: int,
        hop: Hop,
        extra: HeaderList | None = None,
    ) -> Prep:
        """A matched route's policies, in request order: route rate limit, weighted pick,
        fault, circuit breaker, then the forwarding plan (with `extra` request headers).
        `port` 0 (a gateway's request): the destination's port, else its service's first."""
        if compiled.rate_limit is not None:  # mesh.yaml routeRateLimits (Envoy local_ratelimit)
            wait = over_limit(compiled.rate_limit)
            if wait is not None:
                self.plane.telemetry.counters["meshctl_proxy_rate_limited_total"] += 1
                return local_prep(hop, 429, "RL", extra=[(b"retry-after", b"%d" % wait)])
        index = compiled.pick()
        host, subset, dest_port = compiled.dests[index]
        dview = snap.services[host]
        cluster = dview.cluster(subset)
        if cluster is None:
            return local_prep(hop, 503, "UH")
        dport = dest_port or port or dview.service.ports[0].port
        fault = compiled.fault
        if fault is not None:

            async def after_fault(writer: Channel) -> Prep:
                aborted = await self.plane.apply_fault(fault, writer)  # writes its own reply
                if aborted is not None:
                    return Prep(hop, result=Result(aborted, "FI", 0, 0, "", 0, True))
                return self._admit(req, snap, dview, cluster, compiled, index, dport, hop,
                                   extra)

            return Prep(hop, later=after_fault)
        return self._admit(req, snap, dview, cluster, compiled, index, dport, hop, extra)

    def _admit(
        self,
        req: Request,
        snap: ProxySnapshot,
        dview: ServiceView,
        cluster: Cluster,
        compiled: CompiledRoute,
        index: int,
        dport: int,
        hop: Hop,
        extra: HeaderList | None = None,
    ) -> Prep:
        """Past the circuit breaker (the cluster's request gauge), the forwarding plan."""
        rt = cluster.runtime
        gauges = rt.gauges
        if not gauges.try_acquire_request():  # counted by DataPlane.record (flag UO)
            return local_prep(hop, 503, "UO")
        plane = self.plane
        add = hop.headers_after(compiled.add_request[index])  # the plan's additions
        names = req.names
        if index_of(names if names is not None else req.lowered(), b"x-request-id") < 0:
            add.append((b"x-request-id", plane.request_id()))
        if extra:
            add.extend(extra)
        rt.budget.deposit()
        hash_key = req.get(rt.hash_header) if rt.hash_header else None
        aim = (self, snap, dview, cluster, dport, hash_key)
        admission = _Admission(rt, gauges, plane.telemetry.counters, hop, aim)
        mirror = None
        mirrored = compiled.mirror
        if mirrored is not None and _RNG.random() * 100.0 < compiled.mirror_percentage:
            mview = snap.services.get(mirrored.host)
            mcluster = mview.cluster(mirrored.subset) if mview else None
            if mview is not None and mcluster is not None:
                mport = mirrored.port or dport

                def mirror(req: Request, body: bytes) -> None:
                    spawn(self._mirror(req, body, snap, mview, mcluster, mport, add))

        plan = Plan(
            mirror=mirror,
            admission=admission,
            add_request_headers=add,
            remove_request_headers=compiled.remove_request[index],
            drop_request_headers=compiled.drop_request[index],
            retry=compiled.retry,
            timeout_s=compiled.timeout_s,
            response_headers=compiled.response_ops[index],
        )
        return Prep(hop, plan=plan, pool=plane.pool, admission=admission)

    async def _mirror(
        self,
        req: Request,
        body: bytes,
        snap: ProxySnapshot,
        view: ServiceView,
        cluster: Cluster,
        port: int,
        add: HeaderList,
    ) -> None:
        """Istio `mirror`: fire and forget. The copy's Host gets `-shadow` (as Envoy does);
        its response and any failure are dropped and never touch the real request."""
        counters = self.plane.telemetry.counters
        target = self._target(snap, view, cluster, port, None, frozenset())
        if target is None:
            counters["meshctl_proxy_mirror_failed_total"] += 1
            return
        host = req.host or b""
        name, sep, hport = host.partition(b":")
        shadow = name + b"-shadow" + sep + hport
        headers = [
            (n, shadow if n.lower() == b"host" else v)
            for n, v in strip_hop_by_hop(req.headers)
            if n.lower() not in _MIRROR_DROP
        ]
        headers += [*add, (b"content-length", b"%d" % len(body))]
        try:
            conn, _ = await self.plane.pool.get(
                target.key, target.connect, target.connect_timeout_s
            )
            conn.writer.write(render_request_head(req.method, req.target, headers) + body)
            conn.parser.expect(req.method)
            while not isinstance(await asyncio.wait_for(conn.events.next(), 30), EndOfMessage):
                pass
            self.plane.pool.put(conn)
            counters["meshctl_proxy_mirror_sent_total"] += 1
        except Exception:
            counters["meshctl_proxy_mirror_failed_total"] += 1


# What an outbound request's targets are picked from: (stack, snapshot, service, cluster,
# port, hash key), the arguments of Outbound._target but the endpoints to exclude.
Aim = tuple["Outbound", ProxySnapshot, ServiceView, Cluster, int, bytes | None]


class _Admission(Admission):
    """One admitted request's hold on its cluster: the request gauge (the circuit breaker)
    and the retries it took, released together when the request ends; and its targets
    (`aim`), picked by the cluster's balancer among the endpoints not yet tried."""

    __slots__ = ("aim", "counters", "gauges", "held", "hop", "rt")

    def __init__(
        self,
        rt: ClusterRuntime,
        gauges: Gauges,
        counters: dict[str, float],
        hop: Hop,
        aim: Aim | None = None,
    ) -> None:
        super().__init__()
        self.rt, self.gauges, self.counters, self.hop = rt, gauges, counters, hop
        self.aim = aim
        self.held = 0  # retries holding the cluster's maxRetries gauge

    def pick(self, exclude: frozenset[str]) -> Target | None:
        aim = self.aim
        assert aim is not None, "an admission without an aim has no targets"
        outbound, snap, dview, cluster, dport, hash_key = aim
        return outbound._target(snap, dview, cluster, dport, hash_key, exclude)

    def release(self) -> None:
        self.gauges.release_request()
        for _ in range(self.held):
            self.gauges.release_retry()

    def per_try_timed_out(self) -> None:
        self.counters["meshctl_proxy_upstream_rq_per_try_timeout_total"] += 1
        self.hop.event("per-try timeout")

    def may_retry(self) -> bool:
        """DestinationRule http.maxRetries: concurrent retries in the cluster, held until
        the request ends; then Linkerd's budget: at most 20 % more than requests."""
        counters, hop = self.counters, self.hop
        # The gauges the request was admitted on, which release() releases: after a config
        # change replaced the cluster's gauges, a retry taken on the new ones was never
        # given back.
        if not self.gauges.try_acquire_retry():
            counters["meshctl_proxy_retry_overflow_total"] += 1
            hop.event("retry refused", ("meshctl.retry.reason", "max_retries"))
            return False
        self.held += 1
        if not self.rt.budget.try_withdraw():
            counters["meshctl_proxy_retry_budget_exhausted_total"] += 1
            hop.event("retry refused", ("meshctl.retry.reason", "budget"))
            return False
        counters["meshctl_proxy_retries_total"] += 1
        hop.event("retry", ("http.request.resend_count", self.held))
        return True


# The copy carries the route's headers and our trace context (`add`), not the caller's.
_MIRROR_DROP: Final = (
    frozenset((b"content-length", b"transfer-encoding", b"expect", b"x-forwarded-client-cert"))
    | TRACE_HEADERS
)
_RNG: Final = random.Random()
