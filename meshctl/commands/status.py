"""`meshctl status`: services, endpoints, proxies' config versions and certificates."""

from __future__ import annotations

import enum
import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.state import mesh_home
from meshctl.client import RegistryError, RegistryUnavailable
from meshctl.commands.remote import OperatorFileOpt, RegistryOpt, client
from meshctl.launch.procs import LaunchError
from meshctl.launch.report import status as mesh_status

__all__ = ["status"]


class Output(enum.StrEnum):
    text = "text"
    json = "json"


def _expiry(not_after: Any) -> str:
    if not isinstance(not_after, (int, float)):
        return "-"
    left = not_after - time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(not_after))
    return f"{stamp} (in {left / 3600:.1f} h)" if left > 0 else f"{stamp} (EXPIRED)"


def _print_interception(out: Console, workloads: list[dict[str, Any]]) -> None:
    """Which inbound ports iptables sends to each proxy, and which it leaves alone."""
    rows = [w for w in workloads if w.get("interception")]
    if not rows:
        return
    table = Table(title="interception", title_justify="left")
    for column in ("workload", "inbound captured", "inbound excluded", "families"):
        table.add_column(column)
    for w in sorted(rows, key=lambda w: w["name"]):
        i = w["interception"]
        captured = i["inbound_captured"]
        table.add_row(
            w["name"],
            "every port" if captured == "*" else ",".join(map(str, captured)) or "none",
            ",".join(map(str, i["inbound_excluded"])),
            " ".join(i["families"]),
        )
    out.print(table)


def status(
    output: Annotated[Output, typer.Option("--output", "-o", help="text or json")] = Output.text,
    registry: RegistryOpt = None,
    operator_token_file: OperatorFileOpt = None,
) -> None:
    """Show the running mesh: services, endpoints (labels, health), proxies, config errors."""
    try:
        remote = client(registry, operator_token_file) if registry or operator_token_file \
            else None
        st = mesh_status(mesh_home(), remote)
    except (LaunchError, RegistryUnavailable, RegistryError) as exc:
        typer.echo(f"meshctl status: {exc}", err=True)
        raise typer.Exit(1) from None
    reg = st["registry"]
    if output == Output.json:
        typer.echo(json.dumps(st))
        if not reg["answering"]:
            raise typer.Exit(1)
        return
    out = Console(highlight=False)
    if not reg["answering"]:
        _outage(out, st)
        raise typer.Exit(1)
    where = (f"joined to registry {reg['url']} (it runs on another host)" if reg.get("joined")
             else f"registry {reg['url']}" + (f" (pid {reg['pid']}), config {reg['config_dir']}"
                                               if reg["pid"] else " (remote)"))
    out.print(
        f"{where}, "
        f"version [bold]{st['config_version']}[/], mode {st['mode'] or '-'}"
        + (f", runtime {st['runtime']}" if st.get("runtime") else "")
        + (f" (compose project {st['compose_project']})" if st.get("compose_project") else "")
    )
    if st.get("replicas"):
        _print_replicas(out, st["replicas"])
    table = Table(title="endpoints", title_justify="left")
    for column in ("service", "endpoint", "address", "labels", "health"):
        table.add_column(column)
    for e in sorted(st["endpoints"], key=lambda e: (e["service"], e["id"])):
        labels = ",".join(f"{k}={v}" for k, v in sorted((e["labels"] or {}).items()))
        health = e["health"]
        colour = "green" if health == "healthy" else "red"
        table.add_row(
            e["service"],
            e["id"],
            f"{e['address']}:{e['inbound_port']}",
            labels,
            f"[{colour}]{health}[/]" + (f" {escape(e['reason'])}" if e.get("reason") else ""),
        )
    for name, svc in sorted(st["services"].items()):
        if not svc["endpoints"]:
            table.add_row(name, "-", "-", "-", "[red]no endpoints[/]")
    out.print(table)
    table = Table(title="proxies", title_justify="left")
    for column in ("proxy", "connected", "config", "certificate expires", "restarts"):
        table.add_column(column)
    for p in sorted(st["proxies"], key=lambda p: p["proxy_id"]):
        version = f"v{p['config_version']}" + ("" if p["current"] else " [red](behind)[/]")
        if p["nack_error"]:
            version += f" [red]NACK: {p['nack_error']}[/]"
        table.add_row(
            p["proxy_id"],
            ("yes" if p["connected"] else "[red]no[/]")
            + (f" (to {escape(p['replica'])})" if p.get("replica") else ""),
            version,
            _expiry(p["cert_not_after"]),
            str(p["restarts"]),
        )
    out.print(table)
    _print_interception(out, st["workloads"])
    problems = [w for w in st["workloads"] if w["error"]]
    for w in problems:
        out.print(f"[red]{w['name']}:[/] {w['error']}", markup=True)
    err = st["last_config_error"]
    if err:
        out.print("[red]last config error[/] (the previous version stays in force):")
        for line in err.get("errors", []):
            out.print(f"  {line}", markup=False)
    else:
        out.print("no config errors")


def _print_replicas(out: Console, rs: dict[str, Any]) -> None:
    """Registries sharing one store (docs/etcd.md): which publishes, which answered."""
    table = Table(title=f"registry replicas (store {escape(rs['store'])})", title_justify="left")
    for column in ("replica", "url", "config", "role"):
        table.add_column(column)
    newest = max((int(r.get("config_version") or 0) for r in rs["replicas"]), default=0)
    for r in rs["replicas"]:
        role = "publisher" if r.get("id") == rs["publisher"] else "follower"
        here = " (this replica)" if r.get("id") == rs["replica"] else ""
        version = int(r.get("config_version") or 0)
        behind = "" if version == newest else " [red](behind)[/]"
        table.add_row(escape(str(r.get("id"))), escape(str(r.get("url"))),
                      f"v{version}{behind}", role + here)
    out.print(table)
    for m in rs.get("etcd") or []:
        state = (f"[green]ok[/] etcd {escape(m['version'])}, raft index {m['raft_index']}"
                 + (", leader" if m["leader"] else "")) if m["ok"] \
            else f"[red]unreachable[/]: {escape(m['error'])}"
        out.print(f"etcd member {escape(m['endpoint'])}: {state}")
    if not rs["publisher"]:
        out.print("[red]no replica publishes config now[/] (an election is under way, or "
                  "none can reach etcd)")


def _outage(out: Console, st: dict[str, Any]) -> None:
    """The registry is down: say so (stderr), and show what still runs (stdout)."""
    typer.echo(f"meshctl status: {st['registry']['problem']}", err=True)
    table = Table(title="workloads (from state.json)", title_justify="left")
    for column in ("workload", "app pid", "proxy pid", "error"):
        table.add_column(column)
    for w in st["workloads"]:
        table.add_row(w["name"], str(w["app_pid"] or "[red]not running[/]"),
                      str(w["proxy_pid"] or "[red]not running[/]"), w["error"] or "")  # fmt: skip
    out.print(table)
