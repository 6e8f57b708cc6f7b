"""TokenStore: one-time join tokens, and every way of abusing one."""

from __future__ import annotations

import json
import stat
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from registry.ca.spiffe import SpiffeId
from registry.ca.tokens import TokenError, TokenStore
from tests.registry.ca.conftest import TD


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "state" / "tokens.json")


def _refused(store: TokenStore, token: str, **kw: object) -> TokenError:
    with pytest.raises(TokenError) as err:
        store.redeem(token, **kw)  # type: ignore[arg-type]
    return err.value


def test_create_and_redeem(store: TokenStore, orders: SpiffeId, now: datetime) -> None:
    token = store.create(orders, now=now)
    prefix, token_id, secret = token.split(".")
    assert prefix == "mtok" and len(token_id) == 16 and len(secret) == 43
    assert store.redeem(token, orders, now=now + timedelta(minutes=59)) == orders
    [rec] = store.list()
    assert rec.used and rec.token_id == token_id and rec.identity == orders


def test_file_holds_only_a_hash_and_is_private(
    store: TokenStore, orders: SpiffeId, now: datetime
) -> None:
    token = store.create(orders, now=now)
    secret = token.split(".")[2]
    text = store.path.read_text()
    assert secret not in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    doc = json.loads(text)
    assert doc["version"] == 1
    [(tid, rec)] = doc["tokens"].items()
    assert tid == token.split(".")[1] and rec["identity"] == str(orders)


def test_every_abuse_gets_its_own_reason_and_message(
    store: TokenStore, orders: SpiffeId, now: datetime
) -> None:
    reused = store.create(orders, now=now)
    store.redeem(reused, now=now)
    expired = store.create(orders, 60, now=now)
    live = store.create(orders, now=now)
    tid = live.split(".")[1]
    forged = f"mtok.{tid}.{'A' * 43}"
    unknown = f"mtok.{'0' * 16}.{live.split('.')[2]}"
    later = now + timedelta(seconds=61)
    other = SpiffeId.for_service(TD, "default", "payments")
    cases = {
        "used": _refused(store, reused, now=later),
        "expired": _refused(store, expired, now=later),
        "forged": _refused(store, forged, now=later),
        "unknown": _refused(store, unknown, now=later),
        "malformed": _refused(store, "mtok.nope", now=later),
        "wrong-identity": _refused(store, live, expected=other, now=later),
    }
    for reason, err in cases.items():
        assert err.reason == reason
    messages = {str(e) for e in cases.values()}
    assert len(messages) == len(cases)
    assert "already used" in str(cases["used"])
    assert "expired at" in str(cases["expired"])
    assert "secret does not match" in str(cases["forged"])
    assert "unknown join token 0000000000000000" in str(cases["unknown"])
    assert "malformed join token" in str(cases["malformed"])
    assert str(cases["wrong-identity"]) == f"join token {tid} was minted for {orders}, not {other}"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "mtok",
        "mtok..",
        "xtok.0123456789abcdef." + "a" * 43,
        "mtok.0123456789ABCDEF." + "a" * 43,  # id is lowercase hex
        "mtok.0123456789abcdef." + "a" * 42,
        "mtok.0123456789abcdef." + "a" * 43 + ".x",
        "mtok.0123456789abcdef." + "a" * 42 + "=",
        "mtok.0123456789abcdef." + "a" * 42 + "/",
    ],
)
def test_malformed_tokens(store: TokenStore, token: str) -> None:
    err = _refused(store, token)
    assert err.reason == "malformed"
    assert "a" * 20 not in str(err)  # a mistyped token is still mostly a secret


def test_secret_is_never_echoed(store: TokenStore, orders: SpiffeId) -> None:
    token = store.create(orders)
    wrong = token[:-1] + ("B" if token[-1] != "B" else "C")
    err = _refused(store, wrong)
    assert err.reason == "forged"
    assert token.split(".")[2][:-1] not in str(err)


def test_wrong_identity_leaves_the_token_unspent(
    store: TokenStore, orders: SpiffeId, now: datetime
) -> None:
    token = store.create(orders, now=now)
    other = SpiffeId.for_service(TD, "default", "payments")
    assert _refused(store, token, expected=other, now=now).reason == "wrong-identity"
    assert store.redeem(token, orders, now=now) == orders


