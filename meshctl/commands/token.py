"""`meshctl token create SERVICE`: mint a one-time join token for one service identity."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from common.state import mesh_home
from meshctl.client import RegistryClient, RegistryError, RegistryUnavailable

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
    """Print a join string: a one-time token, the registry's addresses and the pin (SHA-256)
    of its CA certificate. Copy it to the new host; nothing else is needed there."""
    try:
        res = RegistryClient.from_home(mesh_home()).call(
            "POST", "/v1/tokens", {"service": service, "ttl_s": ttl}
        )
    except (RegistryUnavailable, RegistryError) as exc:
        typer.echo(f"meshctl token create: {exc}", err=True)
        raise typer.Exit(1) from None
    # The join string (token, registry addresses, CA pin): all a new host needs. A registry
    # from before join strings answers only the bare token.
    typer.echo(json.dumps(res) if output == "json" else res.get("join", res["token"]))
