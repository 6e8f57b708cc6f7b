"""`meshctl proxy`: run one sidecar for one workload (also `python -m proxy`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False)


@app.command()
def proxy(
    service: Annotated[str, typer.Option(help="The service this proxy stands beside.")],
    token_file: Annotated[
        Path,
        typer.Option(
            help="File holding the join string (`meshctl token create`) or a bare token.",
            exists=True,
            dir_okay=False,
        ),
    ],
    registry: Annotated[
        str | None,
        typer.Option(
            help="Registry HOST:PORT or https:// URL (default: the addresses in the join string).",
            envvar="MESH_REGISTRY",
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            help="The mesh's root certificate (trust for the registry). Default: fetched and "
            "checked against the join string's pin, or MESH_HOME's for a bare token."
        ),
    ] = None,
    version: Annotated[str | None, typer.Option(help="The workload's version label.")] = None,
    advertise: Annotated[
        str,
        typer.Option(
            help="Address peers use to reach this proxy; `auto`: the source address of the "
            "route towards the registry."
        ),
    ] = "auto",
    inbound: Annotated[
        str, typer.Option(help="Inbound mTLS listener HOST:PORT.")
    ] = "0.0.0.0:15006",
    outbound: Annotated[
        str | None,
        typer.Option(
            help="Transparent outbound listener HOST:PORT (iptables mode), e.g. 127.0.0.1:15001."
        ),
    ] = None,
    dns_port: Annotated[
        int,
        typer.Option(min=1, max=65535,
                     help="With --outbound: answer DNS for mesh names on 127.0.0.1:PORT (UDP "
                          "and TCP), where `meshctl intercept install` redirects the app's "
                          "port 53; other names go to /etc/resolv.conf's resolvers."),
    ] = 15053,
    no_dns: Annotated[
        bool, typer.Option("--no-dns", help="No DNS listener (mesh names then need hosts "
                                            "entries).")
    ] = False,
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
    proxy_id: Annotated[
        str,
        typer.Option(help="Id of this proxy in the registry (default: SERVICE-HOSTNAME, the "
                     "same across restarts, so a restart replaces its entry)."),
    ] = "",
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a request head may take to arrive (slow loris).")
    ] = 60.0,
    body_idle_timeout: Annotated[
        float, typer.Option(min=0.0, help="Seconds a request body may stall before a 408 "
                            "(Envoy's stream_idle_timeout; 0: none).")
    ] = 30.0,
    request_timeout: Annotated[
        float, typer.Option(min=0.0, help="Seconds from a request's head to its body's end "
                            "before a 408 (Envoy's request_timeout; 0: none).")
    ] = 300.0,
    max_connections: Annotated[
        int, typer.Option(help="Open connections per outbound listener before new ones are "
                               "refused.")
    ] = 10_000,
    max_inbound_connections: Annotated[
        int, typer.Option(min=1, envvar="MESH_PROXY_MAX_INBOUND_CONNECTIONS",
                          help="Open inbound connections before new ones are refused (at most "
                               "a quarter of the fd limit).")
    ] = 10_000,
    max_connections_per_source: Annotated[
        int, typer.Option(min=0, envvar="MESH_PROXY_MAX_CONNECTIONS_PER_SOURCE",
                          help="Open inbound connections per source address (0: no limit).")
    ] = 1024,
    inbound_handshake_timeout: Annotated[
        float, typer.Option(min=0.001, envvar="MESH_PROXY_INBOUND_HANDSHAKE_TIMEOUT",
                            help="Seconds an inbound connection gets to send its first byte "
                                 "and finish TLS.")
    ] = 5.0,
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
    gateway: Annotated[
        bool,
        typer.Option("--gateway",
                     help="Gateway mode (docs/gateway.md): serve the Istio Gateways whose "
                          "selector matches istio=SERVICE (or app=SERVICE) on their servers' "
                          "ports, instead of standing beside an app."),
    ] = False,
    gateway_address: Annotated[
        str, typer.Option(help="With --gateway: the address the servers' ports open on.")
    ] = "0.0.0.0",
    credentials: Annotated[
        Path | None,
        typer.Option(help="With --gateway: the directory holding NAME.crt and NAME.key for "
                          "each credentialName (the registry's config directory)."),
    ] = None,
    num_trusted_proxies: Annotated[
        int,
        typer.Option(min=0, help="With --gateway: proxies in front of the gateway whose "
                                 "X-Forwarded-For entries are trusted (Istio's "
                                 "numTrustedProxies)."),
    ] = 0,
    max_request_bytes: Annotated[
        int,
        typer.Option(min=0, help="With --gateway: a request declaring a larger body gets 413 "
                                 "(0: no limit)."),
    ] = 0,
    rate_limit: Annotated[
        str | None,
        typer.Option(help="With --gateway: a local rate limit for the whole gateway, "
                          "REQUESTS/s or REQUESTS/m, optionally :BURST (429 past it)."),
    ] = None,
    access_log: Annotated[
        str | None,
        typer.Option(help="With --gateway: off, stdout or an absolute file path (a sidecar's "
                          "comes from mesh.yaml's accessLog)."),
    ] = None,
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
            dns_port=dns_port,
            no_dns=no_dns,
            published=published,
            upstream=upstream,
            app_addr=app_addr,
            admin=admin,
            metrics=metrics,
            proxy_id=proxy_id,
            header_timeout=header_timeout,
            body_idle_timeout=body_idle_timeout,
            request_timeout=request_timeout,
            max_connections=max_connections,
            max_inbound_connections=max_inbound_connections,
            max_connections_per_source=max_connections_per_source,
            inbound_handshake_timeout=inbound_handshake_timeout,
            trace_sampling=trace_sampling,
            otlp_endpoint=otlp_endpoint,
            drain=drain,
            gateway=gateway,
            gateway_address=gateway_address,
            credentials=credentials,
            num_trusted_proxies=num_trusted_proxies,
            max_request_bytes=max_request_bytes,
            rate_limit=rate_limit,
            access_log=access_log,
        )
    except UsageError as exc:
        raise typer.BadParameter(str(exc)) from None
    except Exception as exc:
        from proxy.control.bootstrap import BootstrapError
        from proxy.control.client import JoinError

        if isinstance(exc, (BootstrapError, JoinError, OSError, TimeoutError)):
            typer.echo(f"meshctl proxy: {exc}", err=True)
            raise typer.Exit(1) from None
        raise
