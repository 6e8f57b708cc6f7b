"""`meshctl registry`: run the control plane in the foreground."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from common.state import mesh_home
from registry.paths import DEFAULT_MONITOR_PORT, DEFAULT_PORT
from registry.server.catalog import ENDPOINT_TTL_S


def registry(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="Config directory (mesh.yaml and Istio resources).",
            envvar="MESH_CONFIG",
            exists=True,
            file_okay=False,
        ),
    ],
    listen: Annotated[
        str, typer.Option(help="Address the API listens on.", envvar="MESH_REGISTRY_LISTEN")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="API port (HTTPS).", envvar="MESH_REGISTRY_PORT")
    ] = DEFAULT_PORT,
    monitor_port: Annotated[
        int, typer.Option(help="Metrics and readiness port (localhost, plain HTTP).")
    ] = DEFAULT_MONITOR_PORT,
    san: Annotated[
        list[str], typer.Option(help="Extra DNS name or IP for the API's certificate (repeatable).")
    ] = [],  # noqa: B006
    endpoint_ttl: Annotated[
        float,
        typer.Option(
            help="Seconds without a heartbeat before an endpoint leaves the catalog.",
            envvar="MESH_REGISTRY_ENDPOINT_TTL",
            min=0.1,
        ),
    ] = ENDPOINT_TTL_S,
    store: Annotated[
        str | None,
        typer.Option(
            help="Keep the shared state in etcd, for several registries serving one mesh: "
            "etcd://HOST:2379[,HOST:2379...][/PREFIX], or etcds://... for TLS (docs/etcd.md). "
            "Default: files in MESH_HOME, one registry.",
            envvar="MESH_REGISTRY_STORE",
        ),
    ] = None,
    store_ca: Annotated[
        Path | None, typer.Option(help="CA bundle that signed etcd's server certificates.")
    ] = None,
    store_cert: Annotated[
        Path | None, typer.Option(help="Client certificate for etcd (--client-cert-auth).")
    ] = None,
    store_key: Annotated[Path | None, typer.Option(help="Key of --store-cert.")] = None,
) -> None:
    """Run the registry: file-watched config, certificate authority, catalog and API."""
    from registry.server.main import StartupError, run  # the server only when it runs
    from registry.store import StoreError, parse_store

    spec = None
    if store is not None or store_ca or store_cert or store_key:
        try:  # before anything runs or is written: a bad value changes nothing
            spec = parse_store(store or "", ca=store_ca, cert=store_cert, key=store_key)
        except StoreError as exc:
            typer.echo(f"meshctl registry: {exc}", err=True)
            raise typer.Exit(2) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(
            run(
                config,
                mesh_home(),
                host=listen,
                port=port,
                monitor_port=monitor_port,
                extra_sans=tuple(san),
                endpoint_ttl_s=endpoint_ttl,
                store=spec,
            )
        )
    except StartupError as exc:
        typer.echo(f"meshctl registry: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
