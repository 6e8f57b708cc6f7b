"""Admin (localhost 15000: /ready, /config_dump, /stats, /certs, /server_info, /tap);
Prometheus (/metrics).

`/tap` streams the requests this proxy finishes as NDJSON, for `meshctl tap` and `meshctl
top`. It is fed from `Proxy.record` through `TapHub`: with nobody tapping, the hub is
inactive and `record` skips it (one attribute test per request); each tap client has a
bounded queue, and a client too slow to keep up loses events (counted), never slows a
request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.promtext import MetricWriter
from common.state import atomic_write
from proxy import compiled
from proxy.forwarding.forward import Result
from proxy.http1 import Request
from proxy.httpio import ChunkWriter, Handler, Reply, Server, ServerRequest, json_reply, text_reply

if TYPE_CHECKING:
    from proxy.main import Proxy
    from proxy.tracing import Hop

log = logging.getLogger("meshctl.proxy.admin")

TAP_QUEUE = 1000  # events buffered per tap client
TAP_MAX_CLIENTS = 16
Event = dict[str, Any]


class TapHub:
    """Fan-out of finished-request events to the open /tap streams."""

    def __init__(self, counters: MutableMapping[str, float]) -> None:
        self._subs: list[tuple[asyncio.Queue[Event], Callable[[Event], bool]]] = []
        self._counters = counters
        self.active = False  # read per request by Proxy.record: False costs nothing else

    def subscribe(self, accept: Callable[[Event], bool]) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(TAP_QUEUE)
        self._subs.append((q, accept))
        self.active = True
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        self._subs = [s for s in self._subs if s[0] is not q]
        self.active = bool(self._subs)

    @property
    def clients(self) -> int:
        return len(self._subs)

    def publish(self, event: Event) -> None:
        for q, accept in self._subs:
            if not accept(event):
                continue
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self._counters["meshctl_proxy_tap_dropped_total"] += 1


def tap_event(
    proxy: Proxy,
    reporter: str,
    dest_service: str,
    result: Result,
    ms: float,
    req: Request,
    peer_id: str | None,
    hop: Hop | None,
) -> Event:
    """One finished request as a tap line (built only while someone taps)."""
    return {
        "ts": round(time.time(), 3),
        "proxy": proxy.proxy_id,
        "service": proxy.opts.service,
        "direction": "outbound" if reporter == "source" else "inbound",
        "destination": dest_service,
        "method": req.method.decode("latin-1"),
        "path": req.target.decode("latin-1"),
        "authority": (req.host or b"").decode("latin-1"),
        "status": result.status,
        "flags": result.flags or "-",
        "latency_ms": round(ms, 3),
        "peer": peer_id,
        "attempts": result.attempts,
        "upstream": result.upstream.split("/")[0] or None,
        "request_id": (req.get(b"x-request-id") or b"").decode("latin-1") or None,
        "trace_id": hop.trace_hex if hop is not None else None,
    }


def tap_filter(query: MutableMapping[str, str] | Any) -> Callable[[Event], bool]:
    """`?path=PREFIX&method=M&status=CODE&direction=inbound|outbound&destination=SVC`."""
    path = query.get("path") or ""
    method = (query.get("method") or "").upper()
    status = query.get("status") or ""
    direction = query.get("direction") or ""
    dest = query.get("destination") or ""

    def accept(e: Event) -> bool:
        return (
            (not path or str(e["path"]).startswith(path))
            and (not method or e["method"] == method)
            and (not status or str(e["status"]) == status)
            and (not direction or e["direction"] == direction)
            and (not dest or e["destination"] == dest)
        )

    return accept


class TapRefused(Exception):
    """A tap this proxy will not open (too many, a bad `max`); `status` is the HTTP one."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def tap_lines(proxy: Proxy, query: Mapping[str, str]) -> AsyncGenerator[bytes, None]:
    """The NDJSON lines of one /tap: a hello (the tap is live: a client may start traffic
    after it), then one per finished request `query`'s filters accept, a ping after 15 s of
    silence (finds a client that left), until `max` requests. Raises TapRefused first."""
    hub = proxy.tap
    if hub.clients >= TAP_MAX_CLIENTS:
        raise TapRefused(429, "too many tap clients")
    try:
        limit = int(query.get("max") or "0")
    except ValueError:
        raise TapRefused(400, "`max` must be an integer") from None
    return _follow(proxy, hub, tap_filter(query), limit)


async def _follow(proxy: Proxy, hub: TapHub, accept: Callable[[Event], bool],
                  limit: int) -> AsyncGenerator[bytes, None]:
    q = hub.subscribe(accept)
    sent = 0
    try:
        hello = {"type": "tap", "proxy": proxy.proxy_id, "service": proxy.opts.service}
        yield json.dumps(hello).encode() + b"\n"
        while not limit or sent < limit:
            try:
                async with asyncio.timeout(15.0):  # not wait_for: see httpio
                    event = await q.get()
            except TimeoutError:
                yield b'{"type":"ping"}\n'
                continue
            yield json.dumps({"type": "request", **event}).encode() + b"\n"
            sent += 1
    finally:
        hub.unsubscribe(q)


