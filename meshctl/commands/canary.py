"""`meshctl route canary`: start, follow, promote or abort an automated canary.

The canary runs in the registry (registry.canary), not here: this command asks the
registry to start it and, with --watch, follows it; killing it changes nothing.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from common.state import mesh_home
from meshctl.client import RegistryClient, RegistryError, RegistryUnavailable
from registry.canary.api import policy_from_wire
from registry.config.canary import policy_problems
from registry.config.duration import format_duration, parse_duration
from registry.config.model import CanaryPolicy

__all__ = ["canary"]

ACTIONS = ("status", "promote", "abort")
POLL_S = 0.5
_D = CanaryPolicy()


def canary(
    words: Annotated[list[str], typer.Argument(
        metavar="SERVICE | status [SERVICE] | promote SERVICE | abort SERVICE",
        help="Start a canary of SERVICE (with --to), or act on the running one.",
        show_default=False)],
    to: Annotated[str | None, typer.Option(
        "--to", help="The subset to move traffic to (e.g. v2).")] = None,
    from_: Annotated[str | None, typer.Option(
        "--from", help="The subset to move traffic from (default: the one with the most weight).",
        show_default=False)] = None,
    route: Annotated[str | None, typer.Option(
        help="The http route, by name, when the VirtualService has several.")] = None,
    steps: Annotated[str, typer.Option(
        help="The new subset's weights in turn, percent.")] = ",".join(map(str, _D.steps)),
    interval: Annotated[str, typer.Option(
        help="How long each step runs before its check.")] = format_duration(_D.interval_s),
    success_rate: Annotated[float, typer.Option(
        help="Least success rate (responses not 5xx) of the new subset, percent.")
    ] = _D.success_rate,
    p99: Annotated[str, typer.Option(
        help="Highest p99 latency of the new subset.")] = format_duration(_D.p99_ms / 1000),
    min_requests: Annotated[int, typer.Option(
        help="Fewer requests on the new subset in an interval fail the check.")
    ] = _D.min_requests,
    failures: Annotated[int, typer.Option(
        help="Failed checks that roll back (100% to the old subset).")] = _D.failures,
    watch: Annotated[bool, typer.Option(
        "--watch", "-w", help="Follow the canary until it ends (exit 1 on a rollback).")
    ] = False,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Move a service's traffic to a new subset step by step, checking each step's success
    rate and p99 on the proxies' metrics; promote, or roll back after --failures failed
    checks (see docs/canary.md). The registry runs it: the command may exit at any time."""
    if output not in ("text", "json"):
        _fail(f"--output must be text or json, not `{output}`")
    action, service = _words(words)
    if action == "start":  # every argument checked before anything is asked of the registry
        if to is None:
            _fail(f"say where traffic goes: meshctl route canary {service} --to SUBSET")
        policy = _policy(steps, interval, success_rate, p99, min_requests, failures)
    try:
        client = RegistryClient.from_home(mesh_home())
        if action == "start":
            body = {"service": service, "to": to, "from": from_, "route": route,
                    "policy": {"steps": list(policy.steps), "interval_s": policy.interval_s,
                               "success_rate": policy.success_rate, "p99_ms": policy.p99_ms,
                               "min_requests": policy.min_requests,
                               "failures": policy.failures}}
            shown = [client.call("POST", "/v1/canaries", body)]
        elif action in ("promote", "abort"):
            shown = [client.call("POST", f"/v1/canaries/{service}/{action}", {})]
        else:
            every = client.call("GET", "/v1/canaries")["canaries"]
            shown = [c for c in every if service is None or c["service"] == service]
            if service is not None and not shown:
                _fail(f"no canary of `{service}` has run (start one: meshctl route canary "
                      f"{service} --to SUBSET)")
        if watch:
            _watch(client, [c["service"] for c in shown], output)
            return
    except (RegistryUnavailable, RegistryError) as exc:
        _fail(str(exc))
    if output == "json":
        typer.echo(json.dumps({"canaries": shown}, sort_keys=True))
        return
    out = Console(highlight=False)
    if not shown:
        out.print("no canary has run (start one: meshctl route canary SERVICE --to SUBSET)")
    for c in shown:
        out.print(render(c))


