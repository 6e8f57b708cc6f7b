"""The options every operator command takes to reach a registry on another host."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated

import typer

from common.proxies import TIMEOUT_S, ObserveError, ProxyInfo
from common.state import mesh_home
from meshctl.client import RegistryClient, RegistryError, RegistryUnavailable

RegistryOpt = Annotated[str | None, typer.Option(
    "--registry", envvar="MESH_REGISTRY", show_default=False,
    help="The registry's URL, from another host (with --operator-token-file).")]
OperatorFileOpt = Annotated[Path | None, typer.Option(
    "--operator-token-file", envvar="MESH_OPERATOR_TOKEN_FILE", show_default=False,
    help="The operator credential file (`meshctl token operator` on the registry's host).")]


def client(registry: str | None, operator_file: Path | None) -> RegistryClient:
    """The registry these options name, else this host's (meshctl.client)."""
    return RegistryClient.resolve(mesh_home(), registry, operator_file)


def remote(registry: str | None, operator_file: Path | None) -> list[ProxyInfo] | None:
    """Every proxy of the mesh, read through the registry these options name, or None when
    neither is given (this host's proxies, from MESH_HOME)."""
    if not (registry or operator_file):
        return None
    return remote_proxies(client(registry, operator_file))


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
