"""The registry process: config watcher, CA, catalog and API assembled in one place."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from common import sdnotify
from common.aio import cancel, spawn
from common.state import atomic_write, ensure_dir
from registry.ca import CaError, SpiffeId
from registry.canary import api as canary_api
from registry.canary.runner import Runner, scrape_service
from registry.config import LoadResult, load_directory
from registry.paths import DEFAULT_MONITOR_PORT, DEFAULT_PORT, RegistryPaths, read_operator_token
from registry.server import watcher
from registry.server.addresses import WILDCARDS, join_urls, serving_addresses
from registry.server.api import build_app
from registry.server.auth import caller_of
from registry.server.catalog import ENDPOINT_TTL_S
from registry.server.metrics import render_metrics
from registry.server.snapshots import Notifier, Snapshot, SnapshotStore
from registry.server.statefiles import StateFiles
from registry.store import StoreSpec
from registry.store.backend import StateBackend
from registry.store.cluster import EtcdState
from registry.store.etcd import EtcdError
from registry.store.files import FileState

log = logging.getLogger("meshctl.registry")
REGISTRY_NAMESPACE = "meshctl-system"
STOP_GRACE_S = 1.0  # on SIGTERM, how long in-flight short calls get once streams are closed


CATCH_UP_S = 1.0  # a new publisher loads the directory again once its watch is in place


class StartupError(Exception):
    """The registry cannot start; the message says why and what to do."""


class Registry:
    """One mesh's control plane. `start()` binds; `serve_forever()` runs until cancelled."""

    def __init__(
        self,
        config_dir: Path,
        home: Path,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        monitor_port: int = DEFAULT_MONITOR_PORT,
        extra_sans: tuple[str, ...] = (),
        quiet_ms: int = watcher.DEBOUNCE_QUIET_MS,
        endpoint_ttl_s: float = ENDPOINT_TTL_S,
        store: StoreSpec | None = None,
    ) -> None:
        self.config_dir = config_dir.resolve()
        self.paths = RegistryPaths(home / "registry")
        self.home = home  # MESH_HOME: the proxies of this host are under it (canary metrics)
        self.host, self.port, self.monitor_port = host, port, monitor_port
        self.extra_sans = extra_sans
        self.quiet_ms = quiet_ms
        self.endpoint_ttl_s = endpoint_ttl_s
        self.notifier = Notifier()
        self.metrics: Counter[str] = Counter()
        self.started_at = time.time()
        self._runners: list[web.AppRunner] = []
        self.streams: set[asyncio.Task[Any]] = set()  # open /v1/stream handlers: closed on stop
        self._tasks: list[asyncio.Task[Any]] = []
        self._view: tuple[int, int, bytes] | None = None
        self.state_files = StateFiles()
        self.store_spec = store
        self.backend: StateBackend = (
            FileState(self.paths, self.state_files) if store is None
            else EtcdState(store)
        )  # fmt: skip
        self._watching: asyncio.Task[Any] | None = None  # these two: while publishing
        self._canaries: asyncio.Task[Any] | None = None
        self.proxies = self.backend.proxies()

    # -- config --------------------------------------------------------------------------

    def on_load(self, result: LoadResult) -> None:
        """Publish a valid directory as the next snapshot; reject an invalid one whole."""
        if not result.ok or result.config is None:
            errors = tuple(str(e) for e in result.errors)
            self._reject(errors)
            log.error(
                "config rejected, version %s stays in force:\n  %s",
                self.store.current.version if self.store.current else "none",
                "\n  ".join(errors),
            )
            return
        cfg = result.config
        if cfg.trust_domain != self.ca.trust_domain:
            self._reject(
                (
                    f"mesh.yaml: trustDomain: cannot change from "
                    f"`{self.ca.trust_domain}` to `{cfg.trust_domain}` while the "
                    f"mesh runs: the CA is bound to it (run `meshctl down` and "
                    f"remove {self.paths.ca_dir} to start a new mesh)",
                )
            )
            log.error("config rejected: %s", self.store.last_rejection)
            return
        if self.backend.leading:
            self.backend.submit(self.store, cfg)

    def _reject(self, errors: tuple[str, ...]) -> None:
        self.store.reject(errors)
        if self.backend.leading and self.store.last_rejection is not None:
            self.backend.rejected(self.store.last_rejection)

    # -- the store's calls (registry/store/backend.Replica) ------------------------------

    def lead(self, *, reload: bool) -> None:
        """Publish from now on: watch the config directory (and load it now if asked), and
        run the canaries, which edit it (registry/canary/)."""
        if self._watching is None or self._watching.done():
            self._watching = spawn(self._watch(reload), name="watch")
        if self._canaries is None or self._canaries.done():
            self.canary.load()  # after the watcher starts: a resumed canary's edits get published
            self._canaries = spawn(self.canary.run(), name="canary")

    async def _watch(self, reload: bool) -> None:
        if reload:  # the files may have changed while another replica published
            self.on_load(load_directory(self.config_dir))
            # watchfiles sets up inotify in its thread, a moment after the task starts: an
            # edit made in that moment is found by loading once more when it is in place.
            asyncio.get_running_loop().call_later(CATCH_UP_S, self._catch_up)
        await watcher.watch(self.config_dir, self.on_load, quiet_ms=self.quiet_ms)

    def _catch_up(self) -> None:
        if self._watching is not None and not self._watching.done():  # still publishing
            self.on_load(load_directory(self.config_dir))

    def unlead(self) -> None:
        for task in (self._watching, self._canaries):
            if task is not None:
                task.cancel()
        self._watching = self._canaries = None

    def _canaries_elsewhere(self) -> str | None:
        """Why canary calls go to another replica, or None: this one runs them."""
        if self.backend.leading:
            return None
        rs = self.backend.status() or {}
        where = [r.get("url") for r in rs.get("replicas", []) if r.get("id") == rs.get("publisher")]
        return ("canaries run on the registry replica that publishes config, "
                f"{where[0] if where else 'none elected just now'}: call that one (docs/etcd.md)")

    def adopt(self, snap: Snapshot) -> None:
        self.store.adopt(snap)

    def whoami(self) -> tuple[str, str]:
        return f"{socket.gethostname()}:{self.port}", f"https://{_url_host(self.host)}:{self.port}"

    def cert_ttl_s(self) -> float:
        snap = self.store.current
        return snap.config.certificate_ttl_s if snap else 24 * 3600.0

    def identity_for(self, service: str) -> SpiffeId:
        snap = self.store.current
        if snap is None:
            raise ValueError("no valid config loaded yet")
        # A gateway proxy (proxy/gateway) joins as the workload its Gateways select: the
        # `istio` or `app` label value of a selector (`istio: ingressgateway`).
        gateways = {v for g in snap.config.gateways for k, v in g.selector
                    if k in ("istio", "app")}
        if snap.config.service(service) is None and service not in gateways:
            known = ", ".join(s.name for s in snap.config.services) or "none"
            gws = f"; Gateways select: {', '.join(sorted(gateways))}" if gateways else ""
            raise ValueError(f"unknown service `{service}` (mesh.yaml has: {known}{gws})")
        return SpiffeId.for_service(snap.config.trust_domain, snap.config.namespace, service)

    def view_line(self) -> bytes:
        """The stream line for the current (config, catalog) pair, rendered once per pair."""
        snap = self.store.current
        assert snap is not None
        key = (snap.version, self.catalog.version)
        if self._view is None or self._view[:2] != key:
            line = (
                b'{"type":"view","epoch":"%s","config_version":%d,"catalog_version":%d,'
                b'"config":%s,"endpoints":%s}\n'
                % (
                    self.epoch.encode(),
                    snap.version,
                    self.catalog.version,
                    snap.wire,
                    self.catalog.wire(),
                )
            )
            self._view = (key[0], key[1], line)
        return self._view[2]

    def status(self) -> dict[str, Any]:
        snap = self.store.current
        rej = self.store.last_rejection
        return {
            "epoch": self.epoch,
            "config_version": snap.version if snap else 0,
            "config_digest": snap.config.digest if snap else "",
            "catalog_version": self.catalog.version,
            "trust_domain": self.ca.trust_domain,
            "last_config_error": {"at": rej.at, "errors": list(rej.errors)} if rej else None,
            "proxies": [
                {
                    "proxy_id": p.proxy_id,
                    "identity": p.identity,
                    "service": p.service,
                    "acked_version": p.acked_version,
                    "nacked_version": p.nacked_version,
                    "nack_error": p.nack_error,
                    "cert_not_after": p.cert_not_after,
                    "connected": p.streams > 0,
                    "last_seen": p.last_seen,
                }
                for p in self.proxies.all()
            ] + self.proxies.elsewhere(),  # connected to other replicas, each with `replica`
            "endpoints": [e.to_wire() for e in self.catalog.endpoints()],
            "replicas": self.backend.status(),
        }

    # -- lifecycle -----------------------------------------------------------------------

    def _server_ssl(self) -> ssl.SSLContext:
        # Every address a proxy may dial: with --listen 0.0.0.0, each local one (addresses.py).
        served = serving_addresses(self.host)
        sans = {"localhost", "127.0.0.1", *served, *self.extra_sans} - WILDCARDS
        ips = [s for s in sans if _is_ip(s)]
        names = [s for s in sans if not _is_ip(s)]
        ident = SpiffeId.for_service(self.ca.trust_domain, REGISTRY_NAMESPACE, "registry")
        cert, key = self.ca.issue_server_cert(ident, sorted(names), sorted(ips), 30 * 86400)
        atomic_write(self.paths.server_cert, cert, mode=0o644)
        atomic_write(self.paths.server_key, key, mode=0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.paths.server_cert, self.paths.server_key)
        # Optional: join has no certificate yet; every other endpoint demands one (or the
        # operator credential) in auth.caller_of.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cadata=self.ca.bundle_pem.decode())
        return ctx

    async def start(self) -> None:
        result = load_directory(self.config_dir)
        try:
            opened = await self.backend.open()
        except EtcdError as exc:
            await self.backend.close()
            raise StartupError(f"state store: {exc}") from None  # and nothing written here
        ensure_dir(self.paths.root)
        self.epoch, restored = opened.epoch, opened.restored
        self.store = SnapshotStore(self.notifier, opened.last_version)
        if result.config is None:
            errors = "\n  ".join(str(e) for e in result.errors)
            if restored is None:
                raise StartupError(
                    f"config in {self.config_dir} is invalid:\n  {errors}\n"
                    f"fix it (`meshctl validate {self.config_dir}`) and start again"
                )
            log.error(
                "config invalid; serving the last good snapshot (version %d):\n  %s",
                restored.version,
                errors,
            )
        trust_domain = (result.config or restored.config).trust_domain  # type: ignore[union-attr]
        try:
            self.ca = await self.backend.authority(self.paths.ca_dir, trust_domain)
        except (CaError, EtcdError) as exc:
            await self.backend.close()
            raise StartupError(f"certificate authority: {exc}") from None
        self.tokens = self.backend.tokens()
        if not self.paths.operator_token.exists():
            atomic_write(self.paths.operator_token, secrets.token_urlsafe(32) + "\n", mode=0o600)
        self.operator_token = read_operator_token(self.paths)
        self.catalog = self.backend.catalog(self.endpoint_ttl_s)
        self.catalog.on_change(self.notifier.notify)
        self.canary = Runner(self.paths.root / "canaries.json", self.config_dir,
                             lambda: self.store.current.config if self.store.current else None,
                             self.catalog.endpoints,
                             lambda service: scrape_service(self.home, service))
        if restored is not None:
            self.store.restore(restored)
        self.on_load(result)  # etcd: only once elected (the store calls lead())

        # handler_cancellation: a proxy that goes away ends its stream handler at once, so
        # /v1/status stops showing it connected (otherwise only the next ping would notice).
        # shutdown_timeout: what is left once the streams are closed (stop()) is short
        # calls; systemd's TimeoutStopSec in the unit is above it.
        app = build_app(self)
        canary_api.add_routes(
            app, self.canary, lambda r: caller_of(r, self.ca, self.operator_token).operator,
            self._canaries_elsewhere)
        api = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=STOP_GRACE_S,
        )
        await api.setup()
        site = web.TCPSite(
            api, self.host, self.port, ssl_context=self._server_ssl(), reuse_address=True
        )
        await site.start()
        self.port = _bound_port(site, self.port)  # --port 0: the port the kernel chose
        self._runners.append(api)
        mon = web.Application()
        mon.add_routes([web.get("/metrics", self._metrics), web.get("/healthz/ready", self._ready)])
        mon_runner = web.AppRunner(mon, access_log=None, handle_signals=False)
        await mon_runner.setup()
        mon_site = web.TCPSite(mon_runner, "127.0.0.1", self.monitor_port, reuse_address=True)
        await mon_site.start()
        self.monitor_port = _bound_port(mon_site, self.monitor_port)
        self._runners.append(mon_runner)
        atomic_write(
            self.paths.endpoint,
            json.dumps(
                {
                    "url": f"https://{_url_host(self.host)}:{self.port}",
                    "monitor": f"http://127.0.0.1:{self.monitor_port}",
                    "pid": os.getpid(),
                    "config_dir": str(self.config_dir),
                }
            ),
            mode=0o644,
        )
        await self.backend.begin(self, self.store)  # files: lead(); etcd: campaign, follow
        self._tasks.append(spawn(self._expire_loop(), name="expire"))
        log.info(
            "registry listening on https://%s:%d (monitor 127.0.0.1:%d), config %s",
            self.host,
            self.port,
            self.monitor_port,
            self.config_dir,
        )

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self.endpoint_ttl_s / 3)
            gone = self.catalog.expire(self.endpoint_ttl_s)
            if gone:
                log.info("endpoints expired (no heartbeat): %s", ", ".join(gone))
            if forgotten := self.proxies.expire(self.endpoint_ttl_s):
                log.info("%d proxies forgotten (no stream, no report)", len(forgotten))
            await self.tokens.purge_expired()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            text=render_metrics(self),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    async def _ready(self, request: web.Request) -> web.Response:
        ok = self.store.current is not None
        return web.Response(status=200 if ok else 503, text="ready\n" if ok else "no config\n")

    def join_urls(self) -> list[str]:
        """Where a joiner may reach this registry, in the order to try."""
        return join_urls(self.host, self.port, self.extra_sans)

    def registry_urls(self) -> list[str]:
        """This replica's URLs, then every other live replica's (etcd): what join strings
        and proxies' streams carry, so that a proxy moves on when its replica dies."""
        urls = self.join_urls()
        for r in (self.backend.status() or {}).get("replicas", []):
            urls += [u for u in r.get("urls", [r.get("url")])
                     if isinstance(u, str) and u not in urls]  # fmt: skip
        return urls

    async def stop(self) -> None:
        # Close the config streams first: each is a request that never ends, and aiohttp's
        # shutdown would otherwise wait out its timeout for them (~120 s with proxies
        # connected). A proxy sees its stream end and reconnects to the next registry.
        for t in list(self.streams):
            t.cancel()
        await asyncio.gather(*self.streams, return_exceptions=True)
        leading = [t for t in (self._watching, self._canaries) if t is not None]
        self.unlead()
        await cancel(leading)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for r in self._runners:
            await r.cleanup()
        await self.backend.close()
        with contextlib.suppress(FileNotFoundError):
            if json.loads(self.paths.endpoint.read_text()).get("pid") == os.getpid():
                self.paths.endpoint.unlink()


def _is_ip(s: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def _bound_port(site: web.TCPSite, asked: int) -> int:
    server = site._server  # aiohttp keeps the asyncio.Server here; no public accessor
    sockets = getattr(server, "sockets", None) or ()
    return int(sockets[0].getsockname()[1]) if sockets else asked


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def run(config_dir: Path, home: Path, **kwargs: Any) -> None:
    """Run a registry until cancelled or SIGTERM (systemd's stop, `kill`): a clean stop."""
    reg = Registry(config_dir, home, **kwargs)
    await reg.start()
    # Listening: a Type=notify unit is started now, so `systemctl enable --now` returns
    # when `meshctl token create` can reach it.
    with contextlib.suppress(OSError):
        sdnotify.notify("READY=1")
    stopping = asyncio.Event()
    with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
        # Only possible in the main thread; elsewhere the caller cancels us instead.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    try:
        await stopping.wait()
    finally:
        await reg.stop()
