"""The dashboard's web server: the page, its static files, the graph and the canaries as JSON.

With a Prometheus (`--prometheus URL`) the graph's rates come from it (PromQL, prometheus.py);
otherwise it scrapes the proxies every SCRAPE_S and keeps 15 minutes of scrapes, so a
window of 1, 5 or 15 minutes is the difference between the newest scrape and the oldest one
inside the window. The proxies are this host's (MESH_HOME/proxies, as `meshctl stat` finds
them), or with a `registry` client (`--registry`/`--operator-token-file`, from another host)
every proxy of the mesh, their metrics, config dumps and taps relayed by the registry
(meshctl.observe.remote). The canaries are the registry's (GET /v1/canaries). On a loopback
address anyone on the host may look (as with `meshctl stat`); anywhere else the operator
credential is required: `?token=...`
once (it becomes a cookie) or `Authorization: Bearer`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from common.promparse import parse
from common.proxies import ObserveError, ProxyInfo, local_proxies, select
from common.stats import Scrape
from meshctl.client import RegistryClient, RegistryError, RegistryUnavailable
from meshctl.dashboard.graph import graph, mark_ejected
from meshctl.dashboard.panel import attribute_errors, filter_requests, service_panel
from meshctl.dashboard.prometheus import PrometheusError, fetch
from meshctl.observe.remote import remote_proxies
from meshctl.observe.tap import TapFilter, follow
from registry.config import MeshConfig

__all__ = ["SCRAPE_S", "TAP_KEPT", "WINDOWS_S", "Dashboard", "Tap"]

log = logging.getLogger("meshctl.dashboard")
SCRAPE_S = 2.0
WINDOWS_S = (60, 300, 900)
COOKIE = "meshctl_dashboard"
TAP_KEPT = 1000  # live requests kept for the tapped service (the newest)
TAP_IDLE_S = 60.0  # a tap nobody polled for this long stops
TAP_SPAN_S = 15.0
SCRAPE_THREADS = 8
_STATIC = {"dashboard.js": "application/javascript", "dashboard.css": "text/css",
           "vendor/cytoscape.min.js": "application/javascript"}


def scrape_all(proxies: list[ProxyInfo]) -> tuple[Scrape, dict[str, list[str]]]:
    """Every proxy's metrics, and which endpoints (address:port) each caller's outlier
    detection has ejected now (their /config_dump, as `meshctl why` reads it). The proxies
    are read at once (relayed ones each cost a round trip through the registry)."""
    out: dict[str, list[Any]] = {}
    ejected: dict[str, list[str]] = {}

    def read(p: ProxyInfo) -> tuple[ProxyInfo, list[Any], Any] | None:
        try:
            return p, list(parse(p.metrics_text(timeout=2.0))), \
                p.admin_json("/config_dump", timeout=2.0)
        except ObserveError as exc:
            log.debug("no metrics from %s: %s", p.proxy_id, exc)
            return None

    with ThreadPoolExecutor(max_workers=SCRAPE_THREADS) as pool:
        for got in pool.map(read, proxies):
            if got is None:
                continue
            p, samples, dump = got
            out[p.proxy_id] = samples
            for c in dump.get("clusters", []) if isinstance(dump, dict) else []:
                for host in c.get("ejected", []):
                    ejected.setdefault(str(host), []).append(p.workload)
    return out, ejected


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class Tap:
    """The live requests of one service: a thread follows its proxies' /tap streams
    (meshctl.observe.tap, as `meshctl tap` does) into a bounded buffer, until another
    service is tapped or nobody has asked for TAP_IDLE_S."""

    def __init__(self, home: Path, service: str,
                 mesh: Callable[[], list[ProxyInfo] | None] = lambda: None) -> None:
        self.home, self.service, self.mesh = home, service, mesh
        self.events: deque[dict[str, Any]] = deque(maxlen=TAP_KEPT)
        self.error = ""
        self.asked = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"tap-{service}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set() and time.monotonic() - self.asked < TAP_IDLE_S:
            try:
                proxies = select(self.home, self.service, None, self.mesh())
                self.error = ""
                # In spans of TAP_SPAN_S: a span's end is where a stop or an idle page is
                # noticed when no request comes (the proxies ping every 15 s).
                for e in follow(proxies, TapFilter(), duration_s=TAP_SPAN_S):
                    self.events.append(e)
                    if self.stop.is_set():
                        return
            except ObserveError as exc:
                self.error = str(exc)
                self.stop.wait(2.0)

    def read(self, path: str, status: str) -> list[dict[str, Any]]:
        self.asked = time.monotonic()
        return filter_requests(list(self.events), path, status)


class Dashboard:
    def __init__(self, home: Path, token: str | None, scrape_s: float = SCRAPE_S,
                 prometheus: str | None = None, registry: RegistryClient | None = None) -> None:
        self.home, self.token, self.scrape_s = home, token, scrape_s
        self.registry = registry  # another host's: the mesh's proxies through its relay
        self.prometheus = prometheus  # history from there (PromQL) instead of our scrapes
        self.scrapes: deque[tuple[float, Scrape]] = deque()
        self.ejected: dict[str, list[str]] = {}  # address:port -> the callers ejecting it
        self.tap: Tap | None = None

    def mesh(self) -> list[ProxyInfo] | None:
        """Every proxy of the mesh through the registry, or None: this host's (as the
        commands' `remote`)."""
        return None if self.registry is None else remote_proxies(self.registry)

    def proxies(self) -> list[ProxyInfo]:
        found = self.mesh()
        return local_proxies(self.home) if found is None else found

    async def collect(self) -> None:
        """Scrape every `scrape_s`, keeping the longest window's worth."""
        while True:
            try:
                s, self.ejected = await asyncio.to_thread(
                    lambda: scrape_all(self.proxies()))
                now = time.monotonic()
                self.scrapes.append((now, s))
                while self.scrapes and self.scrapes[0][0] < now - max(WINDOWS_S) - self.scrape_s:
                    self.scrapes.popleft()
            except ObserveError as exc:
                log.warning("no scrape: %s", exc)  # the registry is away: try again
            except Exception:  # a bad scrape must not end the dashboard
                log.exception("scrape failed")
            await asyncio.sleep(self.scrape_s)

    def graph(self, window_s: float) -> dict[str, Any]:
        if len(self.scrapes) < 2:
            return {"nodes": [], "edges": [], "window_s": window_s, "interval_s": 0.0}
        newest_t, newest = self.scrapes[-1]
        oldest_t, oldest = next(((t, s) for t, s in self.scrapes if t >= newest_t - window_s),
                                self.scrapes[0])
        if oldest_t == newest_t:
            oldest_t, oldest = self.scrapes[-2]
        out = graph(oldest, newest, newest_t - oldest_t)
        out.update(window_s=window_s, interval_s=round(newest_t - oldest_t, 3))
        return out

    # -- HTTP ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.add_routes([web.get("/", self._index), web.get("/api/graph", self._graph),
                        web.get("/static/{name:.+}", self._static),
                        web.get("/api/canaries", self._canaries),
                        web.get("/api/config", self._config),
                        web.get("/api/service", self._service),
                        web.get("/api/tap", self._tap),
                        web.get("/favicon.ico", _no_content)])
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token is None:
            return await handler(request)  # type: ignore[no-any-return]
        given = request.query.get("token") or request.cookies.get(COOKIE) or \
            request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            return web.Response(status=401, text="the dashboard needs the operator credential: "
                                "open it with ?token=<MESH_HOME/registry/operator.token>\n")
        if "token" in request.query:  # once: then a cookie, and the token leaves the URL
            resp = web.HTTPFound(request.rel_url.path)
            resp.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
            raise resp
        return await handler(request)  # type: ignore[no-any-return]

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=_read("index.html"), content_type="text/html",
                            headers=_SECURITY)

    async def _graph(self, request: web.Request) -> web.Response:
        try:
            window = int(request.query.get("window", "60"))
        except ValueError:
            window = 0
        if window not in WINDOWS_S:
            return web.json_response({"error": f"window must be one of {WINDOWS_S} seconds"},
                                     status=400)
        if self.prometheus:
            try:
                increases = await asyncio.to_thread(fetch, self.prometheus, window)
            except PrometheusError as exc:
                return web.json_response({"nodes": [], "edges": [], "window_s": window,
                                          "interval_s": 0.0, "error": str(exc)},
                                         status=502, headers=_SECURITY)
            g = graph({}, increases, float(window))
            g.update(window_s=window, interval_s=float(window), source=self.prometheus)
        else:
            g = self.graph(window)
        if self.ejected:
            catalog = await self._registry("/v1/catalog")
            mark_ejected(g, catalog.get("endpoints", []), self.ejected)
        return web.json_response(g, headers=_SECURITY)

    async def _canaries(self, request: web.Request) -> web.Response:
        """The registry's canaries (GET /v1/canaries, as the operator), or why there are none."""
        data = await self._registry("/v1/canaries")
        return web.json_response({"canaries": data.get("canaries", []), **data},
                                 headers=_SECURITY)

    async def _config(self, request: web.Request) -> web.Response:
        """The config version in force and the last rejected change, with its positions:
        `by_service` the errors a service's panel shows, `unattributed` the mesh-wide ones."""
        data = await self._registry("/v1/status")
        keys = ("config_version", "config_digest", "last_config_error", "error")
        out: dict[str, Any] = {k: data.get(k) for k in keys}
        rejected = data.get("last_config_error")
        if isinstance(rejected, dict):
            config = await self._registry("/v1/config")
            out["by_service"], out["unattributed"] = attribute_errors(
                rejected.get("errors", []), config.get("config") or {})
        return web.json_response(out, headers=_SECURITY)

    async def _service(self, request: web.Request) -> web.Response:
        """One service's panel: endpoints, proxies, the route as `meshctl why` explains it
        for `from` (default: the service itself) at `path`, the last rejected change."""
        name = request.query.get("name", "")
        status = await self._registry("/v1/status")
        config = await self._registry("/v1/config")
        if "error" in status or "error" in config:
            return web.json_response({"error": status.get("error") or config.get("error")},
                                     status=502, headers=_SECURITY)
        mesh = MeshConfig.from_wire(config["config"])
        if mesh.service(name) is None:
            return web.json_response({"error": f"`{name}` is not a service in mesh.yaml",
                                      "services": sorted(s.name for s in mesh.services)},
                                     status=404, headers=_SECURITY)
        panel = service_panel(name, status, config["config"], self.ejected,
                              request.query.get("from") or None,
                              request.query.get("path") or "/")
        return web.json_response(panel, headers=_SECURITY)

    async def _tap(self, request: web.Request) -> web.Response:
        """The live requests of `service`, filtered by path prefix and status (polled)."""
        name = request.query.get("service", "")
        if not name:
            return web.json_response({"error": "?service= is required"}, status=400,
                                     headers=_SECURITY)
        if self.tap is None or self.tap.service != name or not self.tap.thread.is_alive():
            if self.tap is not None:
                self.tap.stop.set()
            self.tap = Tap(self.home, name, self.mesh)
        try:
            shown = self.tap.read(request.query.get("path", ""), request.query.get("status", ""))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400, headers=_SECURITY)
        return web.json_response({"service": name, "requests": shown, "error": self.tap.error,
                                  "kept": len(self.tap.events)}, headers=_SECURITY)

    async def _registry(self, path: str) -> dict[str, Any]:
        try:
            client = self.registry or RegistryClient.from_home(self.home)
            data = await asyncio.to_thread(client.call, "GET", path, None, 5.0)
        except (RegistryUnavailable, RegistryError, OSError) as exc:
            return {"error": str(exc)}
        return data if isinstance(data, dict) else {"error": f"{path}: not a JSON object"}

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.Response(text=_read(name), content_type=_STATIC[name], headers=_SECURITY)


_SECURITY = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
             "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'"}


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


def _read(name: str) -> str:
    return (resources.files("meshctl.dashboard") / "static" / name).read_text("utf-8")
