"""`meshctl route set-weight|show SERVICE`: shift traffic between subsets, and see the routes.

The registry watches the config directory and publishes every valid change, so set-weight
edits the VirtualService's file in place (registry.config.edit) and that is the deployment.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from common.state import mesh_home
from meshctl.client import RegistryError, RegistryUnavailable, read_joined
from meshctl.commands import canary
from meshctl.commands.remote import OperatorFileOpt, RegistryOpt, client
from meshctl.launch.procs import pid_alive
from registry.config.apply import apply_weights, load_valid
from registry.config.edit import (
    EditError,
    parse_weights,
    unified_diff,
)
from registry.config.routeview import route_view

__all__ = ["app"]

app = typer.Typer(help="Traffic routes: shift weights between a service's subsets, show routes, "
                  "run a canary (see docs/route.md, docs/canary.md).", no_args_is_help=True)


class Output(enum.StrEnum):
    text = "text"
    json = "json"


Service = Annotated[str, typer.Argument(help="The service, as named in mesh.yaml.")]
ConfigDir = Annotated[Path | None, typer.Option(
    "--config", "-c", envvar="MESH_CONFIG", show_default=False,
    help="Config directory [default: $MESH_CONFIG, else the running registry's, else ./mesh].")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text or json")]


@app.command("set-weight")
def set_weight(
    service: Service,
    weights: Annotated[list[str], typer.Argument(
        metavar="SUBSET=WEIGHT...", help="Integer percents adding up to 100, e.g. v1=90 v2=10.",
        show_default=False)],
    config: ConfigDir = None,
    route: Annotated[str | None, typer.Option(
        help="The http route to change, by name (or http[i]) when the VirtualService has "
             "several.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the diff; write nothing.")] = False,
    output: OutputOpt = Output.text,
    registry: RegistryOpt = None,
    operator_token_file: OperatorFileOpt = None,
) -> None:
    """Set a service's traffic split between subsets, editing its VirtualService in place.

    From another host (--registry/--operator-token-file, or a host `up --join` joined) the
    registry makes the edit in its own config directory, where the file lives."""
    try:
        wanted = parse_weights(weights)
        if config is None and (registry or operator_token_file or _joined_here()):
            data = _remote_set(service, wanted, route, dry_run, registry, operator_token_file)
            if output == Output.json:
                typer.echo(json.dumps(data))
                return
            _print_change(data, None, diff=data.get("diff", ""))
            return
        directory = _config_dir(config)
        change = apply_weights(directory, service, wanted, route, dry_run=dry_run)
    except EditError as exc:
        _fail("set-weight", str(exc))
    data = change.to_wire(dry_run=dry_run)
    if output == Output.json:
        typer.echo(json.dumps(data))
        return
    _print_change(data, directory, diff=unified_diff(change.plan.file, change.old, change.new))


def _joined_here() -> bool:
    """This host joined another host's mesh (`up --join`) and runs no registry itself."""
    return not _endpoint() and read_joined(mesh_home()) is not None


def _remote_set(service: str, wanted: dict[str, int], route: str | None, dry_run: bool,
                registry: str | None, operator_file: Path | None) -> dict[str, Any]:
    try:
        res = client(registry, operator_file).call(
            "POST", f"/v1/routes/{service}/weights",
            {"weights": wanted, "route": route, "dry_run": dry_run})
    except (RegistryUnavailable, RegistryError) as exc:
        raise EditError(f"{exc}; nothing was written") from None
    return dict(res)


@app.command("show")
def show(service: Service, config: ConfigDir = None, output: OutputOpt = Output.text,
         registry: RegistryOpt = None, operator_token_file: OperatorFileOpt = None) -> None:
    """Show the http routes of a service: matches, weights, retries, timeouts, file:line."""
    try:
        if config is None and (registry or operator_token_file or _joined_here()):
            try:
                view = client(registry, operator_token_file).call("GET", f"/v1/routes/{service}")
            except (RegistryUnavailable, RegistryError) as exc:
                raise EditError(str(exc)) from None
        else:
            directory = _config_dir(config)
            view = route_view(load_valid(directory), directory, service)
    except EditError as exc:
        _fail("show", str(exc))
    if output == Output.json:
        typer.echo(json.dumps(view))
        return
    out = Console(highlight=False)
    if view["virtual_service"] is None:
        out.print(f"no VirtualService routes [bold]{service}[/]: requests go to all of its "
                  "endpoints (create one to split traffic; see docs/route.md)")
        return
    out.print(f"[bold]{service}[/]: VirtualService {view['virtual_service']} ({view['file']})")
    table = Table()
    for column in ("route", "match", "destinations", "retries", "timeout", "defined at"):
        table.add_column(column)
    for r in view["routes"]:
        dests = ", ".join(f"{_dest_label(service, d)} {d['weight']}%"
                          for d in r["destinations"])
        table.add_row(r["name"], " or ".join(r["match"]) or "any request", dests,
                      _retries_text(r["retries"]), r["timeout"] or "none",
                      r["defined_at"])
    out.print(table)
    if view["subsets"]:
        out.print("subsets: " + ", ".join(
            f"{s['name']} ({','.join(f'{k}={v}' for k, v in s['labels'].items())})"
            for s in view["subsets"]))


