"""The proxies of the whole mesh, on any host, read through the registry: the operator's
RegistryRelay (common.proxies.Relay) over the registry's relay (registry/server/relay.py),
for `stat`, `tap`, `top`, `proxy-config` and the dashboard from another host."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from common.proxies import TIMEOUT_S, ObserveError, ProxyInfo
from meshctl.client import RegistryClient, RegistryError, RegistryUnavailable

__all__ = ["RegistryRelay", "remote_proxies"]


@dataclass(frozen=True, slots=True)
class RegistryRelay:
    """A proxy's admin and metrics pages on another host, relayed by the registry
    (registry/server/relay.py) for the operator: common.proxies.Relay."""

    registry: RegistryClient

    def page(self, proxy_id: str, path: str, timeout: float) -> str:
        try:
            return self.registry.text(
                f"/v1/proxies/{urllib.parse.quote(proxy_id, safe='')}/admin?path="
                + urllib.parse.quote(path), timeout=timeout)
        except (RegistryUnavailable, RegistryError) as exc:
            raise ObserveError(f"proxy {proxy_id} (through the registry): {exc}") from None

    @contextmanager
    def stream(self, proxy_id: str, path: str, timeout: float) -> Iterator[IO[bytes]]:
        """A live admin stream (`/tap?...` only), relayed: NDJSON lines, then an `end` line
        saying why when the registry ends it (the proxy disconnected, its time is up)."""
        page, _, query = path.partition("?")
        if page != "/tap":
            raise ObserveError(f"only /tap streams are relayed, not {page}")
        try:
            resp = self.registry.open(
                f"/v1/proxies/{urllib.parse.quote(proxy_id, safe='')}/tap"
                + (f"?{query}" if query else ""), timeout=timeout)
        except (RegistryUnavailable, RegistryError) as exc:
            raise ObserveError(f"proxy {proxy_id} (through the registry): {exc}") from None
        try:
            yield resp
        finally:
            resp.close()


def remote_proxies(registry: RegistryClient) -> list[ProxyInfo]:
    """Every proxy connected to the registry, read through it."""
    try:
        st = registry.call("GET", "/v1/status", timeout=TIMEOUT_S)
    except (RegistryUnavailable, RegistryError) as exc:
        raise ObserveError(str(exc)) from None
    relay = RegistryRelay(registry)
    return [ProxyInfo(str(p["proxy_id"]), str(p.get("service") or "?"), None, "", "",
                      relay=relay)
            for p in sorted(st.get("proxies", []), key=lambda p: p["proxy_id"])
            if p.get("connected")]  # fmt: skip
