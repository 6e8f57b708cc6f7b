"""Registry client: join with a token, renew at half-life, follow the config stream, heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.aio import spawn
from common.keepalive import keep_alive
from proxy.control.keygen import new_key_and_csr
from proxy.httpio import Client, HttpError, Stream
from proxy.identity import Identity

log = logging.getLogger("meshctl.proxy.control")
HEARTBEAT_S = 10.0
# The registry writes a ping line every 5 s (registry/server/api.py STREAM_PING_S): three
# missed pings and the stream is taken for dead and opened again, resuming at the version
# this proxy runs. TCP keepalive (common/keepalive.py) catches a dead peer on both sides too.
STREAM_SILENCE_S = 15.0
ACK_ERROR_MAX = 2000  # the registry keeps this much of a NACK's error
ADMIN_REPLY_MAX = 4 * 1024 * 1024  # a relayed admin page (config_dump of a large mesh)
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 5.0
REUSE_MIN_S = 60.0  # a kept SVID with less left than this is not reused: the token joins


class JoinError(Exception):
    """The registry refused to join this proxy; the message says why."""


@dataclass(frozen=True, slots=True)
class View:
    """One line of the config stream: the config and the catalog, each with its version."""

    epoch: str
    config_version: int
    catalog_version: int
    config: dict[str, Any]
    endpoints: list[dict[str, Any]]


# The proxy's callback: apply a view, return None when accepted or the error (NACK).
ApplyView = Callable[[View], str | None]


def _registry_ctx(bundle: Path | bytes, identity: Identity | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(
        cadata=bundle.decode() if isinstance(bundle, bytes) else None,
        cafile=str(bundle) if isinstance(bundle, Path) else None,
    )
    if identity is not None:
        files = identity_files(identity)
        ctx.load_cert_chain(files[0], files[1])
    return ctx


async def _send_acks(stream: Stream, acks: asyncio.Queue[bytes]) -> None:
    """The body of POST /v1/stream: ACK lines as the proxy produces them, for ever."""
    while True:
        await stream.send(await acks.get())


async def _send_lines(up: Stream, lines: AsyncIterator[bytes]) -> None:
    try:
        async for line in lines:
            await up.send(line)
    finally:
        if isinstance(lines, AsyncGenerator):
            await lines.aclose()  # this proxy's tap stops at once


async def _drain(up: Stream) -> None:
    async for _ in up.lines(read_timeout=None):
        pass  # the registry's answer says nothing: its end is the stop


_FILES: dict[int, tuple[Path, Path]] = {}


def identity_files(identity: Identity) -> tuple[Path, Path]:
    return _FILES[id(identity)]


class ControlClient:
    """Everything the proxy says to and hears from the registry. Survives registry outages:
    the proxy keeps its last view and certificate, and this client reconnects with backoff."""

    def __init__(self, url: str, ca_file: Path, files_dir: Path, proxy_id: str) -> None:
        self.url = url.rstrip("/")
        # Every registry replica's URLs (docs/etcd.md), as the stream tells them: when a
        # stream ends, the next attempt goes to the next one, resuming at this proxy's
        # version (replicas share the epoch, the versions and the CA: no re-join).
        self.urls: tuple[str, ...] = (self.url,)
        self.ca_file = ca_file
        self.files_dir = files_dir
        self.proxy_id = proxy_id
        self.identity: Identity | None = None
        self.connected = False
        self.epoch = ""
        self.config_version = 0
        self.catalog_version = -1
        self.last_contact = 0.0
        self.renewals = 0
        self.renew_failures = 0
        self.acked_version = 0  # the last version whose ACK the registry answered
        self._on_identity: list[Callable[[Identity], None]] = []
        self._on_ack: list[Callable[[int, bool], None]] = []
        # An operator's read of this proxy's admin or metrics page, relayed by the registry
        # (`meshctl proxy-config`/`stat` from another host): path -> (status, body).
        self.admin_get: Callable[[str], Awaitable[tuple[int, str]]] | None = None
        # An operator's tap of this proxy, relayed the same way (`meshctl tap` from another
        # host): /tap's filters -> this proxy's tap lines (proxy.admin.relayed_tap).
        self.admin_tap: Callable[[dict[str, str]], AsyncIterator[bytes]] | None = None
        self._duplex = True  # ACKs on the stream, until a registry says it cannot
        self._acks: asyncio.Queue[bytes] | None = None  # the open stream's ACK lines
        self._client: Client | None = None
        self._client_key = 0

    def on_identity(self, fn: Callable[[Identity], None]) -> None:
        self._on_identity.append(fn)

    def on_ack(self, fn: Callable[[int, bool], None]) -> None:
        """Call `fn(version, ok)` each time the registry has recorded an ACK (or NACK)."""
        self._on_ack.append(fn)

    def _set_identity(self, ident: Identity) -> None:
        _FILES[id(ident)] = (self.files_dir / "svid.crt", self.files_dir / "svid.key")
        self.identity = ident
        for fn in self._on_identity:
            fn(ident)

    def _new_client(self) -> Client:
        return Client(self.url, _registry_ctx(self.ca_file, self.identity), connect_timeout=5)

    def _session(self) -> Client:
        """The kept-alive connection for short calls (ACKs, heartbeats): one TLS handshake,
        not one per call. Rebuilt when the certificate changes."""
        key = id(self.identity)
        if self._client is None or self._client_key != key:
            if self._client is not None:
                spawn(self._client.close())
            self._client, self._client_key = self._new_client(), key
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def _post(
        self, path: str, body: dict[str, Any], method: str = "POST", timeout: float = 10.0
    ) -> tuple[int, dict[str, Any]]:
        r = await self._session().request(method, path, json_body=body, timeout=timeout)
        try:
            data = r.json()
        except ValueError:
            data = {"error": r.text()[:500]}
        return r.status, data if isinstance(data, dict) else {}

    async def join(self, token: str) -> Identity:
        key = self.files_dir / "svid.key.new"
        # The CSR carries only the key: the identity comes from the token, not from the CSR.
        csr = await new_key_and_csr(key, "spiffe://join.invalid/pending")
        status, data = await self._post("/v1/join", {"token": token, "csr": csr.decode()})
        if status != 200:
            raise JoinError(
                f"registry {self.url} refused to join (HTTP {status}): {data.get('error', data)}"
            )
        ident = Identity.build(
            key, data["certificate"].encode(), data["bundle"].encode(), self.files_dir
        )
        self.epoch = str(data.get("epoch", ""))
        self._set_identity(ident)
        log.info("joined as %s (certificate until %s)", ident.spiffe_id, ident.not_after)
        return ident

    async def resume_or_join(self, token: str, service: str) -> Identity:
        """Reuse the SVID a previous run kept in `files_dir`, renewed at once over mTLS; the
        one-time token is only for the first join, or once that SVID expired or is refused.
        So a restart (crash, `systemctl restart`, reboot) needs no new token."""
        cached = self._cached(service)
        if cached is None:
            return await self.join(token)
        self._set_identity(cached)
        try:
            return await self.renew()
        except (OSError, TimeoutError) as exc:
            # A registry that does not trust the certificate (the mesh was made again, with
            # another CA) ends the TLS 1.3 handshake after it seems done: the client sees a
            # closed connection, as it would a registry going down. Tell them apart by
            # asking again without the certificate.
            if not await self._answers_without_certificate():
                # The registry is down: the proxy serves with the certificate it has (still
                # valid), and renew_loop keeps trying, as after any failed renewal.
                log.warning("registry unreachable (%s): using the certificate kept from the "
                            "last run (valid until %s)", exc, cached.not_after)
                return cached
            refused: Exception = exc
        except JoinError as exc:
            refused = exc
        log.warning("the kept certificate was refused (%s): joining with the token", refused)
        self.identity = None  # the join's TLS presents no certificate
        try:
            return await self.join(token)
        except JoinError as exc:
            raise JoinError(f"{exc}; and the certificate kept in {self.files_dir} was "
                            f"refused: {refused}") from None

    async def _answers_without_certificate(self) -> bool:
        client = Client(self.url, _registry_ctx(self.ca_file, None), connect_timeout=5)
        try:
            r = await client.request("GET", "/healthz", timeout=5)
            return r.status == 200
        except (OSError, TimeoutError):
            return False
        finally:
            await client.close()

    def _cached(self, service: str) -> Identity | None:
        """The kept SVID if it is this service's and valid for another minute, else None."""
        if not (self.files_dir / "svid.crt").exists():
            return None
        try:
            ident = Identity.load(self.files_dir)
        except (OSError, ValueError) as exc:
            log.warning("the certificate kept in %s is unusable (%s): joining with the token",
                        self.files_dir, exc)
            return None
        if ident.spiffe_id.service_account != service:
            log.warning("the certificate kept in %s is %s's, not %s's: joining with the token",
                        self.files_dir, ident.spiffe_id, service)
            return None
        if ident.lifetime_left() < REUSE_MIN_S:
            log.info("the certificate kept in %s expired at %s: joining with the token",
                     self.files_dir, ident.not_after)
            return None
        return ident

    async def renew(self) -> Identity:
        assert self.identity is not None
        key = self.files_dir / "svid.key.new"
        csr = await new_key_and_csr(key, str(self.identity.spiffe_id))
        status, data = await self._post("/v1/renew", {"csr": csr.decode()})
        if status != 200:
            raise JoinError(f"renewal refused (HTTP {status}): {data.get('error', data)}")
        ident = Identity.build(
            key, data["certificate"].encode(), data["bundle"].encode(), self.files_dir
        )
        self.renewals += 1
        self._set_identity(ident)
        log.info("renewed certificate (until %s)", ident.not_after)
        return ident

    async def renew_loop(self) -> None:
        """Renew at about half the lifetime (Istio's default), retrying with backoff on failure."""
        backoff = BACKOFF_MIN_S
        while True:
            assert self.identity is not None
            total = self.identity.lifetime_left()
            wait = max(1.0, total / 2 * random.uniform(0.9, 1.0))
            await asyncio.sleep(wait if backoff == BACKOFF_MIN_S else backoff)
            try:
                await self.renew()
                backoff = BACKOFF_MIN_S
            except (OSError, JoinError, TimeoutError) as exc:
                self.renew_failures += 1
                backoff = min(BACKOFF_MAX_S * 6, backoff * 2)
                log.warning("certificate renewal failed (%s); retrying in %.1fs", exc, backoff)

    async def stream_loop(self, apply: ApplyView) -> None:
        """Follow the registry's config stream forever; apply each view and ACK or NACK it."""
        backoff = BACKOFF_MIN_S
        while True:
            try:
                await self._stream_once(apply)
                backoff = BACKOFF_MIN_S
            except (OSError, TimeoutError, ValueError) as exc:
                if self.connected:
                    log.warning(
                        "registry stream lost (%s): serving on config version %d",
                        exc,
                        self.config_version,
                    )
            self.connected = False
            self._next_registry()
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _stream_once(self, apply: ApplyView) -> None:
        params = {
            "proxy_id": self.proxy_id,
            "config": str(self.config_version),
            "catalog": str(self.catalog_version),
            "epoch": self.epoch,
        }
        if self.identity is not None:
            # So that a restarted registry knows at once what this proxy runs and until
            # when its certificate lasts, without waiting for the next view's ACK.
            params["cert_not_after"] = str(self.identity.not_after.timestamp())
        # ACKs go back over the stream's own connection (POST /v1/stream, full duplex): a
        # line each way instead of an HTTP request per view. A registry that predates it
        # answers 405; then the stream is a GET and each ACK a POST /v1/ack, as before.
        acks: asyncio.Queue[bytes] | None = asyncio.Queue() if self._duplex else None
        client = self._new_client()
        async with await client.open_stream(
            "GET" if acks is None else "POST", "/v1/stream", query=params, duplex=acks is not None
        ) as r:
            if acks is not None and r.status in (404, 405):
                self._duplex = False
                log.info("registry %s takes no ACKs on the stream (HTTP %d): using POST /v1/ack",
                         self.url, r.status)
                return
            if r.status != 200:
                text = (await r.read(500)).decode("utf-8", "replace")
                raise HttpError(f"stream refused: HTTP {r.status} {text}")
            keep_alive(r.socket())
            self.connected = True
            self._acks = acks
            sender = spawn(_send_acks(r, acks), name="acks") if acks is not None else None
            try:
                async for raw in r.lines(read_timeout=STREAM_SILENCE_S):
                    if sender is not None and sender.done():
                        sender.result()  # the ACK half failed: raise its error
                    self.last_contact = time.time()
                    if not raw.strip():
                        continue
                    msg = json.loads(raw)
                    kind = msg.get("type")
                    if kind == "ack":
                        self._ack_answered(int(msg["config_version"]), bool(msg.get("ok")))
                    elif kind == "error":
                        log.warning("registry refused an ACK: %s", msg.get("error"))
                    elif kind == "admin":
                        spawn(self._admin_reply(msg), name="admin relay")
                    elif kind == "tap":
                        spawn(self._tap_reply(msg), name="tap relay")
                    elif kind == "registries":
                        self._learn_registries(msg.get("urls"))
                    if kind != "view":
                        continue
                    view = View(
                        epoch=msg["epoch"],
                        config_version=msg["config_version"],
                        catalog_version=msg["catalog_version"],
                        config=msg["config"],
                        endpoints=msg["endpoints"],
                    )
                    error = apply(view)
                    self.epoch = view.epoch
                    self.catalog_version = view.catalog_version
                    if error is None:
                        self.config_version = view.config_version
                    await self._ack(view.config_version, error)
            finally:
                self._acks = None
                if sender is not None:
                    sender.cancel()
                    await asyncio.gather(sender, return_exceptions=True)

    def _learn_registries(self, urls: object) -> None:
        if not (isinstance(urls, list) and urls
                and all(isinstance(u, str) and u.startswith("https://") for u in urls)):
            log.warning("registry sent a registries line without https URLs: ignored")
            return
        known = tuple(u.rstrip("/") for u in urls)
        self.urls = known if self.url in known else (self.url, *known)

    def _next_registry(self) -> None:
        """After a stream ends: the next replica's URL (the same one if it is the only)."""
        if len(self.urls) < 2:
            return
        at = self.urls.index(self.url) if self.url in self.urls else -1
        self.url = self.urls[(at + 1) % len(self.urls)]
        if self._client is not None:  # short calls go to the new one too
            spawn(self._client.close())
            self._client = None
        log.info("trying registry replica %s", self.url)

    async def _admin_reply(self, msg: dict[str, Any]) -> None:
        """Answer a relayed read (the registry allows only read-only pages) with POST
        /v1/admin-reply; the registry matches it to the stream it sent the request on."""
        path = str(msg.get("path", ""))
        try:
            if self.admin_get is None:
                raise OSError("this proxy serves no admin page")
            status, text = await self.admin_get(path)
        except (OSError, TimeoutError, ValueError) as exc:
            status, text = 502, f"proxy {self.proxy_id}: {exc}"
        body = {"proxy_id": self.proxy_id, "request": msg.get("request"), "status": status,
                "body": text[:ADMIN_REPLY_MAX]}  # fmt: skip
        with contextlib.suppress(OSError, TimeoutError):
            await self._post("/v1/admin-reply", body)

    async def _tap_reply(self, msg: dict[str, Any]) -> None:
        """Relay a tap: this proxy's tap lines as the body of POST /v1/tap-reply (mTLS, a
        connection of its own) until the registry ends its answer (the operator left, the
        tap's time is up) or this proxy's tap ends (refused)."""
        n, query = msg.get("request"), msg.get("query")
        if self.admin_tap is None or not isinstance(n, int) or not isinstance(query, dict):
            return
        lines = self.admin_tap({str(k): str(v) for k, v in query.items()})
        client = self._new_client()
        try:
            async with await client.open_stream(
                "POST", "/v1/tap-reply", query={"proxy_id": self.proxy_id, "request": str(n)},
                duplex=True,
            ) as up:
                if up.status != 200:
                    why = (await up.read(300)).decode("utf-8", "replace")
                    log.warning("relayed tap %d refused: HTTP %d %s", n, up.status, why)
                    return
                sending = spawn(_send_lines(up, lines), name="tap lines")
                answer = spawn(_drain(up), name="tap answer")
                try:
                    await asyncio.wait((sending, answer), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in (sending, answer):
                        t.cancel()
                    await asyncio.gather(sending, answer, return_exceptions=True)
        except (OSError, TimeoutError) as exc:
            log.info("relayed tap %d ended: %s", n, exc)
        finally:
            await client.close()

    async def _ack(self, version: int, error: str | None) -> None:
        body: dict[str, Any] = {
            "proxy_id": self.proxy_id,
            "config_version": version,
            "ok": error is None,
            "error": (error or "")[:ACK_ERROR_MAX],
        }
        if self.identity is not None:
            body["cert_not_after"] = self.identity.not_after.timestamp()
        if self._acks is not None:
            self._acks.put_nowait(json.dumps(body).encode() + b"\n")
            return  # answered by an `ack` line on the stream
        status, data = await self._post("/v1/ack", body)
        if status != 200:
            log.warning("ACK of version %d refused: %s", version, data)
        else:
            self._ack_answered(version, error is None)

    def _ack_answered(self, version: int, ok: bool) -> None:
        if ok:
            self.acked_version = version
        for fn in self._on_ack:
            fn(version, ok)

    async def heartbeat_loop(self, endpoint: dict[str, Any]) -> None:
        """Register this proxy's endpoint and keep it alive; re-register after a registry reset."""
        registered = False
        while True:
            try:
                if not registered:
                    status, data = await self._post("/v1/endpoints", endpoint)
                    registered = status == 200
                    if not registered:
                        log.warning("endpoint registration refused: %s", data)
                else:
                    status, _ = await self._post(
                        f"/v1/endpoints/{endpoint['id']}", health_body(endpoint), method="PUT"
                    )
                    registered = status == 200
                    if not registered:
                        continue
            except (OSError, TimeoutError):
                registered = False
            await asyncio.sleep(HEARTBEAT_S if registered else BACKOFF_MAX_S)

    async def report_health(self, endpoint: dict[str, Any]) -> None:
        """Send a change of the app's health at once; the next heartbeat repeats it (and a
        registry that does not know the endpoint gets it with the registration)."""
        with contextlib.suppress(OSError, TimeoutError):
            await self._post(
                f"/v1/endpoints/{endpoint['id']}", health_body(endpoint), method="PUT", timeout=5
            )

    async def deregister(self, endpoint_id: str) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            await self._post(f"/v1/endpoints/{endpoint_id}", {}, method="DELETE", timeout=2)


def health_body(endpoint: dict[str, Any]) -> dict[str, Any]:
    """The heartbeat's body: the endpoint's health and, when not healthy, why."""
    return {"health": endpoint.get("health", "healthy"), "reason": endpoint.get("reason", "")}
