"""`meshctl token create SERVICE`: mint a one-time join token for one service identity."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from meshctl.client import RegistryClient, RegistryError, RegistryUnavailable
from meshctl.state import mesh_home

app = typer.Typer(
    help="Join tokens: one-time, expiring, bound to exactly one service identity.",
    no_args_is_help=True,
)


@app.command("create")
def create(
    service: Annotated[str, typer.Argument(help="The service the token's holder will be.")],
    ttl: Annotated[float, typer.Option(help="Seconds until the token expires.")] = 3600,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Mint a join token through the running registry (the operator credential is in MESH_HOME)."""
    try:
        res = RegistryClient.from_home(mesh_home()).call(
            "POST", "/v1/tokens", {"service": service, "ttl_s": ttl}
        )
    except (RegistryUnavailable, RegistryError) as exc:
        typer.echo(f"meshctl token create: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(res) if output == "json" else res["token"])
