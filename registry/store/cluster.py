"""Replicas over one etcd: versions by transaction, the publisher by lease, the rest by watch.

Keys under the spec's prefix P (docs/etcd.md):

    P/epoch            the mesh's epoch, created once by the first replica to start
    P/config           the snapshot in force: {"version", "digest", "publisher", "config"}
    P/config.rejected  the publisher's last rejected change, until a config is published
    P/publisher        the replica that publishes, put with its lease (the election)
    P/replicas/<id>    each replica, put with its lease: it goes away TTL seconds after a crash
    P/tokens/<id>      join token records (registry/store/tokens.py)
    P/endpoints/<id>   the catalog, each endpoint with a lease of its TTL (catalog.py)
    P/proxies/<replica>/...  proxies' ACK state, with their replica's lease (proxies.py)

A version is allocated and its snapshot stored in one transaction that compares P/config's
mod_revision with the one just read (and that P/publisher is still ours): two writers can
never both turn version N into N+1, and a deposed publisher cannot write at all. Every
replica, the publisher included, puts in force what P/config holds (watch), so they all
serve the same numbered snapshots; a newer version only ever replaces an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from common.aio import cancel, spawn
from registry.ca.authority import CertificateAuthority
from registry.config import MeshConfig
from registry.server.snapshots import Rejection, Snapshot, SnapshotStore
from registry.store.backend import Opened, Replica
from registry.store.catalog import SharedCatalog
from registry.store.etcd import (
    EtcdClient,
    EtcdError,
    EtcdTlsError,
    KeyValue,
    cmp_create,
    cmp_mod,
    op_delete,
    op_get,
    op_put,
)
from registry.store.proxies import SharedProxies
from registry.store.sealed_ca import shared_authority
from registry.store.spec import StoreSpec
from registry.store.tokens import EtcdTokens

log = logging.getLogger("meshctl.registry.etcd")

# The publisher's lease: a crashed publisher is replaced LEASE_TTL_S (plus etcd's expiry
# check, <= 0.5 s) after its last keep-alive; a clean stop revokes it at once. Keep-alives
# go every third of it, so one lost keep-alive costs nothing.
LEASE_TTL_S = 4
OPEN_TIMEOUT_S = 10.0  # how long a starting registry waits for etcd before it gives up
RETRY_S = 0.5  # between attempts once etcd failed a call (every loop below is paced by it)
PUBLISH_ATTEMPTS = 8


class EtcdState:
    """One replica's share of the store: its lease, its campaign, its watch of P/config."""

    def __init__(self, spec: StoreSpec, lease_ttl_s: int = LEASE_TTL_S) -> None:
        self.spec = spec
        self.client = EtcdClient(spec)
        self.replica_id = self.url = ""  # known at begin(), once the API is bound
        self.ttl = lease_ttl_s
        p = spec.prefix
        self.k_epoch, self.k_config = f"{p}/epoch", f"{p}/config"
        self.k_rejected = f"{p}/config.rejected"
        self.k_publisher, self.k_replicas = f"{p}/publisher", f"{p}/replicas/"
        self._lease = 0
        self._lease_lost = asyncio.Event()
        self._term_over = asyncio.Event()  # set when a write finds P/publisher is not ours
        self._campaign_rev = 0  # create revision of our P/publisher; 0: another replica publishes
        self._config_rev = 0  # the revision P/config was read at (watches go on after it)
        self._replica: Replica | None = None
        self._store: SnapshotStore | None = None
        self._queue: list[MeshConfig | Rejection] = []  # for etcd, in order (publisher)
        self._publishing: asyncio.Task[Any] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._catalog: SharedCatalog | None = None
        self._proxies: SharedProxies | None = None
        self._view: dict[str, Any] = {"publisher": "", "replicas": []}
        self._moved = asyncio.Event()  # the snapshot in force changed: tell the others
        self._members: list[dict[str, Any]] = []  # etcd members' health, for status
        self.started_at = time.time()

    @property
    def leading(self) -> bool:
        return self._campaign_rev != 0

    # -- start and stop ----------------------------------------------------------------------

    async def open(self) -> Opened:
        """The mesh's epoch (created if this is the first replica) and the snapshot in force."""
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        while True:
            try:
                mine = secrets.token_hex(8).encode()
                r = await self.client.txn([cmp_create(self.k_epoch, 0)],
                                          [op_put(self.k_epoch, mine)], [op_get(self.k_epoch)])
                epoch = mine if r.succeeded else r.ranges[0][0].value
                kv, self._config_rev = await self.client.get(self.k_config)
                break
            except EtcdTlsError as exc:
                raise EtcdError(f"{exc}: fix --store-ca/--store-cert/--store-key") from None
            except EtcdError as exc:
                if time.monotonic() > deadline:
                    raise EtcdError(
                        f"{exc} (for {OPEN_TIMEOUT_S:g} s): start etcd, or fix --store "
                        f"{self.spec.display()}"
                    ) from None
                await asyncio.sleep(RETRY_S)
        snap = self._decode(kv) if kv else None
        return Opened(epoch.decode(), snap.version if snap else 0, snap)

    async def begin(self, replica: Replica, store: SnapshotStore) -> None:
        self._replica, self._store = replica, store
        self.replica_id, self.url = replica.whoami()
        await self._new_lease()
        if self._catalog is not None:
            await self._catalog.start()
        if self._proxies is not None:
            await self._proxies.start(self.replica_id)
        self._tasks += [
            spawn(self._keep_lease(), name="etcd lease"),
            spawn(self._campaign(), name="etcd campaign"),
            spawn(self._follow(), name="etcd follow"),
            spawn(self._watch_replicas(), name="etcd replicas"),
            spawn(self._report(), name="etcd report"),
        ]

    def catalog(self, ttl_s: float) -> SharedCatalog:
        self._catalog = SharedCatalog(self.client, self.spec.prefix, ttl_s)
        return self._catalog

    def proxies(self) -> SharedProxies:
        self._proxies = SharedProxies(self.client, self.spec.prefix, lambda: self._lease)
        return self._proxies

    def tokens(self) -> EtcdTokens:
        return EtcdTokens(self.client, self.spec.prefix)

    async def authority(self, ca_dir: Path, trust_domain: str) -> CertificateAuthority:
        return await shared_authority(self.client, self.spec.prefix, ca_dir, trust_domain)

    async def close(self) -> None:
        """Stop; revoking the lease hands the publisher's role on at once, not at its TTL."""
        await cancel([*self._tasks, *([self._publishing] if self._publishing else [])])
        for part in (self._catalog, self._proxies):
            if part is not None:
                await part.stop()
        if self._lease:
            await self.client.revoke(self._lease)
        await self.client.close()

    # -- the lease: this replica is alive ----------------------------------------------------

    async def _new_lease(self) -> None:
        self._lease = await self.client.grant(self.ttl)
        self._lease_lost = asyncio.Event()
        await self._put_info()

    async def _put_info(self) -> int:
        """This replica's entry under P/replicas/, with the config version it serves."""
        snap = self._store.current if self._store else None
        version = snap.version if snap else 0
        urls = self._replica.join_urls() if self._replica else [self.url]
        info = {"id": self.replica_id, "url": self.url, "urls": urls,
                "started_at": self.started_at, "config_version": version}  # fmt: skip
        await self.client.put(self.k_replicas + self.replica_id, json.dumps(info).encode(),
                              lease=self._lease)  # fmt: skip
        return version

    async def _report(self) -> None:
        """Keep this replica's config version in its entry (each replica's lag shows in
        status) and check every etcd member (health, leader, raft index) once per TTL."""
        said = -1
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ttl):
                    await self._moved.wait()
            self._moved.clear()
            snap = self._store.current if self._store else None
            if snap is not None and snap.version != said:
                with contextlib.suppress(EtcdError):
                    said = await self._put_info()
            self._members = list(await asyncio.gather(*map(self._member, self.spec.endpoints)))

    async def _member(self, base: str) -> dict[str, Any]:
        try:
            doc = await self.client.call_at(base, "maintenance/status", {}, timeout=1.0)
        except EtcdError as exc:
            return {"endpoint": base, "ok": False, "error": str(exc)}
        return {"endpoint": base, "ok": True, "version": str(doc.get("version", "")),
                "leader": doc.get("leader") == doc.get("header", {}).get("member_id"),
                "raft_index": int(doc.get("raftIndex", 0))}  # fmt: skip

    async def _keep_lease(self) -> None:
        every = self.ttl / 3
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(every)
            try:
                if await self.client.keepalive(self._lease) > 0:
                    last_ok = time.monotonic()
                    continue
                log.warning("etcd lease of this replica expired")
            except EtcdError as exc:
                # The lease may still live in etcd: give up publishing only when it may not.
                if time.monotonic() - last_ok < self.ttl - every:
                    continue
                log.warning("etcd unreachable for %.1f s: %s", time.monotonic() - last_ok, exc)
            self._lease_lost.set()  # ends our campaign's term (a publisher stops publishing)
            while True:
                try:
                    await self._new_lease()
                    last_ok = time.monotonic()
                    if self._proxies is not None:
                        self._proxies.relet()  # their rows lived on the old lease
                    break
                except EtcdError:
                    await asyncio.sleep(RETRY_S)

    async def _watch_replicas(self) -> None:
        """Keep the list of live replicas for status: read it, then follow its changes."""
        while True:
            with contextlib.suppress(EtcdError):
                kvs, rev = await self.client.get_prefix(self.k_replicas)
                live = {kv.key: kv.value for kv in kvs}
                self._set_replicas(live)
                async for ev in self.client.watch(self.k_replicas, rev + 1, prefix=True):
                    if ev.deleted:
                        live.pop(ev.kv.key, None)
                    else:
                        live[ev.kv.key] = ev.kv.value
                    self._set_replicas(live)
            await asyncio.sleep(RETRY_S)

    def _set_replicas(self, live: dict[str, bytes]) -> None:
        replicas = []
        for value in live.values():
            with contextlib.suppress(ValueError, TypeError):
                replicas.append(dict(json.loads(value)))
        self._view = {**self._view, "replicas": replicas}

    def _set_publisher(self, holder: KeyValue | None) -> None:
        self._view = {**self._view, "publisher": holder.value.decode() if holder else ""}

    # -- the election: one replica publishes ------------------------------------------------

    async def _campaign(self) -> None:
        assert self._replica is not None
        while True:
            lease, lost = self._lease, self._lease_lost
            try:
                r = await self.client.txn(
                    [cmp_create(self.k_publisher, 0)],
                    [op_put(self.k_publisher, self.replica_id.encode(), lease)],
                    [op_get(self.k_publisher)],
                )
            except EtcdError:
                await asyncio.sleep(RETRY_S)
                continue
            holder = r.ranges[0][0] if r.ranges and r.ranges[0] else None
            if r.succeeded or (holder is not None and holder.lease == lease):
                self._campaign_rev = r.revision if r.succeeded else holder.create_revision  # type: ignore[union-attr]
                log.info("this replica (%s) publishes config now", self.replica_id)
                self._set_publisher(holder if holder else KeyValue(
                    self.k_publisher, self.replica_id.encode(), r.revision, r.revision, lease))
                self._term_over = asyncio.Event()
                self._replica.lead(reload=True)
                ended = [spawn(lost.wait(), name="lease lost"),
                         spawn(self._term_over.wait(), name="fenced out")]  # fmt: skip
                await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
                await cancel(ended)
                self._campaign_rev = 0
                log.warning("this replica (%s) no longer publishes: %s", self.replica_id,
                            "its lease ended" if lost.is_set() else "another holds the role")
                self._replica.unlead()
                continue
            self._set_publisher(holder)
            await self._vacancy(r.revision, lost)

    async def _vacancy(self, revision: int, lost: asyncio.Event) -> None:
        """Wait until P/publisher is deleted (its lease ended), our lease ends, or TTL passes."""
        with contextlib.suppress(TimeoutError, EtcdError):
            async with asyncio.timeout(self.ttl):
                async for ev in self.client.watch(self.k_publisher, revision + 1):
                    self._set_publisher(None if ev.deleted else ev.kv)
                    if ev.deleted or lost.is_set():
                        return

    # -- publishing (the publisher) and following (everyone) --------------------------------

    def submit(self, store: SnapshotStore, config: MeshConfig) -> None:
        self._queue = [config]  # a newer config replaces what is queued, rejections included
        self._kick()

    def rejected(self, rejection: Rejection) -> None:
        # After the config queued before it (it was valid: it is still published), in
        # place of an older rejection.
        self._queue = [q for q in self._queue if isinstance(q, MeshConfig)] + [rejection]
        self._kick()

    def _kick(self) -> None:
        if self._publishing is None or self._publishing.done():
            self._publishing = spawn(self._drain(), name="etcd publish")

    async def _drain(self) -> None:
        while self._queue and self.leading:
            item, snap = self._queue[0], None
            try:
                if isinstance(item, Rejection):
                    await self.client.put(self.k_rejected, json.dumps(
                        {"at": item.at, "errors": list(item.errors)}).encode())
                else:
                    snap = await self._publish(item)
            except EtcdError as exc:
                log.error("config change not stored in etcd yet: %s", exc)
                await asyncio.sleep(RETRY_S)
                continue
            if self._queue and self._queue[0] is item:
                self._queue.pop(0)
            if isinstance(item, Rejection) or self._store is None or self._term_over.is_set():
                continue
            if not any(isinstance(q, Rejection) for q in self._queue):
                self._store.last_rejection = None  # as SnapshotStore.publish does
            if snap is not None and self._replica is not None:
                self._replica.adopt(snap)
                self._moved.set()
                log.info("config version %d published (%s)", snap.version, item.digest[:12])

    async def _publish(self, config: MeshConfig) -> Snapshot | None:
        """Store `config` as the next version; None if it is already in force or we were
        deposed meanwhile. The compare on P/config's mod_revision is what makes a version
        number impossible to hand out twice."""
        for _ in range(PUBLISH_ATTEMPTS):
            kv, _rev = await self.client.get(self.k_config)
            now = json.loads(kv.value) if kv else {}
            if now.get("digest") == config.digest:
                await self.client.delete(self.k_rejected)  # back to the config in force
                return None
            snap = Snapshot.build(int(now.get("version", 0)) + 1, config)
            value = b'{"version":%d,"digest":"%s","publisher":%s,"config":%s}' % (
                snap.version, config.digest.encode(), json.dumps(self.replica_id).encode(),
                snap.wire,
            )  # fmt: skip
            r = await self.client.txn(
                [cmp_mod(self.k_config, kv.mod_revision if kv else 0),
                 cmp_create(self.k_publisher, self._campaign_rev)],
                [op_put(self.k_config, value), op_delete(self.k_rejected)],
                [op_get(self.k_publisher)],
            )  # fmt: skip
            if r.succeeded:
                return snap
            holder = r.ranges[0][0] if r.ranges and r.ranges[0] else None
            if holder is None or holder.create_revision != self._campaign_rev:
                log.warning("config %s not published: this replica is no longer the publisher",
                            config.digest[:12])
                self._term_over.set()  # the campaign loop steps down and runs again
                return None
        raise EtcdError(f"{self.k_config} changed under {PUBLISH_ATTEMPTS} attempts in a row")

    async def _follow(self) -> None:
        """Put in force every snapshot P/config holds, from any publisher, and show the
        publisher's last rejected change (P/config.rejected) as this replica's."""
        rev = self._config_rev
        while True:
            with contextlib.suppress(EtcdError):  # (again) where things stand
                kvs, rev = await self.client.get_prefix(self.k_config)
                held = {kv.key: kv for kv in kvs}
                for key in (self.k_config, self.k_rejected):
                    if key in held:
                        self._take(held[key], deleted=False)
                    elif key == self.k_rejected:
                        self._take(KeyValue(key, b"", 0, rev, 0), deleted=True)
            try:
                async for ev in self.client.watch(self.k_config, rev + 1, prefix=True):
                    rev = ev.kv.mod_revision
                    self._take(ev.kv, deleted=ev.deleted)
            except EtcdError as exc:
                log.warning("config watch broken, resuming after revision %d: %s", rev, exc)
            await asyncio.sleep(RETRY_S)

    def _take(self, kv: KeyValue, *, deleted: bool) -> None:
        if kv.key == self.k_config and not deleted:
            self._adopt(kv)
        elif kv.key == self.k_rejected and not self.leading and self._store is not None:
            rej = None
            with contextlib.suppress(ValueError, KeyError, TypeError):
                d = json.loads(kv.value) if not deleted else None
                rej = Rejection(float(d["at"]), tuple(map(str, d["errors"]))) if d else None
            self._store.last_rejection = rej

    def _adopt(self, kv: KeyValue) -> None:
        try:
            snap = self._decode(kv)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("%s holds no snapshot this registry can read (%s): ignored", kv.key, exc)
            return
        if self._replica is not None:
            self._replica.adopt(snap)
            self._moved.set()

    @staticmethod
    def _decode(kv: KeyValue) -> Snapshot:
        d = json.loads(kv.value)
        return Snapshot.build(int(d["version"]), MeshConfig.from_wire(d["config"]))

    def status(self) -> dict[str, Any]:
        return {
            "store": self.spec.display(),
            "replica": self.replica_id,
            "publisher": self._view["publisher"],
            "leading": self.leading,
            "replicas": sorted(self._view["replicas"], key=lambda r: str(r.get("id", ""))),
            "etcd": self._members,
        }