app.command("canary")(canary.canary)  # its own module: meshctl/commands/canary.py


# --- helpers -------------------------------------------------------------------------------


def _fail(command: str, message: str) -> NoReturn:
    typer.echo(f"meshctl route {command}: {message}", err=True)
    raise typer.Exit(1)


def _endpoint() -> dict[str, Any]:
    """The running registry's endpoint.json, or {} when there is none (or it is unreadable)."""
    try:
        data = json.loads((mesh_home() / "registry" / "endpoint.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _config_dir(option: Path | None) -> Path:
    """--config / MESH_CONFIG, else the running registry's config dir, else ./mesh."""
    if option is not None:
        if not option.is_dir():
            raise EditError(f"config directory {option} does not exist: pass --config DIR "
                            "(or set MESH_CONFIG)")
        return option
    registry_dir = _endpoint().get("config_dir")
    if isinstance(registry_dir, str) and Path(registry_dir).is_dir():
        return Path(registry_dir)
    if Path("mesh").is_dir():
        return Path("mesh")
    raise EditError("no config directory: pass --config DIR, set MESH_CONFIG, or start the "
                    "registry (meshctl registry --config DIR)")


def _print_change(data: dict[str, Any], directory: Path | None, *, diff: str) -> None:
    """The change `data` (WeightChange.to_wire, local or the registry's answer)."""
    out = Console(highlight=False)
    old: dict[str, int] = data["old"]
    path, changed, dry_run = data["file"], data["changed"], data["dry_run"]
    out.print(f"[bold]{data['service']}[/]: route {data['route']} of VirtualService "
              f"{data['virtual_service']} ({path})")
    table = Table()
    for column in ("subset", "old", "new"):
        table.add_column(column, justify="left" if column == "subset" else "right")
    for subset, weight in data["new"].items():
        before = f"{old[subset]}%" if subset in old else "-"
        style = "bold" if old.get(subset) != weight else ""
        table.add_row(subset, before, f"{weight}%", style=style)
    out.print(table)
    if not changed:
        out.print("already set: nothing to do")
    elif dry_run:
        for line in diff.splitlines():
            colour = {"+": "green", "-": "red", "@": "cyan"}.get(line[:1], "")
            out.print(line, style=colour or None, markup=False)
        out.print("dry run: nothing was written")
    else:
        who = ("the registry there publishes it to every proxy" if directory is None
               else _who_publishes(directory))
        out.print(f"[green]written[/] {path}; {who}")


def _who_publishes(directory: Path) -> str:
    ep = _endpoint()
    pid = ep.get("pid")
    watched = ep.get("config_dir")
    if isinstance(watched, str) and Path(watched).resolve() == directory.resolve() \
            and isinstance(pid, int) and pid_alive(pid):
        return f"the registry (pid {pid}) publishes it to every proxy"
    return (f"no running registry watches {directory}: it applies when one starts "
            f"(meshctl registry --config {directory})")


def _dest_label(service: str, d: dict[str, Any]) -> str:
    label = d["subset"] if d["host"] == service and d["subset"] else (
        f"{d['host']}/{d['subset']}" if d["subset"] else d["host"])
    return f"{label}:{d['port']}" if d["port"] else str(label)


def _retries_text(r: dict[str, Any]) -> str:
    if r["attempts"] == 0:
        return "off"
    per_try = f" x {r['per_try_timeout']}" if r["per_try_timeout"] else ""
    text = f"{r['attempts']}{per_try} on {','.join(r['retry_on'])}"
    return f"default: {text}" if r["default"] else text