async def relayed_tap(proxy: Proxy, query: Mapping[str, str]) -> AsyncGenerator[bytes, None]:
    """/tap's lines for a tap the registry relays (proxy.control.client); a refusal is an
    `end` line saying why, as the registry ends a relayed tap."""
    try:
        lines = tap_lines(proxy, query)
    except TapRefused as exc:
        why = f"proxy {proxy.proxy_id} refused the tap: {exc}"
        yield json.dumps({"type": "end", "proxy": proxy.proxy_id, "reason": why}).encode() + b"\n"
        return
    async with contextlib.aclosing(lines):
        async for line in lines:
            yield line


def _dump(proxy: Proxy) -> dict[str, Any]:
    snap = proxy.snapshot
    return {
        "proxy_id": proxy.proxy_id,
        "service": proxy.opts.service,
        "labels": proxy.labels,
        "identity": str(proxy.identity.spiffe_id) if proxy.identity else None,
        "config_version": snap.version if snap else 0,
        "catalog_version": snap.catalog_version if snap else 0,
        "registry_connected": proxy.control.connected,
        "peer_authentication": snap.peer_mode if snap else None,
        "tracing": {
            "sampling_percent": proxy.tracer.sampling * 100.0,
            "otlp_endpoint": proxy.exporter.endpoint if proxy.exporter else None,
        },
        "services": {
            name: {
                "vip": v.vip,
                "ports": [{"port": p.port, "protocol": p.protocol} for p in v.service.ports],
                "routes": [r.route.name or f"route-{i}" for i, r in enumerate(v.routes)],
                "clusters": {
                    str(k): [f"{e.address}:{e.inbound_port}" for e in c.endpoints]
                    for k, c in v.clusters.items()
                },
            }
            for name, v in (snap.services.items() if snap else ())
        },
        "clusters": _clusters(proxy),
        "config": snap.config.to_wire() if snap else None,
    }


def _clusters(proxy: Proxy) -> list[dict[str, Any]]:
    """Runtime state per (service, subset): endpoints, which are ejected, breaker gauges."""
    out = []
    for rt in proxy.clusters.all():
        od = rt.outlier
        ejected = [h for h in rt.hosts if od is not None and od.is_ejected(h)]
        out.append(
            {
                "service": rt.key[0],
                "subset": rt.key[1],
                "endpoints": list(rt.hosts),
                "ejected": ejected,
                "ejections_total": od.ejections_total if od else 0,
                "panic": od.in_panic if od else False,
                "in_flight": rt.gauges.in_flight,
                "overflow": rt.gauges.overflow,
                "limits": {
                    "max_connections": rt.gauges.limits.max_connections,
                    "max_pending": rt.gauges.limits.max_pending,
                    "max_requests": rt.gauges.limits.max_requests,
                    "max_retries": rt.gauges.limits.max_retries,
                },
            }
        )
    return out


def admin_routes(proxy: Proxy) -> dict[str, Handler]:
    async def ready(_: ServerRequest) -> Reply:
        ok = proxy.started and proxy.snapshot is not None and proxy.identity is not None
        return text_reply("LIVE\n" if ok else "NOT READY\n", 200 if ok else 503)

    async def config_dump(_: ServerRequest) -> Reply:
        return json_reply(_dump(proxy), indent=1)

    async def stats(_: ServerRequest) -> Reply:
        t = proxy.telemetry
        body = {
            **t.health(),
            **t.gauges,
            "upstream_connections_opened": proxy.pool.opened,
            "requests_total": sum(t.requests.values()),
        }
        return json_reply(body)

    async def certs(_: ServerRequest) -> Reply:
        ident = proxy.identity
        if ident is None:
            return json_reply({"error": "no certificate yet"}, status=503)
        return json_reply(
            {
                "spiffe_id": str(ident.spiffe_id),
                "not_after": ident.not_after.isoformat(),
                "seconds_left": ident.lifetime_left(),
                "lifetime_seconds": proxy.telemetry.gauges.get(
                    "meshctl_proxy_certificate_lifetime_seconds"
                ),
                "renewals": proxy.control.renewals,
                "certificate": ident.cert_pem.decode(),
            }
        )

    async def server_info(_: ServerRequest) -> Reply:
        # As Envoy's /server_info: what this process is. `core`: the compiled request path
        # (proxy/compiled) or the interpreted modules, and why.
        core = compiled.STATUS
        return json_reply(
            {
                "proxy_id": proxy.proxy_id,
                "pid": os.getpid(),
                "core": {"compiled": core.compiled, "detail": core.detail},
            }
        )

    async def tap(request: ServerRequest) -> Reply:
        try:
            lines = tap_lines(proxy, request.query)
        except TapRefused as exc:
            return json_reply({"error": str(exc)}, status=exc.status)

        async def stream(out: ChunkWriter) -> None:
            async with contextlib.aclosing(lines):
                async for line in lines:
                    await out.write(line)

        return Reply(200, content_type="application/x-ndjson", stream=stream)

    return {
        "/ready": ready,
        "/config_dump": config_dump,
        "/stats": stats,
        "/certs": certs,
        "/server_info": server_info,
        "/tap": tap,
    }


