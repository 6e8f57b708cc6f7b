"""`meshctl route set-weight|show SERVICE`: shift traffic between subsets, and see the routes.

The registry watches the config directory and publishes every valid change, so set-weight
edits the VirtualService's file in place (registry.config.edit) and that is the deployment.
"""

from __future__ import annotations

import enum
import json
import os
import stat
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from common.state import atomic_write, mesh_home
from meshctl.commands import canary
from registry.config import MeshConfig, load_directory
from registry.config.duration import format_duration
from registry.config.edit import (
    EditError,
    WeightPlan,
    check_in_copy,
    parse_weights,
    plan_weights,
    route_label,
    route_positions,
    set_weights,
    unified_diff,
    verify_weights,
)
from registry.config.model import (
    DEFAULT_RETRY_ATTEMPTS,
    DEFAULT_RETRY_ON,
    HTTPMatch,
    HTTPRoute,
    StringMatch,
)

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
) -> None:
    """Set a service's traffic split between subsets, editing its VirtualService in place."""
    try:
        wanted = parse_weights(weights)
        directory = _config_dir(config)
        plan = plan_weights(_load(directory), service, wanted, route)
        path = directory / plan.file
        raw = _read(path)
        old = raw.decode("utf-8")
        new = set_weights(old, plan)
        if new != old:
            verify_weights(check_in_copy(directory, plan.file, new), plan)
            if not dry_run:
                _write(path, raw, new)
    except EditError as exc:
        _fail("set-weight", str(exc))
    except (OSError, UnicodeDecodeError) as exc:
        _fail("set-weight", f"{exc}; nothing was written")
    diff = unified_diff(plan.file, old, new)
    if output == Output.json:
        data: dict[str, Any] = {
            "service": service, "file": str(path), "virtual_service": plan.virtual_service.name,
            "route": plan.label, "old": dict(plan.old), "new": dict(plan.new),
            "changed": new != old, "dry_run": dry_run}
        if dry_run:
            data["diff"] = diff
        typer.echo(json.dumps(data))
        return
    _print_change(plan, path, directory, changed=new != old, dry_run=dry_run, diff=diff)


@app.command("show")
def show(service: Service, config: ConfigDir = None, output: OutputOpt = Output.text) -> None:
    """Show the http routes of a service: matches, weights, retries, timeouts, file:line."""
    try:
        directory = _config_dir(config)
        cfg = _load(directory)
        view = _view(cfg, directory, service)
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


def _load(directory: Path) -> MeshConfig:
    result = load_directory(directory)
    if result.config is None or result.errors:
        first = str(result.errors[0]) if result.errors else "no snapshot"
        raise EditError(f"the config in {directory} is invalid ({len(result.errors)} "
                        f"error(s), first: {first}): fix it first (meshctl validate {directory})")
    return result.config


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EditError(f"cannot read {path}: {exc.strerror or exc}") from None


def _write(path: Path, raw: bytes, text: str) -> None:
    """Replace the file (its target, if a symlink) atomically, keeping mode and owner."""
    real = path.resolve()
    st = real.stat()
    if real.read_bytes() != raw:
        raise EditError(f"{path} changed while it was being edited: run the command again")
    try:
        atomic_write(real, text.encode("utf-8"), mode=stat.S_IMODE(st.st_mode))
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
            os.chown(real, st.st_uid, st.st_gid)
    except PermissionError:
        raise EditError(f"cannot write {path}: permission denied (run as the file's owner, "
                        "or with sudo); nothing was written") from None


def _print_change(plan: WeightPlan, path: Path, directory: Path, *, changed: bool,
                  dry_run: bool, diff: str) -> None:
    out = Console(highlight=False)
    old = dict(plan.old)
    out.print(f"[bold]{plan.service}[/]: route {plan.label} of VirtualService "
              f"{plan.virtual_service.name} ({path})")
    table = Table()
    for column in ("subset", "old", "new"):
        table.add_column(column, justify="left" if column == "subset" else "right")
    for subset, weight in plan.new:
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
        out.print(f"[green]written[/] {path}; {_who_publishes(directory)}")


def _who_publishes(directory: Path) -> str:
    ep = _endpoint()
    pid = ep.get("pid")
    watched = ep.get("config_dir")
    if isinstance(watched, str) and Path(watched).resolve() == directory.resolve() \
            and isinstance(pid, int) and _alive(pid):
        return f"the registry (pid {pid}) publishes it to every proxy"
    return (f"no running registry watches {directory}: it applies when one starts "
            f"(meshctl registry --config {directory})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- show ----------------------------------------------------------------------------------


def _view(config: MeshConfig, directory: Path, service: str) -> dict[str, Any]:
    if config.service(service) is None:
        known = ", ".join(s.name for s in config.services) or "none"
        raise EditError(f"unknown service `{service}`; mesh.yaml defines: {known}")
    rule = config.destination_rule_for(service)
    subsets = [{"name": s.name, "labels": dict(s.labels)} for s in rule.subsets] if rule else []
    vs = config.virtual_service_for(service)
    if vs is None:
        return {"service": service, "virtual_service": None, "file": None, "line": None,
                "routes": [], "subsets": subsets}
    try:
        positions = route_positions(_read(directory / vs.source.file).decode("utf-8"), vs)
    except (EditError, UnicodeDecodeError):
        positions = []
    if len(positions) != len(vs.http):  # the file changed since it was loaded
        positions = [(vs.source.line, vs.source.column)] * len(vs.http)
    routes = [_route_view(r, i, vs.source.file, positions[i]) for i, r in enumerate(vs.http)]
    return {"service": service, "virtual_service": vs.name,
            "file": str(directory / vs.source.file), "line": vs.source.line,
            "routes": routes, "subsets": subsets}


def _route_view(r: HTTPRoute, index: int, file: str, position: tuple[int, int]
                ) -> dict[str, Any]:
    retries: dict[str, Any]
    if r.retries is None:
        retries = {"attempts": DEFAULT_RETRY_ATTEMPTS, "per_try_timeout": None,
                   "retry_on": list(DEFAULT_RETRY_ON), "default": True}
    else:
        per_try = r.retries.per_try_timeout_s
        retries = {"attempts": r.retries.attempts,
                   "per_try_timeout": format_duration(per_try) if per_try is not None else None,
                   "retry_on": list(r.retries.retry_on), "default": False}
    return {
        "name": route_label(r, index), "index": index,
        "defined_at": f"{file}:{position[0]}:{position[1]}",
        "match": [_match_text(m) for m in r.match],
        "destinations": [{"host": d.destination.host, "subset": d.destination.subset,
                          "port": d.destination.port, "weight": d.weight} for d in r.route],
        "retries": retries,
        "timeout": format_duration(r.timeout_s) if r.timeout_s is not None else None,
    }


def _match_text(m: HTTPMatch) -> str:
    def sm(what: str, s: StringMatch) -> str:
        return f"{what} present" if s.kind == "present" else f"{what} {s.kind} {s.value}"

    parts = [sm(what, s) for what, s in
             (("uri", m.uri), ("method", m.method), ("authority", m.authority)) if s is not None]
    parts += [sm(f"header {k}", s) for k, s in m.headers]
    parts += [f"not {sm(f'header {k}', s)}" for k, s in m.without_headers]
    parts += [sm(f"query {k}", s) for k, s in m.query_params]
    if m.port is not None:
        parts.append(f"port {m.port}")
    if m.ignore_uri_case:
        parts.append("(ignoring uri case)")
    return " and ".join(parts) or "any request"


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
