"""A small etcd v3 client over its JSON gateway (POST /v3/..., keys and values base64).

Only what the registry needs: range, put, delete, transactions, leases (grant, keep-alive,
revoke) and watches. Every int64 comes back as a JSON string and zero values are left out
(protobuf's JSON mapping), hence the `int(x.get(..., 0))` throughout. Calls go to the first
endpoint that answers; a connection error moves on to the next, so one etcd member down
costs one failed connect, not a failed call.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from registry.store.spec import StoreSpec

CALL_TIMEOUT_S = 5.0
# A watch with nothing to say for this long is ended and opened again (by its caller, from
# the revision it had): a TCP connection to a member whose host vanished, with no reset
# ever coming, cannot hold a replica's view still for longer.
WATCH_IDLE_S = 15.0
# gRPC metadata through the gateway: the member cancels the watch when it loses its raft
# leader (as clientv3.WithRequireLeader), instead of leaving it open and silent while it
# sits in a minority partition.
_REQUIRE_LEADER = {"Grpc-Metadata-hasleader": "true"}


class EtcdError(Exception):
    """etcd refused a call, or no endpoint answered; the message says which and why."""


class _Unreachable(Exception):
    """This endpoint did not answer (the next one may)."""


class EtcdTlsError(EtcdError):
    """TLS with etcd failed (an unknown CA, a refused client certificate): no retry helps."""


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s: str) -> bytes:
    return base64.b64decode(s) if s else b""


def prefix_end(prefix: str) -> str:
    """The range_end that selects every key starting with `prefix` (etcd's convention)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return b64(bytes(raw))


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> KeyValue:
        return cls(
            key=unb64(str(d.get("key", ""))).decode(),
            value=unb64(str(d.get("value", ""))),
            create_revision=int(d.get("create_revision", 0)),
            mod_revision=int(d.get("mod_revision", 0)),
            lease=int(d.get("lease", 0)),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One change a watch saw: a put (kv holds the new value) or a delete."""

    deleted: bool
    kv: KeyValue


# -- building a transaction (the JSON etcd expects) ----------------------------------------


def cmp_create(key: str, revision: int) -> dict[str, Any]:
    """The key was created at `revision` (0: the key does not exist)."""
    return {"key": b64(key), "result": "EQUAL", "target": "CREATE",
            "create_revision": str(revision)}  # fmt: skip


def cmp_mod(key: str, revision: int) -> dict[str, Any]:
    """The key was last written at `revision` (0: the key does not exist)."""
    return {"key": b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": str(revision)}


def cmp_value(key: str, value: bytes) -> dict[str, Any]:
    return {"key": b64(key), "result": "EQUAL", "target": "VALUE", "value": b64(value)}


def op_put(key: str, value: bytes, lease: int = 0) -> dict[str, Any]:
    put: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        put["lease"] = str(lease)
    return {"request_put": put}


def op_delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": b64(key)}}


def op_get(key: str) -> dict[str, Any]:
    return {"request_range": {"key": b64(key)}}


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    ranges: tuple[tuple[KeyValue, ...], ...]  # the kvs of each range op, in order


class EtcdClient:
    """One aiohttp session over the spec's endpoints. `close()` when done."""

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec
        self._ssl: ssl.SSLContext | None = None
        if spec.tls:
            self._ssl = ssl.create_default_context(cafile=str(spec.ca) if spec.ca else None)
            if spec.cert is not None and spec.key is not None:
                self._ssl.load_cert_chain(spec.cert, spec.key)
        self._session: aiohttp.ClientSession | None = None
        self._current = 0  # index of the endpoint that answered last

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl else False),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _order(self) -> list[str]:
        eps = self.spec.endpoints
        return [eps[(self._current + i) % len(eps)] for i in range(len(eps))]

    async def call(self, path: str, body: Mapping[str, Any],
                   timeout: float = CALL_TIMEOUT_S) -> dict[str, Any]:  # fmt: skip
        """POST `body` to /v3/`path` on the first endpoint that answers; its JSON reply."""
        failures = []
        for i, base in enumerate(self._order()):
            try:
                doc = await self._post(base, path, body, timeout)
            except _Unreachable as exc:
                failures.append(str(exc))
                continue
            except EtcdError:
                self._prefer(i)
                raise
            self._prefer(i)
            return doc
        raise EtcdError("no etcd endpoint answered: " + "; ".join(failures))

    def _prefer(self, i: int) -> None:
        """The i-th endpoint in today's order answered: ask it first from now on."""
        self._current = (self._current + i) % len(self.spec.endpoints)

    async def call_at(self, base: str, path: str, body: Mapping[str, Any],
                      timeout: float = CALL_TIMEOUT_S) -> dict[str, Any]:  # fmt: skip
        """The same call to one endpoint (a member's own status), no other tried."""
        try:
            return await self._post(base, path, body, timeout)
        except _Unreachable as exc:
            raise EtcdError(str(exc)) from None

    async def _post(self, base: str, path: str, body: Mapping[str, Any],
                    timeout: float) -> dict[str, Any]:  # fmt: skip
        try:
            async with self._http().post(
                f"{base}/v3/{path}", json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as r:
                doc = await r.json(content_type=None)
        except aiohttp.ClientSSLError as exc:
            raise EtcdTlsError(f"etcd {base}: TLS: {exc}") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise _Unreachable(f"{base}: {exc.__class__.__name__}: {exc}") from None
        if not isinstance(doc, dict):
            raise _Unreachable(f"{base}: not an etcd v3 answer: {str(doc)[:100]}")
        if "error" in doc:
            raise EtcdError(f"etcd {base}/v3/{path}: {doc.get('message') or doc['error']}")
        return doc

    # -- kv --------------------------------------------------------------------------------

    async def get(self, key: str) -> tuple[KeyValue | None, int]:
        """The key (or None) and the store's revision at the read."""
        doc = await self.call("kv/range", {"key": b64(key)})
        kvs = doc.get("kvs") or []
        rev = int(doc.get("header", {}).get("revision", 0))
        return (KeyValue.from_json(kvs[0]) if kvs else None), rev

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        doc = await self.call("kv/range", {"key": b64(prefix), "range_end": prefix_end(prefix)})
        rev = int(doc.get("header", {}).get("revision", 0))
        return [KeyValue.from_json(d) for d in doc.get("kvs") or []], rev

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        doc = await self.call("kv/put", op_put(key, value, lease)["request_put"])
        return int(doc.get("header", {}).get("revision", 0))

    async def delete(self, key: str) -> None:
        await self.call("kv/deleterange", {"key": b64(key)})

    async def delete_prefix(self, prefix: str) -> None:
        await self.call("kv/deleterange", {"key": b64(prefix), "range_end": prefix_end(prefix)})

    async def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                  failure: list[dict[str, Any]] | None = None) -> TxnResult:  # fmt: skip
        doc = await self.call(
            "kv/txn", {"compare": compare, "success": success, "failure": failure or []}
        )
        ranges = tuple(
            tuple(KeyValue.from_json(kv) for kv in r["response_range"].get("kvs") or [])
            for r in doc.get("responses") or []
            if "response_range" in r
        )
        return TxnResult(
            succeeded=bool(doc.get("succeeded", False)),
            revision=int(doc.get("header", {}).get("revision", 0)),
            ranges=ranges,
        )

    # -- leases ----------------------------------------------------------------------------

    async def grant(self, ttl_s: int) -> int:
        doc = await self.call("lease/grant", {"TTL": str(ttl_s)})
        return int(doc["ID"])

    async def keepalive(self, lease: int) -> int:
        """Renew `lease` once; its remaining TTL in seconds (0: it has expired)."""
        doc = await self.call("lease/keepalive", {"ID": str(lease)})
        return int(doc.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        # Already gone, or etcd away: it expires by itself at its TTL.
        with contextlib.suppress(EtcdError):
            await self.call("lease/revoke", {"ID": str(lease)}, timeout=2.0)

    # -- watch -----------------------------------------------------------------------------

    async def watch(self, key: str, start_revision: int, *,
                    prefix: bool = False) -> AsyncIterator[Event]:  # fmt: skip
        """Every change of `key` (or of every key under it) from `start_revision` on.

        Raises EtcdError when the stream breaks, and simply ends after WATCH_IDLE_S with no
        event; either way the caller watches again from the revision it had, so nothing
        between the two is missed.
        """
        req: dict[str, Any] = {"key": b64(key), "start_revision": str(start_revision)}
        if prefix:
            req["range_end"] = prefix_end(key)
        base = self._order()[0]
        try:
            async with self._http().post(
                f"{base}/v3/watch", json={"create_request": req}, headers=_REQUIRE_LEADER,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CALL_TIMEOUT_S,
                                              sock_read=WATCH_IDLE_S),
            ) as r:
                buf = b""
                async for chunk in r.content.iter_any():
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if line.strip():
                            for ev in _events(json.loads(line)):
                                yield ev
        except aiohttp.ServerTimeoutError:
            return  # idle for WATCH_IDLE_S (see there)
        except (aiohttp.ClientError, ValueError) as exc:
            self._current = (self._current + 1) % len(self.spec.endpoints)
            raise EtcdError(f"etcd watch on {base}: {exc.__class__.__name__}: {exc}") from None
        except asyncio.CancelledError:
            raise
        self._current = (self._current + 1) % len(self.spec.endpoints)
        raise EtcdError(f"etcd watch on {base} ended")


def _events(doc: Mapping[str, Any]) -> list[Event]:
    result = doc.get("result") or {}
    if "error" in doc:
        raise EtcdError(f"etcd watch: {doc['error']}")
    if result.get("canceled"):
        raise EtcdError(f"etcd watch canceled: {result.get('cancel_reason', 'no reason given')}")
    return [
        Event(deleted=e.get("type") == "DELETE", kv=KeyValue.from_json(e.get("kv") or {}))
        for e in result.get("events") or []
    ]
