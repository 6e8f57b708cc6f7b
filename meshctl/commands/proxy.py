"""`meshctl proxy`: run one sidecar for one workload (also `python -m proxy`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from meshctl.state import mesh_home

app = typer.Typer(add_completion=False)


def _hostport(value: str, default_host: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise typer.BadParameter(f"`{value}` is not HOST:PORT or PORT")
    return (host or default_host), int(port)


@app.command()
def proxy(
    service: Annotated[str, typer.Option(help="The service this proxy stands beside.")],
    registry: Annotated[
        str,
        typer.Option(help="Registry URL, e.g. https://127.0.0.1:15012.", envvar="MESH_REGISTRY"),
    ],
    token_file: Annotated[
        Path,
        typer.Option(help="File holding the one-time join token.", exists=True, dir_okay=False),
    ],
    ca_file: Annotated[
        Path | None,
        typer.Option(
            help="The mesh's root certificate (trust for the registry). Default: MESH_HOME's."
        ),
    ] = None,
    version: Annotated[str | None, typer.Option(help="The workload's version label.")] = None,
    advertise: Annotated[
        str, typer.Option(help="Address peers use to reach this proxy.")
    ] = "127.0.0.1",
    inbound: Annotated[
        str, typer.Option(help="Inbound mTLS listener HOST:PORT.")
    ] = "0.0.0.0:15006",
    outbound: Annotated[
        str | None,
        typer.Option(
            help="Transparent outbound listener HOST:PORT (iptables mode), e.g. 127.0.0.1:15001."
        ),
    ] = None,
    upstream: Annotated[
        list[str], typer.Option(help="Explicit mode: SERVICE:PORT=[HOST:]LOCALPORT (repeatable).")
    ] = [],  # noqa: B006
    app_addr: Annotated[
        list[str],
        typer.Option(
            "--app",
            help="Where the app listens for a service "
            "port: PORT=HOST:PORT (default 127.0.0.1:PORT).",
        ),
    ] = [],  # noqa: B006
    admin: Annotated[str, typer.Option(help="Admin listener (localhost).")] = "127.0.0.1:15000",
    metrics: Annotated[str, typer.Option(help="Prometheus listener.")] = "0.0.0.0:15090",
    proxy_id: Annotated[str, typer.Option(help="Stable id of this proxy (default: derived).")] = "",
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a request head may take to arrive (slow loris).")
    ] = 60.0,
    max_connections: Annotated[
        int, typer.Option(help="Open downstream connections before new ones are refused.")
    ] = 10_000,
    trace_sampling: Annotated[
        float,
        typer.Option(min=0.0, max=100.0, envvar="MESH_TRACE_SAMPLING",
                     help="Percentage of new traces sampled (a caller's decision is kept)."),
    ] = 0.0,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(envvar="MESH_OTLP_ENDPOINT",
                     help="OTLP/HTTP collector for spans, e.g. http://127.0.0.1:4318."),
    ] = None,
    drain: Annotated[
        float, typer.Option(help="Seconds in-flight requests get to finish on SIGTERM.")
    ] = 5.0,
) -> None:
    """Run a sidecar proxy: join the registry, follow its config, serve mTLS traffic."""
    from proxy.main import Proxy, ProxyOptions, Upstream

    ups = []
    for u in upstream:
        left, _, right = u.partition("=")
        svc, _, port = left.partition(":")
        if not (svc and port.isdigit() and right):
            raise typer.BadParameter(f"--upstream `{u}`: expected SERVICE:PORT=[HOST:]LOCALPORT")
        host, lport = _hostport(right, "127.0.0.1")
        ups.append(Upstream(svc, int(port), host, lport))
    apps = {}
    for a in app_addr:
        port, _, target = a.partition("=")
        if not port.isdigit():
            raise typer.BadParameter(f"--app `{a}`: expected PORT=HOST:PORT")
        apps[int(port)] = _hostport(target, "127.0.0.1")
    home = mesh_home() / "proxies" / (proxy_id or service)
    opts = ProxyOptions(
        registry_url=registry,
        ca_file=ca_file or mesh_home() / "registry" / "ca" / "ca.crt",
        token=token_file.read_text().strip(),
        service=service,
        home=home,
        version=version,
        advertise=advertise,
        inbound=_hostport(inbound, "0.0.0.0"),
        outbound=_hostport(outbound, "127.0.0.1") if outbound else None,
        upstreams=tuple(ups),
        apps=apps,
        admin=_hostport(admin, "127.0.0.1"),
        metrics=_hostport(metrics, "0.0.0.0"),
        proxy_id=proxy_id,
        header_timeout_s=header_timeout,
        max_connections=max_connections,
        drain_s=drain,
        trace_sampling=trace_sampling,
        otlp_endpoint=otlp_endpoint,
    )
    logging.basicConfig(
        level=getattr(logging, os.environ.get("MESH_LOG", "INFO")),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        _event_loop_run(_run(Proxy(opts)))
    except Exception as exc:
        from proxy.control.client import JoinError

        if isinstance(exc, (JoinError, OSError, TimeoutError)):
            typer.echo(f"meshctl proxy: {exc}", err=True)
            raise typer.Exit(1) from None
        raise


def _event_loop_run(coro: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed (a C-speed loop for the hot path), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)
        return
    uvloop.run(coro)


async def _run(p: object) -> None:
    from proxy.main import Proxy

    assert isinstance(p, Proxy)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await p.start()
    await stop.wait()
    await p.stop()
