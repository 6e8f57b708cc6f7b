"""Admin (localhost 15000: /ready, /config_dump, /stats, /certs); Prometheus (15090: /metrics)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from proxy.main import Proxy


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
        "config": snap.config.to_wire() if snap else None,
    }


def admin_app(proxy: Proxy) -> web.Application:
    async def ready(_: web.Request) -> web.Response:
        ok = proxy.snapshot is not None and proxy.identity is not None
        return web.Response(status=200 if ok else 503, text="LIVE\n" if ok else "NOT READY\n")

    async def config_dump(_: web.Request) -> web.Response:
        return web.json_response(_dump(proxy), dumps=lambda o: json.dumps(o, indent=1))

    async def stats(_: web.Request) -> web.Response:
        t = proxy.telemetry
        body = {
            **t.counters,
            **t.gauges,
            "upstream_connections_opened": proxy.pool.opened,
            "requests_total": sum(t.requests.values()),
        }
        return web.json_response(body)

    async def certs(_: web.Request) -> web.Response:
        ident = proxy.identity
        if ident is None:
            return web.json_response({"error": "no certificate yet"}, status=503)
        return web.json_response(
            {
                "spiffe_id": str(ident.spiffe_id),
                "not_after": ident.not_after.isoformat(),
                "seconds_left": ident.lifetime_left(),
                "renewals": proxy.control.renewals,
                "certificate": ident.cert_pem.decode(),
            }
        )

    app = web.Application()
    app.add_routes(
        [
            web.get("/ready", ready),
            web.get("/config_dump", config_dump),
            web.get("/stats", stats),
            web.get("/certs", certs),
        ]
    )
    return app


def metrics_app(proxy: Proxy) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        tel = proxy.telemetry
        tel.gauges["meshctl_proxy_registry_connected"] = 1 if proxy.control.connected else 0
        if proxy.identity is not None:
            tel.gauges["meshctl_proxy_certificate_seconds_left"] = proxy.identity.lifetime_left()
        return web.Response(text=tel.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/stats/prometheus", metrics)])
    return app
