"""What the registry knows of each proxy: identity, config version in force, certificate.

A proxy reports only on itself. Rows are keyed by (identity, proxy id): the identity is the
SPIFFE ID of the caller's verified certificate (or `operator`), never a field of the
report, so a report can only ever touch rows of the caller's own identity. A report about
an id that another identity holds is refused (`NotYours`). Rows are bounded: a row with no
open stream expires (`expire`), and one identity holds at most `per_identity` rows without
a stream; past that its least recently seen one is dropped (issue 19, item 4: one
workload's certificate created 20,000 fake proxy ids that were never freed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

MAX_PROXIES_PER_IDENTITY = 256  # rows without an open stream, per identity
GONE_TTL_FACTOR = 10  # a proxy whose stream closed stays listed for 10 TTLs


@dataclass(frozen=True, slots=True)
class ProxyState:
    """The last word from one proxy: ACKed version, last NACK, certificate expiry, streams open."""

    proxy_id: str
    identity: str
    service: str
    acked_version: int = 0
    nacked_version: int = 0
    nack_error: str = ""
    cert_not_after: float = 0.0
    streams: int = 0
    last_seen: float = 0.0
    streamed: bool = False  # it opened a config stream once: a proxy, not only a report


class NotYours(Exception):
    """A report about a proxy id that another identity holds (answered 403)."""


Key = tuple[str, str]  # (identity, proxy id)


class ProxyTracker:
    """Proxies by (identity, id); `all()` is what status, `meshctl up` and the bench read."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        per_identity: int = MAX_PROXIES_PER_IDENTITY,
    ) -> None:
        self._clock = clock
        self._per_identity = per_identity
        self._proxies: dict[Key, ProxyState] = {}
        self._holders: dict[str, set[str]] = {}  # proxy id -> identities with a row for it
        self._idle: dict[str, int] = {}  # identity -> rows with no open stream

    # -- the table's bookkeeping: every write goes through _put / _drop ------------------

    def _put(self, st: ProxyState) -> None:
        key = (st.identity, st.proxy_id)
        old = self._proxies.get(key)
        if old is None:
            self._holders.setdefault(st.proxy_id, set()).add(st.identity)
        elif old.streams == 0:
            self._idle[st.identity] -= 1
        if st.streams == 0:
            self._idle[st.identity] = self._idle.get(st.identity, 0) + 1
        self._proxies[key] = st

    def _drop(self, key: Key) -> None:
        st = self._proxies.pop(key, None)
        if st is None:
            return
        holders = self._holders[st.proxy_id]
        holders.discard(st.identity)
        if not holders:
            del self._holders[st.proxy_id]
        if st.streams == 0:
            self._idle[st.identity] -= 1
            if not self._idle[st.identity]:
                del self._idle[st.identity]

    def _trim(self, identity: str) -> None:
        """Past the cap, drop `identity`'s least recently seen rows without a stream."""
        while self._idle.get(identity, 0) > self._per_identity:
            oldest = min(
                (p for (who, _), p in self._proxies.items() if who == identity and not p.streams),
                key=lambda p: p.last_seen,
            )
            self._drop((identity, oldest.proxy_id))

    def _row(self, proxy_id: str, identity: str, service: str) -> ProxyState:
        """The caller's row for `proxy_id`, new if need be; NotYours if another holds the id."""
        st = self._proxies.get((identity, proxy_id))
        if st is not None:
            return st
        others = self._holders.get(proxy_id, set()) - {identity}
        if others:
            raise NotYours(
                f"proxy `{proxy_id}` is {sorted(others)[0]}, and this certificate is "
                f"{identity}: a proxy may only report on itself"
            )
        return ProxyState(proxy_id=proxy_id, identity=identity, service=service)

    # -- reports ---------------------------------------------------------------------------

    def ack(
        self,
        proxy_id: str,
        identity: str,
        service: str,
        version: int,
        *,
        ok: bool,
        error: str = "",
        cert_not_after: float | None = None,
    ) -> ProxyState:
        """Record an ACK (ok) or NACK of `version` by the caller `identity` about `proxy_id`.

        Raises NotYours when another identity holds `proxy_id`.
        """
        old = self._row(proxy_id, identity, service)
        # One replace, not three: a push brings one ACK per proxy, all at once.
        st = replace(
            old,
            service=service,
            last_seen=self._clock(),
            acked_version=max(old.acked_version, version) if ok else old.acked_version,
            nacked_version=old.nacked_version if ok else version,
            nack_error=old.nack_error if ok else error[:2000],
            cert_not_after=old.cert_not_after if cert_not_after is None else cert_not_after,
        )
        self._put(st)
        self._trim(identity)
        return st

    def stream_opened(self, proxy_id: str, identity: str, service: str) -> None:
        """A config stream opened: the proxy itself. It takes over its id from stale rows.

        Rows of other identities for the same id that have no stream (a report-only row a
        workload made up before this proxy connected, or the proxy's earlier incarnation
        under another identity) are dropped; a row with a live stream stays (two live
        proxies with one id and two identities are both shown).
        """
        for other in self._holders.get(proxy_id, set()) - {identity}:
            if not self._proxies[(other, proxy_id)].streams:
                self._drop((other, proxy_id))
        st = self._proxies.get((identity, proxy_id))
        if st is None:  # a row with a stream: those are bounded by connections
            st = ProxyState(proxy_id=proxy_id, identity=identity, service=service)
        self._put(replace(st, service=service, streams=st.streams + 1, streamed=True,
                          last_seen=self._clock()))

    def stream_closed(self, proxy_id: str, identity: str) -> None:
        st = self._proxies.get((identity, proxy_id))
        if st is not None:
            self._put(replace(st, streams=max(0, st.streams - 1), last_seen=self._clock()))
            self._trim(identity)

    def expire(self, ttl_s: float) -> list[str]:
        """Drop rows with no stream: report-only rows after `ttl_s` without a report, proxies
        whose stream closed after GONE_TTL_FACTOR x `ttl_s`. Returns the dropped ids."""
        now = self._clock()
        gone = [
            key for key, st in self._proxies.items()
            if not st.streams
            and now - st.last_seen > (ttl_s * GONE_TTL_FACTOR if st.streamed else ttl_s)
        ]
        for key in gone:
            self._drop(key)
        return [proxy_id for _, proxy_id in gone]

    def elsewhere(self) -> list[dict[str, Any]]:
        """Proxies connected to other registry replicas (registry/store/proxies.py)."""
        return []

    def all(self) -> list[ProxyState]:
        return sorted(self._proxies.values(), key=lambda p: (p.service, p.proxy_id, p.identity))

    def __len__(self) -> int:
        return len(self._proxies)

    def connected(self) -> int:
        return sum(1 for p in self._proxies.values() if p.streams > 0)
