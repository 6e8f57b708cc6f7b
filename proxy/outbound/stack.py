"""The outbound stack, in request order: service -> route -> fault -> forward (retry, balance, mTLS)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from proxy.forward import Plan, Result, Target, forward, local_reply, relay
from proxy.http1 import ProtocolError, Request, RequestParser
from proxy.identity import peer_identity, sni_for
from proxy.policy.retry import RetryParams
from proxy.routing import first_match
from proxy.snapshot import Cluster, ProxySnapshot, ServiceView
from proxy.streams import EventStream, PeerClosed
from registry.config.model import HTTPRoute
from registry.server.catalog import Endpoint

if TYPE_CHECKING:
    from proxy.main import Proxy

log = logging.getLogger("meshctl.proxy.outbound")
HEADER_TIMEOUT_S = 60.0
# Headers a client must never be able to set on a hop we vouch for: identity is the
# verified certificate's, only.
SPOOFABLE = frozenset((b"x-forwarded-client-cert",))


class PeerIdentityError(ConnectionError):
    pass


def _retry_params(route: HTTPRoute) -> RetryParams:
    r = route.retries
    if r is None:
        return RetryParams()  # Istio's default: 2 retries on connect-failure,refused-stream,...
    return RetryParams(attempts=r.attempts, per_try_timeout_s=r.per_try_timeout_s,
                       retry_on=frozenset(r.retry_on))


class Outbound:
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def _target(self, snap: ProxySnapshot, view: ServiceView, cluster: Cluster, port: int,
                exclude: frozenset[str]) -> Target | None:
        ep = cluster.pick(exclude)
        if ep is None:
            return None
        proxy = self.proxy
        ident = proxy.identity
        expected = snap.config.spiffe_id(view.service.name)
        sni = sni_for(view.service.name, port, snap.config.namespace)

        async def connect(ep: Endpoint = ep) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            assert ident is not None
            r, w = await asyncio.open_connection(ep.address, ep.inbound_port,
                                                 ssl=ident.client_ctx, server_hostname=sni)
            peer = peer_identity(w.get_extra_info("ssl_object"))
            if peer is None or str(peer) != expected:
                w.close()
                proxy.telemetry.counters["meshctl_proxy_peer_identity_mismatch_total"] += 1
                raise PeerIdentityError(f"{ep.address}:{ep.inbound_port} is {peer}, "
                                        f"expected {expected}")
            return r, w

        key = f"{ep.address}:{ep.inbound_port}/{port}/{id(ident)}"
        return Target(key, connect, cluster.connect_timeout_s)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    service: str, port: int) -> None:
        """One downstream connection from the app to `service:port`."""
        snap = self.proxy.snapshot
        view = snap.services.get(service) if snap else None
        proto = view.service.port(port) if view else None
        try:
            if snap is None or view is None or proto is None:
                writer.close()
                return
            if proto.protocol == "tcp":
                await self._serve_tcp(reader, writer, snap, view, port)
            else:
                await self._serve_http(reader, writer, view.service.name, port)
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         snap: ProxySnapshot, view: ServiceView, port: int) -> None:
        cluster = view.cluster(None)
        target = self._target(snap, view, cluster, port, frozenset()) if cluster else None
        if target is None:
            return
        try:
            ur, uw = await asyncio.wait_for(target.connect(), target.connect_timeout_s)
        except (OSError, TimeoutError, ConnectionError):
            self.proxy.telemetry.counters["meshctl_proxy_tcp_connect_failures_total"] += 1
            return
        await relay(reader, writer, ur, uw)
        uw.close()

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          service: str, port: int) -> None:
        down = EventStream(reader, RequestParser())
        proxy = self.proxy
        while True:
            try:
                ev = await asyncio.wait_for(down.next(), HEADER_TIMEOUT_S)
            except (PeerClosed, TimeoutError, ConnectionError):
                return
            except ProtocolError as exc:
                writer.write(local_reply(exc.status, "DPE", close=True))
                proxy.telemetry.counters["meshctl_proxy_downstream_protocol_errors_total"] += 1
                return
            assert isinstance(ev, Request)
            snap = proxy.snapshot  # read once: the request finishes on this snapshot
            assert snap is not None
            view = snap.services.get(service)
            start = time.monotonic()
            if view is None:
                writer.write(local_reply(404, "NR", close=True))
                return
            try:
                result = await self._route(ev, down, writer, snap, view, port)
            except ProtocolError as exc:
                writer.write(local_reply(exc.status, "DPE", close=True))
                return
            except (PeerClosed, ConnectionError):
                return
            proxy.record(snap, "source", view.service.name, result, start, ev)
            if not result.keep_alive or not ev.keep_alive:
                return
            try:
                await writer.drain()
            except ConnectionError:
                return

    async def _route(self, req: Request, down: EventStream, writer: asyncio.StreamWriter,
                     snap: ProxySnapshot, view: ServiceView, port: int) -> Result:
        compiled = first_match(view.routes, req) if view.routes else view.default_route
        if compiled is None:
            writer.write(local_reply(404, "NR"))
            await _discard_body(down, req)
            return Result(404, "NR", 0, 0, "", 0, True)
        route = compiled.route
        dest = route.route[compiled.pick()]
        dview = snap.services[dest.destination.host]
        cluster = dview.cluster(dest.destination.subset)
        if cluster is None:
            writer.write(local_reply(503, "UH"))
            await _discard_body(down, req)
            return Result(503, "UH", 0, 0, "", 0, True)
        dport = dest.destination.port or port
        if route.fault is not None:
            aborted = await self.proxy.apply_fault(route.fault, writer)
            if aborted is not None:
                await _discard_body(down, req)
                return Result(aborted, "FI", 0, 0, "", 0, True)
        ops = route.headers.request
        add = [(b"x-request-id", self.proxy.request_id())] if req.get(b"x-request-id") is None \
            else []
        add += [(k.encode(), v.encode()) for k, v in (*ops.set, *ops.add)]
        add += [(k.encode(), v.encode()) for k, v in (*dest.headers.request.set,
                                                       *dest.headers.request.add)]
        remove = SPOOFABLE | {k.lower().encode() for k, _ in ops.set} | \
            {k.lower().encode() for k in ops.remove}
        plan = Plan(
            pick=lambda exclude: self._target(snap, dview, cluster, dport, exclude),
            add_request_headers=add, remove_request_headers=frozenset(remove),
            retry=_retry_params(route), timeout_s=route.timeout_s,
            response_headers=_response_ops(route) if _has_response_ops(route) else None)
        return await forward(req, down, writer, self.proxy.pool, plan)


def _has_response_ops(route: HTTPRoute) -> bool:
    r = route.headers.response
    return bool(r.set or r.add or r.remove) or any(
        d.headers.response.set or d.headers.response.add or d.headers.response.remove
        for d in route.route)


def _response_ops(route: HTTPRoute):  # type: ignore[no-untyped-def]
    r = route.headers.response
    set_ = [(k.encode(), v.encode()) for k, v in r.set]
    add = [(k.encode(), v.encode()) for k, v in r.add]
    drop = {k.lower().encode() for k in r.remove} | {k.lower() for k, _ in set_}

    def apply(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return [(n, v) for n, v in headers if n.lower() not in drop] + set_ + add
    return apply


async def _discard_body(down: EventStream, req: Request) -> None:
    from proxy.http1 import EndOfMessage
    while True:
        ev = await down.next()
        if isinstance(ev, EndOfMessage):
            return