def health_metrics(proxy: Proxy) -> str:
    """Per-cluster health families, rendered at scrape time from the cluster runtimes."""
    w = MetricWriter()
    active, total, overflow, panic, in_flight, cb_overflow = [], [], [], [], [], []
    for rt in proxy.clusters.all():
        labels = {"destination_service_name": rt.key[0], "subset": rt.key[1] or ""}
        od = rt.outlier
        active.append(("", labels, od.ejections_active if od else 0))
        total.append(("", labels, od.ejections_total if od else 0))
        overflow.append(("", labels, od.ejections_overflow if od else 0))
        panic.append(("", labels, 1 if od is not None and od.in_panic else 0))
        for kind, n in rt.gauges.in_flight.items():
            in_flight.append(("", {**labels, "kind": kind}, n))
        for kind, n in rt.gauges.overflow.items():
            cb_overflow.append(("", {**labels, "kind": kind}, n))
    w.family(
        "meshctl_proxy_outlier_ejections_active",
        "gauge",
        "Endpoints of the cluster ejected by outlier detection now.",
        active,
    )
    w.family(
        "meshctl_proxy_outlier_ejections_total",
        "counter",
        "Ejections enforced by outlier detection.",
        total,
    )
    w.family(
        "meshctl_proxy_outlier_ejections_overflow_total",
        "counter",
        "Ejections refused by maxEjectionPercent.",
        overflow,
    )
    w.family(
        "meshctl_proxy_outlier_panic",
        "gauge",
        "1 while the cluster is in panic (healthy hosts under minHealthPercent).",
        panic,
    )
    w.family(
        "meshctl_proxy_circuit_breaker_in_flight",
        "gauge",
        "In flight per circuit-breaker kind (connections, pending, requests, retries).",
        in_flight,
    )
    w.family(
        "meshctl_proxy_circuit_breaker_overflow_total",
        "counter",
        "Refusals per circuit-breaker kind (Envoy's upstream_*_overflow).",
        cb_overflow,
    )
    w.gauge("meshctl_proxy_tap_clients", "Open /tap streams.", proxy.tap.clients)
    w.gauge("meshctl_proxy_requests_in_flight", "Requests being handled now.", proxy.inflight)
    return w.text()


def metrics_routes(proxy: Proxy) -> dict[str, Handler]:
    async def metrics(_: ServerRequest) -> Reply:
        tel = proxy.telemetry
        tel.gauges["meshctl_proxy_registry_connected"] = 1 if proxy.control.connected else 0
        if proxy.identity is not None:
            tel.gauges["meshctl_proxy_certificate_seconds_left"] = proxy.identity.lifetime_left()
        return text_reply(tel.render(health_metrics(proxy)))

    return {"/metrics": metrics, "/stats/prometheus": metrics}


async def start_servers(proxy: Proxy) -> list[Server]:
    """The admin listener, then the Prometheus one."""
    servers = []
    for name, routes, (host, port) in (
        ("admin", admin_routes(proxy), proxy.opts.admin),
        ("metrics", metrics_routes(proxy), proxy.opts.metrics),
    ):
        server = Server(routes, name)
        await server.start(host, port)
        servers.append(server)
    return servers


def write_discovery(proxy: Proxy, servers: Sequence[Server]) -> Path | None:
    """MESH_HOME/proxies/<id>/admin.json: where the CLI (tap, stat, check, proxy-config)
    finds this proxy's admin and metrics listeners. The registry's endpoint record has no
    field for them yet; this file serves every proxy on this host meanwhile."""
    opts = proxy.opts

    def bound(i: int, fallback: tuple[str, int]) -> str:
        addr = servers[i].address if len(servers) > i else None
        host, port = addr or fallback
        if host in ("0.0.0.0", "::", ""):
            host = opts.advertise
        return f"{host}:{port}"

    info = {
        "proxy_id": proxy.proxy_id,
        "service": opts.service,
        "version": opts.version,
        "pid": os.getpid(),
        "admin": bound(0, opts.admin),
        "metrics": bound(1, opts.metrics),
        "inbound": proxy.ports.get("inbound"),
        "address": opts.advertise,
        # Transparent mode: the admin listener is this namespace's own 127.0.0.1.
        "netns": _my_netns(),
    }
    path = opts.home / "admin.json"
    try:
        atomic_write(path, json.dumps(info), mode=0o644)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)
        return None
    return path


def _my_netns() -> str | None:
    """The name of the `ip netns` namespace this process runs in, if it runs in one."""
    try:
        mine = os.stat("/proc/self/ns/net")
        for entry in os.scandir("/run/netns"):
            st = os.stat(entry.path)
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                return entry.name
    except OSError:
        pass
    return None
