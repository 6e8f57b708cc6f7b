"""Join tokens, each bound to one SPIFFE ID; only their SHA-256 is stored.

One-time by default; a reusable one (`meshctl token create --reusable --ttl 24h`, for an
autoscaling group, as Kuma's) may be redeemed until it expires or is revoked, and counts
its uses. Either kind is still bound to exactly one identity.

A token is `mtok.<id>.<secret>`: the id (16 hex) names the record and may be logged; the
secret (32 random bytes, URL-safe base64) is shown once, at creation, and never stored.
A secret of 256 random bits needs no slow password hash: SHA-256 cannot be reversed.

Every operation reloads the file, changes it and writes it back atomically, under a thread
lock and an flock on `<file>.lock`, so `meshctl token create` in another process and the
running registry do not overwrite each other. A redeemed token is marked used on disk
before `redeem` returns: a crash cannot let it be used twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common.state import atomic_write
from registry.ca.spiffe import SpiffeId

PREFIX = "mtok"
DEFAULT_TOKEN_TTL_S = 3600.0
_TOKEN_RE = re.compile(r"mtok\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")
_FORMAT_VERSION = 1


class TokenError(ValueError):
    """A join token was refused. `reason` is a stable code; the message is for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What is stored about a token: never the secret, only its SHA-256."""

    token_id: str
    secret_sha256: str
    identity: SpiffeId
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None  # the last use
    reusable: bool = False
    uses: int = 0
    revoked_at: datetime | None = None

    @property
    def used(self) -> bool:
        return self.used_at is not None

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        return {
            "secret_sha256": self.secret_sha256,
            "identity": str(self.identity),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "used_at": self.used_at.isoformat() if self.used_at else None,
            "reusable": self.reusable,
            "uses": self.uses,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }

    @classmethod
    def from_json(cls, token_id: str, d: dict[str, Any]) -> TokenRecord:
        used, revoked = d.get("used_at"), d.get("revoked_at")
        return cls(
            token_id=token_id,
            secret_sha256=str(d["secret_sha256"]),
            identity=SpiffeId.parse(str(d["identity"])),
            created_at=datetime.fromisoformat(str(d["created_at"])),
            expires_at=datetime.fromisoformat(str(d["expires_at"])),
            used_at=datetime.fromisoformat(str(used)) if used else None,
            reusable=bool(d.get("reusable", False)),
            uses=int(d.get("uses", 1 if used else 0)),
            revoked_at=datetime.fromisoformat(str(revoked)) if revoked else None,
        )


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware (datetime.now(UTC))")
    return now


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """The join tokens of one registry, persisted in a JSON file (mode 0600)."""

    __slots__ = ("_lock", "_lock_path", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._lock = threading.Lock()

    # -- persistence ---------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[dict[str, TokenRecord]]:
        """Hold both locks; yield the records as on disk. The caller saves what it changes."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._lock_path, "a") as lf:
                fcntl.flock(lf.fileno(), fcntl.LOCK_EX)
                try:
                    yield self._read()
                finally:
                    fcntl.flock(lf.fileno(), fcntl.LOCK_UN)

    def _read(self) -> dict[str, TokenRecord]:
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(raw)
            return {tid: TokenRecord.from_json(tid, d) for tid, d in doc["tokens"].items()}
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{self.path}: the token store is corrupt ({e}); move it away to start empty "
                "(outstanding tokens are then lost and must be re-created)"
            ) from None

    def _write(self, records: dict[str, TokenRecord]) -> None:
        doc = {
            "version": _FORMAT_VERSION,
            "tokens": {tid: r.to_json() for tid, r in sorted(records.items())},
        }
        atomic_write(self.path, json.dumps(doc, indent=2) + "\n", 0o600)

    # -- operations ----------------------------------------------------------------------

    def create(
        self,
        identity: SpiffeId,
        ttl_s: float = DEFAULT_TOKEN_TTL_S,
        *,
        reusable: bool = False,
        now: datetime | None = None,
    ) -> str:
        """Mint a token for `identity`, valid `ttl_s` seconds (one-time unless `reusable`).
        The only copy of the secret."""
        with self._locked() as records:
            token_id = secrets.token_hex(8)
            while token_id in records:  # 64 bits: a collision is a curiosity, not a risk
                token_id = secrets.token_hex(8)
            records[token_id], token = mint(token_id, identity, ttl_s, reusable=reusable,
                                            now=now)  # fmt: skip
            self._write(records)
        return token

    def redeem(
        self,
        token: str,
        expected: SpiffeId | None = None,
        *,
        now: datetime | None = None,
    ) -> SpiffeId:
        """Spend `token` and return its identity, or raise TokenError saying why not.

        A token for another identity than `expected` is refused and left unspent: the
        holder did nothing with it, and its rightful owner may still join.
        """
        token_id, secret = parse(token)
        with self._locked() as records:
            records[token_id] = spend(records.get(token_id), token_id, secret, expected, now)
            self._write(records)
        return records[token_id].identity

    def revoke(self, token_id: str, *, now: datetime | None = None) -> TokenRecord:
        """Refuse every later use of token `token_id` (its id, as `token list` shows it).
        SVIDs already issued with it stay valid until they expire (short lifetimes)."""
        t = _utc(now)
        with self._locked() as records:
            rec = records.get(token_id)
            if rec is None:
                known = ", ".join(sorted(records)) or "none"
                raise TokenError("unknown", f"no join token {token_id!r} (known: {known})")
            if rec.revoked_at is None:
                rec = records[token_id] = replace(rec, revoked_at=t)
                self._write(records)
        return rec

    def list(self) -> list[TokenRecord]:
        """Every stored token, oldest first (for `meshctl token list` and status)."""
        with self._locked() as records:
            return sorted(records.values(), key=lambda r: (r.created_at, r.token_id))

    def purge_expired(self, *, now: datetime | None = None) -> int:
        """Drop expired tokens, used or not; return how many. Used live ones stay, so a
        replay still gets "already used" rather than "unknown"."""
        t = _utc(now)
        with self._locked() as records:
            keep = {tid: r for tid, r in records.items() if not r.expired(t)}
            removed = len(records) - len(keep)
            if removed:
                self._write(keep)
        return removed