def test_used_mark_survives_a_new_store(store: TokenStore, orders: SpiffeId, now: datetime) -> None:
    token = store.create(orders, now=now)
    store.redeem(token, now=now)
    again = TokenStore(store.path)
    assert _refused(again, token, now=now).reason == "used"


def test_two_stores_on_one_file_keep_each_others_tokens(
    store: TokenStore, orders: SpiffeId
) -> None:
    # The CLI (`meshctl token create`) and the running registry are separate processes.
    cli = TokenStore(store.path)
    t1 = store.create(orders)
    t2 = cli.create(orders)
    t3 = store.create(orders)
    assert len(cli.list()) == 3
    for t in (t1, t2, t3):
        assert cli.redeem(t) == orders


def test_concurrent_redeem_succeeds_once(store: TokenStore, orders: SpiffeId) -> None:
    token = store.create(orders)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait(timeout=10)
        try:
            store.redeem(token)
            results.append("ok")
        except TokenError as e:
            results.append(e.reason)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive(), "a redeem did not return within 10 s"
    assert sorted(results) == ["ok"] + ["used"] * 7


def test_purge_expired(store: TokenStore, orders: SpiffeId, now: datetime) -> None:
    short = store.create(orders, 60, now=now)
    store.create(orders, 3600, now=now)
    spent = store.create(orders, 3600, now=now)
    store.redeem(spent, now=now)
    assert store.purge_expired(now=now + timedelta(minutes=5)) == 1
    assert len(store.list()) == 2
    assert _refused(store, short, now=now).reason == "unknown"
    assert _refused(store, spent, now=now).reason == "used"  # kept until it expires
    assert store.purge_expired(now=now + timedelta(hours=2)) == 2
    assert store.list() == []


def test_create_refuses_bad_input(store: TokenStore, orders: SpiffeId) -> None:
    with pytest.raises(ValueError, match="workload identity"):
        store.create(SpiffeId.for_trust_domain(TD))
    with pytest.raises(ValueError, match="lifetime must be positive"):
        store.create(orders, 0)


def test_corrupt_file_is_a_clear_error(store: TokenStore, orders: SpiffeId) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json")
    with pytest.raises(ValueError, match="token store is corrupt"):
        store.create(orders)


# --- reusable tokens (`token create --reusable --ttl 24h`), revocation ------------------


def test_reusable_token_joins_many_times_until_its_ttl(
    store: TokenStore, orders: SpiffeId, now: datetime
) -> None:
    token = store.create(orders, 24 * 3600, reusable=True, now=now)
    for minutes in (1, 60, 23 * 60):
        assert store.redeem(token, orders, now=now + timedelta(minutes=minutes)) == orders
    [rec] = store.list()
    assert rec.reusable and rec.uses == 3
    assert _refused(store, token, now=now + timedelta(hours=24)).reason == "expired"


def test_reusable_token_stays_bound_to_its_identity(
    store: TokenStore, orders: SpiffeId, now: datetime
) -> None:
    token = store.create(orders, 3600, reusable=True, now=now)
    payments = SpiffeId.for_service(TD, "default", "payments")
    assert _refused(store, token, expected=payments, now=now).reason == "wrong-identity"
    assert store.list()[0].uses == 0


def test_one_time_is_the_default(store: TokenStore, orders: SpiffeId, now: datetime) -> None:
    token = store.create(orders, now=now)
    store.redeem(token, now=now)
    assert _refused(store, token, now=now).reason == "used"
    assert not store.list()[0].reusable


def test_revoked_token_is_refused_and_listed(
    store: TokenStore, orders: SpiffeId, now: datetime
) -> None:
    token = store.create(orders, 3600, reusable=True, now=now)
    store.redeem(token, now=now)
    token_id = token.split(".")[1]
    rec = store.revoke(token_id, now=now + timedelta(minutes=5))
    assert rec.revoked_at == now + timedelta(minutes=5)
    assert _refused(store, token, now=now + timedelta(minutes=6)).reason == "revoked"
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
    assert _refused(store, token, now=now).reason == "used"
