"""`meshctl proxy`: run one sidecar for one workload (also `python -m proxy`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False)


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
    published: Annotated[
        str | None,
        typer.Option(
            help="Listener HOST:PORT for Docker's published ports (iptables sends the "
            "gateway's connections there), served as ingress, e.g. 0.0.0.0:15007."
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
    # The process normally starts in proxy/run.py, which parses these same options without
    # importing Typer (RSS) and comes here only for --help and usage errors.
    from proxy.run import UsageError, run

    try:
        run(
            service=service,
            registry=registry,
            token_file=token_file,
            ca_file=ca_file,
            version=version,
            advertise=advertise,
            inbound=inbound,
            outbound=outbound,
            published=published,
            upstream=upstream,
            app_addr=app_addr,
            admin=admin,
            metrics=metrics,
            proxy_id=proxy_id,
            header_timeout=header_timeout,
            max_connections=max_connections,
            trace_sampling=trace_sampling,
            otlp_endpoint=otlp_endpoint,
            drain=drain,
        )
    except UsageError as exc:
        raise typer.BadParameter(str(exc)) from None
    except Exception as exc:
        from proxy.control.client import JoinError

        if isinstance(exc, (JoinError, OSError, TimeoutError)):
            typer.echo(f"meshctl proxy: {exc}", err=True)
            raise typer.Exit(1) from None
        raise