def _words(words: list[str]) -> tuple[str, str | None]:
    if words[0] in ACTIONS:
        if len(words) > 2 or (words[0] != "status" and len(words) != 2):
            _fail(f"usage: meshctl route canary {words[0]} SERVICE")
        return words[0], (words[1] if len(words) == 2 else None)
    if len(words) != 1:
        _fail(f"one service at a time: meshctl route canary {words[0]} --to SUBSET")
    return "start", words[0]


def _policy(steps: str, interval: str, success_rate: float, p99: str, min_requests: int,
            failures: int) -> CanaryPolicy:
    try:
        weights = [int(s) for s in steps.split(",")]
    except ValueError:
        _fail(f"--steps `{steps}` is not a list of whole percents, e.g. 5,10,25,50,100")
    try:
        interval_s, p99_s = parse_duration(interval), parse_duration(p99)
    except ValueError as exc:
        _fail(f"{exc}")
    policy = policy_from_wire({"steps": weights, "interval_s": interval_s,
                               "success_rate": success_rate, "p99_ms": p99_s * 1000,
                               "min_requests": min_requests, "failures": failures})
    if problems := policy_problems(policy):
        _fail("; ".join(problems))
    return policy


def _watch(client: RegistryClient, services: list[str], output: str) -> None:
    """Print each new event, show the progress live, and exit when every canary ended."""
    out = Console(highlight=False)
    printed: dict[str, int] = {}
    rolled_back = False
    with Live(console=out, auto_refresh=False, transient=True) as live:
        while True:
            every = {c["service"]: c for c in client.call("GET", "/v1/canaries")["canaries"]}
            mine = [every[s] for s in services if s in every]
            for c in mine:
                for e in c["events"][printed.get(c["service"], 0):]:
                    if output == "json":
                        typer.echo(json.dumps(e, sort_keys=True))
                    else:
                        live.console.print(_event_text(e))
                printed[c["service"]] = len(c["events"])
            if output == "text":
                live.update(Group(*(render(c) for c in mine)), refresh=True)
            if all(c["phase"] != "progressing" for c in mine):
                rolled_back = any(c["phase"] == "rolled_back" for c in mine)
                break
            time.sleep(POLL_S)
    if output == "text":
        for c in mine:
            out.print(render(c))
    if rolled_back:
        raise typer.Exit(1)


def _event_text(e: dict[str, Any]) -> Text:
    colour = {"failed-check": "yellow", "rolled-back": "red", "promoted": "green"}.get(
        e["kind"], "")
    stamp = time.strftime("%H:%M:%S", time.localtime(e["at"]))
    return Text(f"{stamp} {e['message']}", style=colour)


def render(c: dict[str, Any]) -> Table:
    """One canary: phase, weights, step progress, failed checks and the last checks."""
    p = c["policy"]
    phase = {"progressing": "[cyan]progressing[/]", "promoted": "[green]promoted[/]",
             "rolled_back": "[red]rolled back[/]"}[c["phase"]]
    steps = p["steps"]
    done = len(steps) if c["phase"] == "promoted" else c["step"]
    t = Table(title=f"canary {c['service']}: {c['baseline']} -> {c['canary']} {phase} "
                    f"({c['origin']})", title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("weights", f"{c['baseline']} {c['weights'][c['baseline']]}%, "
                         f"{c['canary']} {c['weights'][c['canary']]}%")
    t.add_row("steps", Group(ProgressBar(total=len(steps), completed=done, width=30),
                             Text(" ".join(f"[{s}]" if i == c["step"] and c["phase"] ==
                                           "progressing" else str(s)
                                           for i, s in enumerate(steps)))))
    t.add_row("failed checks", f"{c['failed']}/{p['failures']}")
    t.add_row("thresholds", f"success >= {p['success_rate']:g}%, p99 <= {p['p99_ms']:g}ms, "
                            f">= {p['min_requests']} requests per {p['interval_s']:g}s")
    for check in c["checks"][-3:]:
        w = check["canary"]
        rate = "-" if w["success_rate"] is None else f"{100 * w['success_rate']:.1f}%"
        p99 = "-" if w["p99_ms"] is None else f"{w['p99_ms']:.0f}ms"
        why = "; ".join(check["reasons"])
        verdict = "[green]pass[/]" if check["ok"] else f"[red]fail[/]: {why}"
        t.add_row(f"check at {check['weight']}%",
                  f"{w['requests']:.0f} requests, success {rate}, p99 {p99}: {verdict}")
    return t


def _fail(message: str) -> NoReturn:
    typer.echo(f"meshctl route canary: {message}", err=True)
    raise typer.Exit(1)
