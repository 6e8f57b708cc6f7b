"""The options every operator command takes to reach a registry on another host."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meshctl.client import RegistryClient
from meshctl.state import mesh_home

RegistryOpt = Annotated[str | None, typer.Option(
    "--registry", envvar="MESH_REGISTRY", show_default=False,
    help="The registry's URL, from another host (with --operator-token-file).")]
OperatorFileOpt = Annotated[Path | None, typer.Option(
    "--operator-token-file", envvar="MESH_OPERATOR_TOKEN_FILE", show_default=False,
    help="The operator credential file (`meshctl token operator` on the registry's host).")]


def client(registry: str | None, operator_file: Path | None) -> RegistryClient:
    """The registry these options name, else this host's (meshctl.client)."""
    return RegistryClient.resolve(mesh_home(), registry, operator_file)


def remote(registry: str | None, operator_file: Path | None) -> RegistryClient | None:
    """The registry named by these options, or None when neither is given (this host)."""
    return client(registry, operator_file) if registry or operator_file else None
