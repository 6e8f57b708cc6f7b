"""Reusable join tokens (`token create --reusable --ttl 24h`): many joins until the TTL or a
revocation, still bound to one identity; one-time stays the default."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from registry.ca.spiffe import SpiffeId
from registry.ca.tokens import TokenError, TokenStore
from tests.registry.ca.conftest import TD


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "state" / "tokens.json")


def _reason(store: TokenStore, token: str, **kw: object) -> str:
    with pytest.raises(TokenError) as err:
        store.redeem(token, **kw)  # type: ignore[arg-type]
    return err.value.reason


def test_reusable_token_joins_many_times_until_its_ttl(
    store: TokenStore, orders: SpiffeId, now: datetime
) -> None:
    token = store.create(orders, 24 * 3600, reusable=True, now=now)
    for minutes in (1, 60, 23 * 60):
        assert store.redeem(token, orders, now=now + timedelta(minutes=minutes)) == orders
    [rec] = store.list()
    assert rec.reusable and rec.uses == 3
    assert _reason(store, token, now=now + timedelta(hours=24)) == "expired"


def test_reusable_token_stays_bound_to_its_identity(
    store: TokenStore, orders: SpiffeId, now: datetime
) -> None:
    token = store.create(orders, 3600, reusable=True, now=now)
    payments = SpiffeId.for_service(TD, "default", "payments")
    assert _reason(store, token, expected=payments, now=now) == "wrong-identity"
    assert store.list()[0].uses == 0


def test_one_time_is_the_default(store: TokenStore, orders: SpiffeId, now: datetime) -> None:
    token = store.create(orders, now=now)
    store.redeem(token, now=now)
    assert _reason(store, token, now=now) == "used"
    assert not store.list()[0].reusable


def test_revoked_token_is_refused_and_listed(
    store: TokenStore, orders: SpiffeId, now: datetime
) -> None:
    token = store.create(orders, 3600, reusable=True, now=now)
    store.redeem(token, now=now)
    token_id = token.split(".")[1]
    rec = store.revoke(token_id, now=now + timedelta(minutes=5))
    assert rec.revoked_at == now + timedelta(minutes=5)
    assert _reason(store, token, now=now + timedelta(minutes=6)) == "revoked"
    assert store.list()[0].revoked_at is not None  # kept, so a replay says "revoked"
    with pytest.raises(TokenError, match="no join token 'ffffffffffffffff'"):
        store.revoke("ffffffffffffffff")


def test_records_written_before_reusable_tokens_still_load(
    store: TokenStore, orders: SpiffeId, now: datetime
) -> None:
    import json

    token = store.create(orders, now=now)
    doc = json.loads(store.path.read_text())
    for rec in doc["tokens"].values():
        for key in ("reusable", "uses", "revoked_at"):
            del rec[key]
    store.path.write_text(json.dumps(doc))
    assert store.redeem(token, now=now) == orders
    assert _reason(store, token, now=now) == "used"
