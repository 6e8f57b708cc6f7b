"""The `meshctl` command: one Typer app; each command group lives in meshctl.commands.

The app is built on first use (`meshctl.cli.app`), not on import: `meshctl proxy ...` runs
a sidecar for a workload's whole life, and goes straight to proxy/run.py without Typer and
Rich, which would cost every sidecar ~15 MiB of RSS.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer


def build() -> typer.Typer:
    """The `meshctl` Typer app with every command."""
    import typer

    from meshctl import __version__
    from meshctl.commands import (
        check,
        dashboard,
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
        vip,
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
            from proxy.compiled import STATUS

            typer.echo(f"meshctl {__version__}\nproxy core: {STATUS}")
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
    app.command()(vip.vip)
    app.command()(vip.hosts)
    app.command()(dashboard.dashboard)
    app.command()(registry)
    app.command()(proxy.proxy)
    app.add_typer(token.app, name="token")
    app.add_typer(route.app, name="route")
    app.add_typer(intercept.app, name="intercept")
    app.add_typer(image.app, name="image")
    app.add_typer(systemd.app, name="systemd")
    return app


_app: typer.Typer | None = None


def __getattr__(name: str) -> Any:
    """`meshctl.cli.app`, built once when first asked for."""
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _app = build()
    return _app


def main() -> None:
    if sys.argv[1:2] == ["proxy"]:
        from proxy.run import main as run_proxy

        run_proxy(sys.argv[2:], lambda args: __getattr__("app")(args=["proxy", *args]))
        return
    __getattr__("app")()
