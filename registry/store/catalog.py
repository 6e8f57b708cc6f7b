"""The catalog shared by registry replicas: each keeps its copy, etcd keeps the truth.

Every endpoint is a key PREFIX/endpoints/<id> put with a lease of the endpoint TTL (as
Consul's TTL checks, or Kubernetes' node leases): a heartbeat on any replica renews that
lease, and when heartbeats stop etcd deletes the key and every replica's watch removes the
endpoint. So no replica expires endpoints by its own clock.

A register, heartbeat or deregister answered by this replica changes its copy at once
(the API's answer and this replica's pushes do not wait for etcd) and is written to etcd
right after, in order, by one writer task; the other replicas apply it from their watch.
A change of the same endpoint made meanwhile on another replica wins by arriving later.

The catalog's version is etcd's revision of the last endpoint change applied, the same
number on every replica for the same endpoints: a proxy that moves to another replica and
says which catalog version it has is never taken to hold what it does not. So this
replica's own write is pushed to its proxies when etcd's watch brings it back, numbered,
a few milliseconds after the API answered, as on every other replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from common.aio import cancel, spawn
from registry.server.catalog import Catalog, Endpoint
from registry.store.etcd import EtcdClient, EtcdError, KeyValue

log = logging.getLogger("meshctl.registry.etcd")
RETRY_S = 0.5


class SharedCatalog(Catalog):
    """This replica's copy of the endpoints under PREFIX/endpoints/ (`start` keeps it so)."""

    def __init__(self, client: EtcdClient, prefix: str, ttl_s: float,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        super().__init__(None, clock)
        self.client = client
        self.prefix = f"{prefix}/endpoints/"
        self.ttl = max(2, math.ceil(ttl_s))  # etcd's leases count whole seconds
        self._leases: dict[str, int] = {}  # endpoint id -> its lease in etcd, from any replica
        self._pending: dict[str, str] = {}  # endpoint id -> "put" | "renew" | "delete"
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    # -- what the API calls (this replica's writes) -------------------------------------------

    def register(self, ep: Endpoint) -> Endpoint:
        ep = super().register(ep)
        self._queue(ep.id, "put")
        return ep

    def heartbeat(self, endpoint_id: str, health: str | None = None,
                  reason: str | None = None) -> Endpoint | None:  # fmt: skip
        old = self.get(endpoint_id)
        ep = super().heartbeat(endpoint_id, health, reason)
        if ep is not None and old is not None:
            changed = (ep.health, ep.reason) != (old.health, old.reason)
            self._queue(endpoint_id, "put" if changed else "renew")
        return ep

    def deregister(self, endpoint_id: str) -> bool:
        gone = super().deregister(endpoint_id)
        if gone:
            self._queue(endpoint_id, "delete")
        return gone

    def expire(self, ttl_s: float = 0.0) -> list[str]:
        return []  # etcd expires them: a lease runs out, the watch removes the endpoint

    def _changed(self) -> None:
        self._wire = None  # counted and pushed by _commit, once etcd has numbered it

    def _commit(self, revision: int) -> None:
        self.version = max(self.version, revision)
        self._wire = None
        for fn in self._listeners:
            fn()

    def _queue(self, endpoint_id: str, op: str) -> None:
        if op == "renew" and self._pending.get(endpoint_id) in ("put", "delete"):
            return  # the write already queued renews the lease, or ends the endpoint
        self._pending[endpoint_id] = op
        self._wake.set()

    # -- start, stop ----------------------------------------------------------------------------

    async def start(self) -> None:
        kvs, rev = await self.client.get_prefix(self.prefix)
        for kv in kvs:
            self._apply(kv)
        self._commit(rev)
        self._tasks = [spawn(self._write_loop(), name="etcd catalog writes"),
                       spawn(self._watch_loop(rev), name="etcd catalog watch")]  # fmt: skip

    async def stop(self) -> None:
        await cancel(self._tasks)

    # -- etcd -> this copy ----------------------------------------------------------------------

    def _apply(self, kv: KeyValue) -> None:
        try:
            ep = Endpoint.from_wire(json.loads(kv.value))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("%s is no endpoint this registry can read (%s): ignored", kv.key, exc)
            return
        self._leases[ep.id] = kv.lease
        Catalog.register(self, ep)  # the base class's: not written back to etcd

    async def _watch_loop(self, rev: int) -> None:
        while True:
            try:
                async for ev in self.client.watch(self.prefix, rev + 1, prefix=True):
                    rev = ev.kv.mod_revision
                    endpoint_id = ev.kv.key[len(self.prefix):]
                    if not ev.deleted:
                        self._apply(ev.kv)
                    elif endpoint_id not in self._pending:  # not re-registered meanwhile
                        self._leases.pop(endpoint_id, None)
                        Catalog.deregister(self, endpoint_id)
                    self._commit(rev)
            except EtcdError as exc:
                log.warning("catalog watch broken, resuming after revision %d: %s", rev, exc)
            await asyncio.sleep(RETRY_S)

    # -- this replica's writes -> etcd ----------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                endpoint_id, op = next(iter(self._pending.items()))
                try:
                    await self._write(endpoint_id, op)
                except EtcdError as exc:
                    log.warning("endpoint %s not written to etcd yet: %s", endpoint_id, exc)
                    await asyncio.sleep(RETRY_S)
                    continue
                if self._pending.get(endpoint_id) == op:  # not queued again meanwhile
                    del self._pending[endpoint_id]

    async def _write(self, endpoint_id: str, op: str) -> None:
        key = self.prefix + endpoint_id
        lease = self._leases.get(endpoint_id, 0)
        if op == "delete":
            self._leases.pop(endpoint_id, None)
            await self.client.delete(key)
            if lease:
                await self.client.revoke(lease)
            return
        if op == "renew" and lease and await self.client.keepalive(lease) > 0:
            return
        ep = self.get(endpoint_id)
        if ep is None:
            return  # deregistered since: the delete is queued or done
        if not lease or await self.client.keepalive(lease) <= 0:
            lease = await self.client.grant(self.ttl)
            self._leases[endpoint_id] = lease
        await self.client.put(key, json.dumps(ep.to_wire(), sort_keys=True).encode(), lease)