def mint(token_id: str, identity: SpiffeId, ttl_s: float, *, reusable: bool = False,
         now: datetime | None = None) -> tuple[TokenRecord, str]:  # fmt: skip
    """A new token's record and the token itself (the only copy of its secret)."""
    if not identity.is_workload:
        raise ValueError(f"a join token needs a workload identity with a path, not {identity}")
    if not ttl_s > 0:
        raise ValueError(f"join token lifetime must be positive, got {ttl_s} s")
    t = _utc(now)
    secret = secrets.token_urlsafe(32)
    rec = TokenRecord(
        token_id=token_id,
        secret_sha256=_digest(secret),
        identity=identity,
        created_at=t,
        expires_at=t + timedelta(seconds=ttl_s),
        reusable=reusable,
    )
    return rec, f"{PREFIX}.{token_id}.{secret}"


def parse(token: str) -> tuple[str, str]:
    """(token id, secret) of a well-formed token, or TokenError("malformed")."""
    m = _TOKEN_RE.fullmatch(token.strip()) if isinstance(token, str) else None
    if m is None:
        # Never echo the token: a mistyped one is still mostly a secret.
        raise TokenError(
            "malformed", "malformed join token: expected mtok.<16 hex id>.<43-char secret>"
        )
    return m.group(1), m.group(2)


def spend(rec: TokenRecord | None, token_id: str, secret: str, expected: SpiffeId | None,
          now: datetime | None = None) -> TokenRecord:  # fmt: skip
    """The record once `secret` is spent on it, or TokenError saying why it may not be.
    Pure: the store (a file here, etcd in registry/store/tokens.py) writes the result."""
    t = _utc(now)
    if rec is None:
        raise TokenError(
            "unknown",
            f"unknown join token {token_id}: never issued by this registry, or purged "
            "after it expired; create a new one with `meshctl token create`",
        )
    if not hmac.compare_digest(rec.secret_sha256, _digest(secret)):
        raise TokenError(
            "forged",
            f"join token {token_id}: the secret does not match (forged or mistyped)",
        )
    if rec.revoked_at is not None:
        raise TokenError(
            "revoked",
            f"join token {token_id} was revoked at {rec.revoked_at.isoformat()}; "
            "create a new one",
        )
    if rec.used_at is not None and not rec.reusable:
        raise TokenError(
            "used",
            f"join token {token_id} was already used at {rec.used_at.isoformat()}; "
            "tokens are single-use: create a new one",
        )
    if rec.expired(t):
        raise TokenError(
            "expired",
            f"join token {token_id} expired at {rec.expires_at.isoformat()}; "
            "create a new one",
        )
    if expected is not None and expected != rec.identity:
        raise TokenError(
            "wrong-identity",
            f"join token {token_id} was minted for {rec.identity}, not {expected}",
        )
    return replace(rec, used_at=t, uses=rec.uses + 1)
