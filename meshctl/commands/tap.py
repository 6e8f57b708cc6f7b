"""`meshctl tap SERVICE`: a live stream of the requests through a service's proxies."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from common.proxies import select
from common.state import mesh_home
from meshctl.commands.remote import OperatorFileOpt, RegistryOpt, remote
from meshctl.observe.cli import AdminOpt, Output, OutputOpt, user_errors
from meshctl.observe.tap import TapFilter, follow

__all__ = ["tap"]


def tap(
    service: Annotated[str, typer.Argument(help="The service (or proxy id) to tap.")],
    path: Annotated[str | None, typer.Option(help="Only paths starting with this.")] = None,
    method: Annotated[str | None, typer.Option(help="Only this method.")] = None,
    status: Annotated[int | None, typer.Option(help="Only this response status.")] = None,
    direction: Annotated[
        str | None, typer.Option(help="inbound (calls to it) or outbound (its calls).")
    ] = None,
    max_events: Annotated[int, typer.Option("--max", help="Stop after N requests (0: never).")] = 0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    admin: AdminOpt = None,
    output: OutputOpt = Output.text,
    registry: RegistryOpt = None,
    operator_token_file: OperatorFileOpt = None,
) -> None:
    """Follow requests as the proxies finish them: direction, method, path, status, latency,
    the peer's SPIFFE ID and Envoy's response flags. Ctrl-C stops. From another host
    (--registry/--operator-token-file), every proxy is tapped through the registry."""
    if direction not in (None, "inbound", "outbound"):
        raise typer.BadParameter("--direction must be inbound or outbound")
    flt = TapFilter(path=path, method=method, status=status, direction=direction)
    out = Console(highlight=False)
    with user_errors("tap"):
        proxies = select(mesh_home(), service, admin, remote(registry, operator_token_file))
        try:
            for e in follow(proxies, flt, max_events, duration):
                if output == Output.json:
                    typer.echo(json.dumps(e, sort_keys=True))
                    continue
                arrow = "->" if e["direction"] == "outbound" else "<-"
                st = int(e["status"])
                colour = "green" if st < 400 else "yellow" if st < 500 else "red"
                out.print(
                    f"{e['proxy']} {arrow} {e['destination']} {e['method']} {e['path']} "
                    f"[{colour}]{st}[/] {e['latency_ms']:.1f} ms flags={e['flags']} "
                    f"peer={e['peer'] or '-'}"
                )
        except KeyboardInterrupt:
            pass
