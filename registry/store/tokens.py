"""Join tokens where the registry's store keeps them: the file (one registry) or etcd.

Both answer the same async calls; the rules (what makes a token spent, forged, expired)
are registry/ca/tokens.py's pure `mint`, `parse` and `spend`, so the two cannot differ.
In etcd a redemption is a transaction that compares the record's mod_revision with the one
it read: of two replicas redeeming one one-time token at once, exactly one succeeds; the
other reads the record again and is told it was already used.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

from registry.ca.spiffe import SpiffeId
from registry.ca.tokens import (
    DEFAULT_TOKEN_TTL_S,
    TokenError,
    TokenRecord,
    TokenStore,
    mint,
    parse,
    spend,
)
from registry.store.etcd import EtcdClient, EtcdError, cmp_create, cmp_mod, op_delete, op_put

log = logging.getLogger("meshctl.registry.etcd")
ATTEMPTS = 8  # transactions lost to a concurrent writer of the same record, before giving up


class Tokens(Protocol):
    async def create(self, identity: SpiffeId, ttl_s: float = DEFAULT_TOKEN_TTL_S, *,
                     reusable: bool = False) -> str: ...  # fmt: skip

    async def redeem(self, token: str, expected: SpiffeId | None = None) -> SpiffeId: ...

    async def revoke(self, token_id: str) -> TokenRecord: ...

    async def list(self) -> list[TokenRecord]: ...

    async def purge_expired(self) -> int: ...


class FileTokens:
    """The token file of the only registry (TokenStore: locked, written before it returns)."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store

    async def create(self, identity: SpiffeId, ttl_s: float = DEFAULT_TOKEN_TTL_S, *,
                     reusable: bool = False) -> str:  # fmt: skip
        return self.store.create(identity, ttl_s, reusable=reusable)

    async def redeem(self, token: str, expected: SpiffeId | None = None) -> SpiffeId:
        return self.store.redeem(token, expected)

    async def revoke(self, token_id: str) -> TokenRecord:
        return self.store.revoke(token_id)

    async def list(self) -> list[TokenRecord]:
        return self.store.list()

    async def purge_expired(self) -> int:
        return self.store.purge_expired()


def _unavailable(exc: EtcdError) -> TokenError:
    return TokenError("unavailable", f"the token store (etcd) did not answer: {exc}; try again")


class EtcdTokens:
    """Token records under PREFIX/tokens/<id>, shared by every replica."""

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.prefix = f"{prefix}/tokens/"

    def _key(self, token_id: str) -> str:
        return self.prefix + token_id

    @staticmethod
    def _encode(rec: TokenRecord) -> bytes:
        return json.dumps(rec.to_json(), sort_keys=True).encode()

    async def create(self, identity: SpiffeId, ttl_s: float = DEFAULT_TOKEN_TTL_S, *,
                     reusable: bool = False) -> str:  # fmt: skip
        try:
            for _ in range(ATTEMPTS):  # 64-bit ids: a collision is a curiosity, not a risk
                token_id = secrets.token_hex(8)
                rec, token = mint(token_id, identity, ttl_s, reusable=reusable)
                key = self._key(token_id)
                r = await self.client.txn([cmp_create(key, 0)], [op_put(key, self._encode(rec))])
                if r.succeeded:
                    return token
        except EtcdError as exc:
            raise _unavailable(exc) from None
        raise TokenError("unavailable", "could not find a free token id; try again")

    async def redeem(self, token: str, expected: SpiffeId | None = None) -> SpiffeId:
        token_id, secret = parse(token)
        key = self._key(token_id)
        try:
            for _ in range(ATTEMPTS):
                kv, _rev = await self.client.get(key)
                rec = TokenRecord.from_json(token_id, json.loads(kv.value)) if kv else None
                spent = spend(rec, token_id, secret, expected)  # raises: nothing written
                assert kv is not None  # spend refuses a missing record
                r = await self.client.txn([cmp_mod(key, kv.mod_revision)],
                                          [op_put(key, self._encode(spent))])  # fmt: skip
                if r.succeeded:
                    return spent.identity
                # Another replica changed the record meanwhile: read it again and re-judge.
        except EtcdError as exc:
            raise _unavailable(exc) from None
        raise TokenError("busy", f"join token {token_id} is being redeemed elsewhere; try again")

    async def revoke(self, token_id: str) -> TokenRecord:
        key = self._key(token_id)
        try:
            for _ in range(ATTEMPTS):
                kv, _rev = await self.client.get(key)
                if kv is None:
                    raise TokenError("unknown", f"no join token {token_id!r}")
                rec = TokenRecord.from_json(token_id, json.loads(kv.value))
                if rec.revoked_at is not None:
                    return rec
                rec = replace(rec, revoked_at=datetime.now(UTC))
                r = await self.client.txn([cmp_mod(key, kv.mod_revision)],
                                          [op_put(key, self._encode(rec))])  # fmt: skip
                if r.succeeded:
                    return rec
        except EtcdError as exc:
            raise _unavailable(exc) from None
        raise TokenError("busy", f"join token {token_id} is being changed elsewhere; try again")

    async def list(self) -> list[TokenRecord]:
        try:
            kvs, _rev = await self.client.get_prefix(self.prefix)
        except EtcdError as exc:
            raise _unavailable(exc) from None
        recs = [TokenRecord.from_json(kv.key[len(self.prefix):], json.loads(kv.value))
                for kv in kvs]  # fmt: skip
        return sorted(recs, key=lambda r: (r.created_at, r.token_id))

    async def purge_expired(self) -> int:
        """Drop expired records (each only if unchanged since read); errors are logged."""
        now, removed = datetime.now(UTC), 0
        try:
            kvs, _rev = await self.client.get_prefix(self.prefix)
            for kv in kvs:
                rec = TokenRecord.from_json(kv.key[len(self.prefix):], json.loads(kv.value))
                if rec.expired(now):
                    r = await self.client.txn([cmp_mod(kv.key, kv.mod_revision)],
                                              [op_delete(kv.key)])  # fmt: skip
                    removed += r.succeeded
        except EtcdError as exc:
            log.warning("expired join tokens not purged this time: %s", exc)
        return removed
