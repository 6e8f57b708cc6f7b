"""The options every operator command takes to reach a registry on another host."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.proxies import ProxyInfo
from common.state import mesh_home
from meshctl.client import RegistryClient, RegistryUnavailable
from meshctl.observe.remote import remote_proxies

RegistryOpt = Annotated[str | None, typer.Option(
    "--registry", envvar="MESH_REGISTRY", show_default=False,
    help="The registry's URL, from another host (with --operator-token-file).")]
OperatorFileOpt = Annotated[Path | None, typer.Option(
    "--operator-token-file", envvar="MESH_OPERATOR_TOKEN_FILE", show_default=False,
    help="The operator credential file (`meshctl token operator` on the registry's host).")]


def client(registry: str | None, operator_file: Path | None) -> RegistryClient:
    """The registry these options name, else this host's (meshctl.client)."""
    return RegistryClient.resolve(mesh_home(), registry, operator_file)


def named_client(command: str, registry: str | None, operator_file: Path | None
                 ) -> RegistryClient | None:
    """The registry these options name, None when neither is given (this host's); when it
    cannot be used, `meshctl COMMAND: why` and exit 1."""
    if not (registry or operator_file):
        return None
    try:
        return client(registry, operator_file)
    except RegistryUnavailable as exc:
        typer.echo(f"meshctl {command}: {exc}", err=True)
        raise typer.Exit(1) from None


def remote(registry: str | None, operator_file: Path | None) -> list[ProxyInfo] | None:
    """Every proxy of the mesh, read through the registry these options name, or None when
    neither is given (this host's proxies, from MESH_HOME)."""
    if not (registry or operator_file):
        return None
    return remote_proxies(client(registry, operator_file))
