"""`meshctl up [PATH]`: start the mesh (registry, supervisor, a proxy beside every workload)."""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from meshctl.launch.local import ConfigInvalid, UpOptions, UpResult, WorkloadStatus
from meshctl.launch.local import up as launch_up
from meshctl.launch.procs import LaunchError
from registry.paths import DEFAULT_MONITOR_PORT, DEFAULT_PORT

__all__ = ["up"]

_STYLE = {"ready": "green", "joining": "yellow", "starting": "cyan", "error": "red"}


class Output(enum.StrEnum):
    text = "text"
    json = "json"


class Runtime(enum.StrEnum):
    local = "local"
    docker = "docker"
    auto = "auto"


def _table(phases: list[WorkloadStatus]) -> Table:
    ready = sum(p.phase == "ready" for p in phases)
    table = Table(title=f"meshctl up: {ready}/{len(phases)} proxies ready", title_justify="left")
    for column in ("workload", "state", "detail"):
        table.add_column(column)
    for p in phases:
        style = _STYLE.get(p.phase, "")
        table.add_row(p.name, f"[{style}]{p.phase}[/]", p.detail)
    return table


def _summary(console: Console, result: UpResult) -> None:
    plan = result.plan
    if plan.docker is not None:
        where = (
            f"compose project {plan.docker.project}"
            if plan.docker.project
            else "containers labelled mesh.service"
        ) + f" on docker network {plan.docker.network}"
    elif plan.network:
        where = f"bridge {plan.network.bridge} ({plan.network.subnet})"
    else:
        where = "127.0.0.1 (explicit mode)"
    console.print(
        f"[bold green]mesh up[/] in {result.elapsed_s:.1f}s: {len(plan.workloads)} workload(s), "
        f"{result.mode} mode, {where}; registry {result.registry_url}"
    )
    if result.note:
        console.print(f"[yellow]note:[/] {result.note}")
    table = Table()
    for column in ("service", "version", "workload", "address", "enter with"):
        table.add_column(column)
    for w in plan.workloads:
        if w.container:
            address, enter = w.address, f"docker exec {w.name} ..."
        elif w.netns:
            address, enter = w.address, f"ip netns exec {w.netns} ..."
        else:
            address = (
                f"app 127.0.0.1:{w.port(f'app:{w.inbound_ports[0]}') if w.inbound_ports else '-'}"
            )
            ups = [f"{k.split(':')[1]}={v}" for k, v in w.ports if k.startswith("upstream:")]
            enter = "upstreams " + (", ".join(ups) or "-")
        table.add_row(w.service, w.version, w.name, address, enter)
    console.print(table)
    for w in plan.workloads:
        for port, host in w.published:
            console.print(
                f"{w.name}: published {host} -> {port} served as ingress "
                "(unauthenticated; AuthorizationPolicy applies)"
            )
    for g in plan.gateways:
        console.print(
            f"gateway {g.name} on {g.address}: {', '.join(g.urls)} "
            f"(curl --resolve HOST:PORT:{g.address}; docs/gateway.md)"
        )
    changes = [f"{label} {', '.join(names)}" for label, names in (
        ("started", result.started), ("stopped", result.stopped),
        ("restarted", result.restarted)) if names]  # fmt: skip
    console.print("; ".join(changes) if changes else "nothing changed")
    if result.skipped:
        console.print(f"not in mesh.yaml, left alone: {', '.join(result.skipped)}")


def up(
    path: Annotated[
        Path, typer.Argument(help="Config directory (mesh.yaml ...), or a docker-compose file.")
    ] = Path("."),
    runtime: Annotated[
        Runtime, typer.Option(help="Where workloads run: local processes, docker, or auto.")
    ] = Runtime.auto,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every proxy to be ready.", min=1)
    ] = 60.0,
    output: Annotated[Output, typer.Option("--output", "-o", help="text or json")] = Output.text,
    registry_port: Annotated[
        int, typer.Option(help="The registry's API port.", envvar="MESH_REGISTRY_PORT")
    ] = DEFAULT_PORT,
    monitor_port: Annotated[
        int, typer.Option(help="The registry's monitor port (127.0.0.1).")
    ] = DEFAULT_MONITOR_PORT,
    prefix: Annotated[
        str, typer.Option(hidden=True, envvar="MESH_NETNS_PREFIX", help="Namespace name prefix.")
    ] = "",
    project: Annotated[
        str,
        typer.Option(
            "--project",
            "-p",
            envvar="COMPOSE_PROJECT_NAME",
            help="Docker runtime: the compose project name (default: the file's directory).",
        ),
    ] = "",
    join: Annotated[
        Path | None,
        typer.Option(
            "--join",
            show_default=False,
            help="Join the mesh whose registry runs on another host: a file of join strings, "
            "one per service (`meshctl token create SERVICE... > FILE` there). No registry "
            "starts here.",
        ),
    ] = None,
) -> None:
    """Start the mesh: the registry, then every workload with its sidecar proxy; wait for ready.

    Running it again applies only what changed. Without root, workloads run in explicit
    mode on 127.0.0.1 (see docs/up.md).
    """
    opts = UpOptions(
        path=path,
        runtime=runtime.value,
        timeout=timeout,
        prefix=prefix,
        force_explicit=os.environ.get("MESH_FORCE_EXPLICIT", "") not in ("", "0"),
        registry_port=registry_port,
        monitor_port=monitor_port,
        project=project,
        join=join,
    )
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    console = Console(highlight=False)
    try:
        if output == Output.json:
            result = launch_up(opts)
        else:
            with Live(_table([]), console=console, transient=True, refresh_per_second=10) as live:
                result = launch_up(opts, lambda phases: live.update(_table(phases)))
    except ConfigInvalid as exc:
        for line in exc.errors:
            err.print(line, markup=False)
        err.print(f"meshctl up: {exc}", markup=False)
        raise typer.Exit(1) from None
    except LaunchError as exc:
        err.print(f"meshctl up: {exc}", markup=False)
        raise typer.Exit(1) from None
    if output == Output.json:
        typer.echo(json.dumps(result.to_wire()))
        return
    _summary(console, result)
