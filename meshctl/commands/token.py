"""`meshctl token create|list|revoke|operator`: join tokens and the operator credential."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from meshctl.client import RegistryError, RegistryUnavailable
from meshctl.commands.remote import OperatorFileOpt, RegistryOpt, client
from registry.config.duration import parse_duration

app = typer.Typer(
    help="Join tokens: bound to exactly one service identity, expiring, one-time by default.",
    no_args_is_help=True,
)


def _call(command: str, registry: str | None, operator_file: Any, method: str, path: str,
          body: dict[str, Any] | None = None) -> Any:
    try:
        return client(registry, operator_file).call(method, path, body)
    except (RegistryUnavailable, RegistryError) as exc:
        typer.echo(f"meshctl token {command}: {exc}", err=True)
        raise typer.Exit(1) from None


def _seconds(value: str) -> float:
    """`3600`, `90s`, `30m`, `24h` (Istio durations; a bare number is seconds)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r}: {exc} (e.g. 3600, 30m, 24h)") from None


@app.command("create")
def create(
    services: Annotated[list[str], typer.Argument(
        metavar="SERVICE...", help="The service(s); one join string per service, one a line.")],
    ttl: Annotated[str, typer.Option(help="How long the token may be used: 3600, 30m, 24h.")]
    = "1h",
    reusable: Annotated[bool, typer.Option(
        "--reusable", help="Usable by many proxies of the service until it expires or is "
        "revoked (an autoscaling group); default: one-time.")] = False,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
    registry: RegistryOpt = None,
    operator_token_file: OperatorFileOpt = None,
) -> None:
    """Print a join string per service: a token bound to that service, the registry's
    addresses and the pin (SHA-256) of its CA certificate. Copy it to the new host; nothing
    else is needed there (`meshctl up PATH --join FILE` takes a file of several)."""
    ttl_s = _seconds(ttl)
    for service in services:
        res = _call("create", registry, operator_token_file, "POST", "/v1/tokens",
                    {"service": service, "ttl_s": ttl_s, "reusable": reusable})
        # A registry from before join strings answers only the bare token.
        typer.echo(json.dumps(res) if output == "json" else res.get("join", res["token"]))


@app.command("list")
def list_(
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
    registry: RegistryOpt = None,
    operator_token_file: OperatorFileOpt = None,
) -> None:
    """Every token the registry holds (never a secret): id, service, kind, uses, state."""
    tokens = _call("list", registry, operator_token_file, "GET", "/v1/tokens")["tokens"]
    if output == "json":
        typer.echo(json.dumps(tokens))
        return
    now = time.time()
    typer.echo(f"{'ID':<17} {'SERVICE':<20} {'KIND':<9} {'USES':>4}  {'EXPIRES (UTC)':<20} STATE")
    for t in tokens:
        state = ("revoked" if t["revoked_at"] else "expired" if t["expires_at"] <= now
                 else "used" if t["uses"] and not t["reusable"] else "valid")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t["expires_at"]))
        kind = "reusable" if t["reusable"] else "one-time"
        typer.echo(f"{t['token_id']:<17} {t['service'] or '?':<20} {kind:<9} "
                   f"{t['uses']:>4}  {stamp:<20} {state}")


@app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (`meshctl token list`).")],
    registry: RegistryOpt = None,
    operator_token_file: OperatorFileOpt = None,
) -> None:
    """Refuse every later use of a token. Proxies that joined with it keep their SVIDs until
    those expire (short lifetimes play the part of revocation, as in Istio)."""
    _call("revoke", registry, operator_token_file, "DELETE", f"/v1/tokens/{token_id}")
    typer.echo(f"revoked {token_id}")


@app.command("operator")
def operator(
    registry: RegistryOpt = None,
    operator_token_file: OperatorFileOpt = None,
) -> None:
    """Print the operator credential for another host: the operator token with the
    registry's addresses and CA pin. Whoever holds it controls the mesh: write it to a 0600
    file (`umask 077; meshctl token operator > op.token`) and copy it over ssh only."""
    typer.echo(_call("operator", registry, operator_token_file, "GET", "/v1/operator")["operator"])
