"""`meshctl stat [SERVICE]`: golden metrics per service and per edge, like `linkerd viz stat`."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from common.proxies import ObserveError, ProxyInfo, select
from common.state import mesh_home
from common.stats import Row
from common.stats import stat as compute
from meshctl.commands.remote import OperatorFileOpt, RegistryOpt, remote
from meshctl.observe.cli import AdminOpt, Output, OutputOpt, echo_json, fmt, scrape, user_errors
from registry.config.model import Service
from registry.config.opaque import stat_notes
from registry.config.wire import from_wire

__all__ = ["stat"]


def stat(
    service: Annotated[str | None, typer.Argument(help="Only this service (default: all).")] = None,
    interval: Annotated[
        float, typer.Option(help="Seconds between the two scrapes the rates come from.")
    ] = 2.0,
    admin: AdminOpt = None,
    output: OutputOpt = Output.text,
    registry: RegistryOpt = None,
    operator_token_file: OperatorFileOpt = None,
) -> None:
    """Success rate, requests per second, p50/p95/p99 latency and TCP connections per service
    (inbound, from the destination's proxies) and per edge (from the callers' proxies)."""
    with user_errors("stat"):
        proxies = select(mesh_home(), None, admin,
                         remote(registry, operator_token_file))  # edges need every caller's proxy
        first = scrape(proxies)
        t0 = time.monotonic()
        time.sleep(interval)
        second = scrape(proxies)
        result = compute(first, second, time.monotonic() - t0, service)
        notes = _notes(proxies, service)
    if output == Output.json:
        echo_json(
            {
                "interval_s": interval,
                "proxies": [p.proxy_id for p in proxies],
                "services": [r.to_wire() for r in result["services"]],
                "edges": [r.to_wire() for r in result["edges"]],
                "notes": notes,
            }
        )
        return
    out = Console(highlight=False)
    for title, rows in (("services (inbound)", result["services"]), ("edges", result["edges"])):
        out.print(_table(title, rows))
    for note in notes:
        out.print(f"[yellow]note:[/] {note}")


def _notes(proxies: list[ProxyInfo], service: str | None) -> list[str]:
    """What the tables cannot show as requests (ports relayed as TCP), from the config one
    of the proxies runs (the same mesh-wide config for all)."""
    for p in proxies:
        try:
            config = (p.admin_json("/config_dump") or {}).get("config")
            if config:
                services = [from_wire(Service, s) for s in config.get("services", [])]
                return stat_notes(services, service)
        except (ObserveError, ValueError, TypeError, AttributeError):
            continue  # another proxy may answer; the tables stand without the notes
    return []


def _table(title: str, rows: list[Row]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in ("name", "success", "rps", "p50", "p95", "p99", "tcp open", "requests total"):
        t.add_column(c, justify="left" if c == "name" else "right")
    for r in rows:
        sr = r.success_rate
        colour = "green" if sr is None or sr >= 0.99 else "yellow" if sr >= 0.95 else "red"
        t.add_row(
            r.name,
            f"[{colour}]{fmt(None if sr is None else sr * 100, '.2f', '%')}[/]",
            f"{r.rps:.1f}",
            fmt(r.p50_ms, ".0f", " ms"),
            fmt(r.p95_ms, ".0f", " ms"),
            fmt(r.p99_ms, ".0f", " ms"),
            f"{r.tcp_open:.0f}",
            f"{r.requests_total:.0f}",
        )
    return t
