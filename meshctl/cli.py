"""The `meshctl` command: one Typer app; each command group lives in meshctl.commands."""

from __future__ import annotations

import typer

from meshctl import __version__
from meshctl.commands import (
    check,
    down,
    image,
    intercept,
    proxy,
    proxy_config,
    route,
    stat,
    status,
    systemd,
    tap,
    token,
    top,
    up,
    why,
)
from meshctl.commands.registry import registry
from meshctl.commands.validate import validate

app = typer.Typer(
    name="meshctl",
    help="A service mesh for Docker hosts and VMs: mTLS, retries, timeouts, circuit breaking, "
    "traffic shifting and telemetry, with no Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"meshctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """meshctl: a service mesh for Docker hosts and VMs."""


app.command()(up.up)
app.command()(down.down)
app.command()(status.status)
app.command()(validate)
app.command()(stat.stat)
app.command()(top.top)
app.command()(tap.tap)
app.command()(check.check)
app.command(name="proxy-config")(proxy_config.proxy_config)
app.command()(why.why)
app.command()(registry)
app.command()(proxy.proxy)
app.add_typer(token.app, name="token")
app.add_typer(route.app, name="route")
app.add_typer(intercept.app, name="intercept")
app.add_typer(image.app, name="image")
app.add_typer(systemd.app, name="systemd")


def main() -> None:
    app()
