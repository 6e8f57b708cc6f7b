"""What the registry knows of each proxy: identity, config version in force, certificate."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace


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


class ProxyTracker:
    """Proxies by id; `all_acked(v)` is what `meshctl up` and the push benchmark wait for."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._proxies: dict[str, ProxyState] = {}

    def _get(self, proxy_id: str, identity: str, service: str) -> ProxyState:
        st = self._proxies.get(proxy_id)
        if st is None:
            st = ProxyState(proxy_id=proxy_id, identity=identity, service=service)
        return replace(st, identity=identity, service=service, last_seen=self._clock())

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
        old = self._proxies.get(proxy_id)
        if old is None:
            old = ProxyState(proxy_id=proxy_id, identity=identity, service=service)
        # One replace, not three: a push brings one ACK per proxy, all at once.
        st = replace(
            old,
            identity=identity,
            service=service,
            last_seen=self._clock(),
            acked_version=max(old.acked_version, version) if ok else old.acked_version,
            nacked_version=old.nacked_version if ok else version,
            nack_error=old.nack_error if ok else error[:2000],
            cert_not_after=old.cert_not_after if cert_not_after is None else cert_not_after,
        )
        self._proxies[proxy_id] = st
        return st

    def stream_opened(self, proxy_id: str, identity: str, service: str) -> None:
        st = self._get(proxy_id, identity, service)
        self._proxies[proxy_id] = replace(st, streams=st.streams + 1)

    def stream_closed(self, proxy_id: str) -> None:
        st = self._proxies.get(proxy_id)
        if st is not None:
            self._proxies[proxy_id] = replace(
                st, streams=max(0, st.streams - 1), last_seen=self._clock()
            )

    def forget(self, proxy_id: str) -> None:
        self._proxies.pop(proxy_id, None)

    def all(self) -> list[ProxyState]:
        return sorted(self._proxies.values(), key=lambda p: (p.service, p.proxy_id))

    def connected(self) -> int:
        return sum(1 for p in self._proxies.values() if p.streams > 0)
