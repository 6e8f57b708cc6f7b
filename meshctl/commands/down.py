"""`meshctl down`: remove everything `meshctl up` started (local and docker runtimes)."""

from __future__ import annotations

import enum
import json
from typing import Annotated

import typer

from common.state import mesh_home
from meshctl.launch.procs import LaunchError
from meshctl.launch.teardown import teardown

__all__ = ["down"]


class Output(enum.StrEnum):
    text = "text"
    json = "json"


def down(
    purge: Annotated[
        bool,
        typer.Option(
            "--purge", help="Also delete MESH_HOME: the CA, tokens and the registry's state."
        ),
    ] = False,
    output: Annotated[Output, typer.Option("--output", "-o", help="text or json")] = Output.text,
) -> None:
    """Stop the mesh: supervisor, proxies, apps, registry; delete namespaces, veths, bridge, rules.

    The CA and the registry's config state stay in MESH_HOME unless --purge.
    """
    home = mesh_home()
    try:
        report = teardown(home, purge=purge)
    except LaunchError as exc:
        typer.echo(f"meshctl down: {exc}", err=True)
        raise typer.Exit(1) from None
    if output == Output.json:
        typer.echo(json.dumps({"mesh_home": str(home), **report.to_wire()}))
        return
    if report.nothing:
        typer.echo(f"no mesh was running for MESH_HOME={home}; nothing to remove")
    else:
        parts = [f"{report.processes} process(es)"]
        if report.namespaces:
            parts.append(f"namespaces {', '.join(report.namespaces)}")
        if report.bridges:
            parts.append(f"bridge {', '.join(report.bridges)}")
        if report.containers:
            parts.append(f"proxies and rules of containers {', '.join(report.containers)}")
        if report.compose_project:
            parts.append(f"compose project {report.compose_project} (compose down)")
        typer.echo("mesh down: stopped and removed " + "; ".join(parts))
    if purge:
        typer.echo(f"purged {home}")
