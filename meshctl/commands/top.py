"""`meshctl top [SERVICE]`: a live table of the busiest paths, from the proxies' taps."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from common.proxies import select
from common.state import mesh_home
from common.stats import top_rows
from meshctl.commands.remote import OperatorFileOpt, RegistryOpt, remote
from meshctl.observe.cli import AdminOpt, Output, OutputOpt, echo_json, user_errors
from meshctl.observe.tap import TapFilter, follow

__all__ = ["top"]
WINDOW = 10_000  # events kept for the table


def top(
    service: Annotated[str | None, typer.Argument(help="Only this service's proxies.")] = None,
    duration: Annotated[
        float | None,
        typer.Option(help="Stop after this many seconds (default: until Ctrl-C; json: 5)."),
    ] = None,
    rows: Annotated[int, typer.Option(help="Rows to show.")] = 20,
    admin: AdminOpt = None,
    output: OutputOpt = Output.text,
    registry: RegistryOpt = None,
    operator_token_file: OperatorFileOpt = None,
) -> None:
    """The busiest (destination, method, path) triples: count, success rate, latency. From
    another host (--registry/--operator-token-file), from taps relayed by the registry."""
    events: deque[dict[str, Any]] = deque(maxlen=WINDOW)
    with user_errors("top"):
        proxies = select(mesh_home(), service, admin, remote(registry, operator_token_file))
        # Inbound events only: each request is counted once, at the proxy that served it
        # (a tapped caller's outbound events would count it twice).
        flt = TapFilter(direction=None if service else "inbound")
        if output == Output.json:
            events.extend(follow(proxies, flt, 0, duration or 5.0))
            echo_json({"rows": top_rows(events, rows), "events": len(events)})
            return
        done = threading.Event()

        def pump() -> None:
            for e in follow(proxies, flt, 0, duration):
                events.append(e)
                if done.is_set():
                    return
            done.set()

        threading.Thread(target=pump, daemon=True).start()
        try:
            with Live(_table(events, rows), refresh_per_second=2) as live:
                while not done.is_set():
                    time.sleep(0.5)
                    live.update(_table(events, rows))
        except KeyboardInterrupt:
            pass
        finally:
            done.set()


def _table(events: deque[dict[str, Any]], limit: int) -> Table:
    t = Table(title=f"busiest paths (last {len(events)} requests)", title_justify="left")
    for c in ("destination", "method", "path", "count", "success", "p50", "max"):
        t.add_column(c, justify="right" if c in ("count", "success", "p50", "max") else "left")
    for r in top_rows(list(events), limit):
        t.add_row(
            r["destination"],
            r["method"],
            r["path"],
            str(r["count"]),
            f"{r['success_rate'] * 100:.1f}%",
            f"{r['p50_ms']:.1f} ms",
            f"{r['max_ms']:.1f} ms",
        )
    return t
