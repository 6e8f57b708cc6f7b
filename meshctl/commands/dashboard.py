"""`meshctl dashboard`: serve the live service graph on 127.0.0.1 (see docs/dashboard.md)."""

from __future__ import annotations

import asyncio
import contextlib
import webbrowser
from typing import Annotated

import typer
from aiohttp import web

from common.aio import spawn
from common.state import mesh_home
from meshctl.commands.remote import OperatorFileOpt, RegistryOpt, named_client
from meshctl.dashboard.server import Dashboard, is_loopback
from registry.paths import RegistryPaths, read_operator_token

__all__ = ["dashboard"]


def dashboard(
    listen: Annotated[str, typer.Option(
        help="HOST:PORT to serve on; beyond loopback the operator credential is required.")
    ] = "127.0.0.1:9901",
    browser: Annotated[bool, typer.Option(
        "--browser/--no-browser", help="Open the page in a browser when there is one.")] = True,
    prometheus: Annotated[str | None, typer.Option(
        help="http://HOST:PORT of a Prometheus scraping the proxies: the graph's rates over "
             "the window from it (PromQL) instead of the dashboard's own scrapes.")] = None,
    registry: RegistryOpt = None,
    operator_token_file: OperatorFileOpt = None,
) -> None:
    """A live web picture of the mesh: services and versions, caller -> callee edges with
    requests/s, success rate, p50/p99, traffic share and mTLS, from the proxies' metrics; per
    service its endpoints, proxies, route (as `meshctl why`), last config error and live
    requests (`tap`). This host's proxies; from another host (--registry /
    --operator-token-file) every proxy of the mesh, read through the registry."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536 or not host:
        typer.echo(f"meshctl dashboard: --listen `{listen}` is not HOST:PORT", err=True)
        raise typer.Exit(1)
    if prometheus is not None and not prometheus.startswith(("http://", "https://")):
        typer.echo(f"meshctl dashboard: --prometheus `{prometheus}` is not an http(s):// URL",
                   err=True)
        raise typer.Exit(1)
    home = mesh_home()
    token = None
    remote = named_client("dashboard", registry, operator_token_file)
    if remote is not None:
        token = None if is_loopback(host) else remote.token
    elif not is_loopback(host):
        try:
            token = read_operator_token(RegistryPaths(home / "registry"))
        except OSError as exc:
            typer.echo(f"meshctl dashboard: serving on {host} needs the operator credential, "
                       f"which cannot be read ({exc}): run as the mesh's operator", err=True)
            raise typer.Exit(1) from None
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port_text}/"
    with contextlib.suppress(KeyboardInterrupt):
        board = Dashboard(home, token, prometheus=prometheus, registry=remote)
        asyncio.run(_serve(board, host.strip("[]"), int(port_text), url, browser))


async def _serve(board: Dashboard, host: str, port: int, url: str, browser: bool) -> None:
    runner = web.AppRunner(board.app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        typer.echo(f"meshctl dashboard: cannot listen on {host}:{port}: {exc.strerror or exc}",
                   err=True)
        raise typer.Exit(1) from None
    collecting = spawn(board.collect(), name="scrape")
    typer.echo(f"dashboard on {url}" + ("  (open with ?token=<operator token>)"
                                         if board.token else ""), err=False)
    if browser:
        with contextlib.suppress(webbrowser.Error):
            webbrowser.open(url)
    try:
        await asyncio.Event().wait()
    finally:
        collecting.cancel()
        await runner.cleanup()
