"""Proxies' ACK/NACK state seen by every replica: each writes its own rows, reads the others'.

A replica keeps the rows of the proxies connected to it (registry/server/proxies.py, the
same rules: a proxy reports only on itself, rows bounded) and mirrors them under
PREFIX/proxies/<replica>/<identity>/<proxy id> with its own lease, so they vanish with
the replica that held them. Writes are coalesced (the latest row per proxy) and sent in
transactions of up to TXN_OPS operations: a push ACKed by a thousand proxies is ten
round trips, not a thousand. Every replica follows PREFIX/proxies/ by watch, so `status`
on any replica lists every proxy and which replica it is connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from common.aio import cancel, spawn
from registry.server.proxies import Key, ProxyState, ProxyTracker
from registry.store.etcd import EtcdClient, EtcdError, op_delete, op_put

log = logging.getLogger("meshctl.registry.etcd")
_STATUS_FIELDS = ("proxy_id", "identity", "service", "acked_version", "nacked_version",
                  "nack_error", "cert_not_after", "last_seen")  # as /v1/status lists a proxy
TXN_OPS = 100  # below etcd's default --max-txn-ops (128)
RETRY_S = 0.5


class SharedProxies(ProxyTracker):
    """This replica's proxies, mirrored to etcd; `elsewhere()` the other replicas' rows."""

    def __init__(self, client: EtcdClient, prefix: str, lease: Callable[[], int]) -> None:
        super().__init__()
        self.client = client
        self.root = f"{prefix}/proxies/"
        self.mine = ""  # this replica's folder under root, known at start()
        self._lease = lease
        self._pending: dict[Key, ProxyState | None] = {}  # None: delete
        self._wake = asyncio.Event()
        self._others: dict[str, dict[str, Any]] = {}  # key -> row, other replicas' proxies
        self._tasks: list[asyncio.Task[Any]] = []

    def _put(self, st: ProxyState) -> None:
        super()._put(st)
        self._queue((st.identity, st.proxy_id), st)

    def _drop(self, key: Key) -> None:
        super()._drop(key)
        self._queue(key, None)

    def _queue(self, key: Key, st: ProxyState | None) -> None:
        self._pending[key] = st
        self._wake.set()

    def relet(self) -> None:
        """The replica's lease was replaced: write every row again under the new one."""
        for st in self.all():
            self._queue((st.identity, st.proxy_id), st)

    def elsewhere(self) -> list[dict[str, Any]]:
        """Rows of proxies connected to other replicas (each with its `replica`)."""
        return list(self._others.values())

    # -- start, stop ----------------------------------------------------------------------------

    async def start(self, replica_id: str) -> None:
        self.mine = f"{self.root}{replica_id}/"
        with contextlib.suppress(EtcdError):  # rows a previous run of this replica left
            await self.client.delete_prefix(self.mine)
        self._tasks = [spawn(self._write_loop(), name="etcd proxies writes"),
                       spawn(self._watch_loop(), name="etcd proxies watch")]  # fmt: skip

    async def stop(self) -> None:
        await cancel(self._tasks)

    # -- writes ---------------------------------------------------------------------------------

    def _key(self, key: Key) -> str:
        identity, proxy_id = key
        return self.mine + urllib.parse.quote(identity, safe="") + "/" + proxy_id

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = dict(list(self._pending.items())[:TXN_OPS])
                ops = [
                    op_delete(self._key(k)) if st is None
                    else op_put(self._key(k), json.dumps(asdict(st)).encode(), self._lease())
                    for k, st in batch.items()
                ]  # fmt: skip
                try:
                    await self.client.txn([], ops)
                except EtcdError as exc:
                    log.warning("proxies' state not written to etcd yet: %s", exc)
                    await asyncio.sleep(RETRY_S)
                    continue
                for k, st in batch.items():
                    if k in self._pending and self._pending[k] is st:  # not changed since
                        del self._pending[k]

    # -- the other replicas' rows ---------------------------------------------------------------

    async def _watch_loop(self) -> None:
        while True:
            with contextlib.suppress(EtcdError):
                kvs, rev = await self.client.get_prefix(self.root)
                self._others = {}
                for kv in kvs:
                    self._take(kv.key, kv.value)
                async for ev in self.client.watch(self.root, rev + 1, prefix=True):
                    if ev.deleted:
                        self._others.pop(ev.kv.key, None)
                    else:
                        self._take(ev.kv.key, ev.kv.value)
            await asyncio.sleep(RETRY_S)

    def _take(self, key: str, value: bytes) -> None:
        if key.startswith(self.mine):
            return  # our own rows: the local table is the truth for them
        try:
            st = dict(json.loads(value))
            row = {k: st[k] for k in _STATUS_FIELDS} | {"connected": st["streams"] > 0}
        except (ValueError, TypeError, KeyError):
            return
        row["replica"] = key[len(self.root):].split("/", 1)[0]
        self._others[key] = row
