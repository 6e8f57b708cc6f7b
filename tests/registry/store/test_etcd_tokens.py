"""Join tokens in etcd, redeemed by many at once: one redemption wins, the rest are told why."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from registry.ca.spiffe import SpiffeId
from registry.ca.tokens import TokenError
from registry.store import parse_store
from registry.store.etcd import EtcdClient
from registry.store.tokens import EtcdTokens
from tests.registry.store.etcd_support import EtcdCluster

pytestmark = pytest.mark.etcd
WHO = SpiffeId.parse("spiffe://mesh.test/ns/default/sa/frontend")


def test_racing_redemptions_of_one_token_spend_it_once(etcd1: EtcdCluster,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> list[SpiffeId | TokenError]:
        clients = [EtcdClient(parse_store(etcd1.store)) for _ in range(4)]
        stores = [EtcdTokens(c, "/t") for c in clients]
        token = await stores[0].create(WHO, 60)
        # Twelve redemptions from four "replicas", all reading the record before any of
        # them writes (the barrier): the worst interleaving, every time.
        all_read, reads, real_get = asyncio.Event(), [0], EtcdClient.get

        async def get_then_wait(self: EtcdClient, key: str) -> Any:
            got = await real_get(self, key)
            reads[0] += 1
            if reads[0] >= 12:
                all_read.set()
            async with asyncio.timeout(10):  # a deadline, should the race never line up
                await all_read.wait()
            return got

        monkeypatch.setattr(EtcdClient, "get", get_then_wait)
        got = await asyncio.gather(*(stores[i % 4].redeem(token) for i in range(12)),
                                   return_exceptions=True)  # fmt: skip
        for c in clients:
            await c.close()
        return [g for g in got if isinstance(g, (SpiffeId, TokenError))]

    got = asyncio.run(run())
    assert len(got) == 12
    assert [g for g in got if isinstance(g, SpiffeId)] == [WHO]
    assert {g.reason for g in got if isinstance(g, TokenError)} == {"used"}


def test_reusable_tokens_count_every_use_and_expired_ones_are_purged(
        etcd1: EtcdCluster) -> None:  # fmt: skip
    async def run() -> tuple[int, int, list[str]]:
        client = EtcdClient(parse_store(etcd1.store))
        store = EtcdTokens(client, "/t")
        reusable = await store.create(WHO, 60, reusable=True)
        short = await store.create(WHO, 0.2)
        await asyncio.gather(*(store.redeem(reusable) for _ in range(5)))
        uses = {r.token_id: r.uses for r in await store.list()}[reusable.split(".")[1]]
        await asyncio.sleep(0.4)
        purged = await store.purge_expired()
        left = [r.token_id for r in await store.list()]
        await client.close()
        assert short.split(".")[1] not in left
        return uses, purged, left

    uses, purged, left = asyncio.run(run())
    assert (uses, purged, len(left)) == (5, 1, 1)
