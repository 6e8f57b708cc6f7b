"""`meshctl check`: registry, proxies, certificates, clock, interception, config; exit 1 on
a failure."""

from __future__ import annotations

import typer
from rich.console import Console

from common.state import mesh_home
from meshctl.commands.remote import OperatorFileOpt, RegistryOpt, named_client
from meshctl.observe.checks import FAIL, OK, evaluate, gather, worst
from meshctl.observe.cli import Output, OutputOpt, echo_json

__all__ = ["check"]
_MARK = {OK: "[green]ok[/]  ", "warn": "[yellow]warn[/]", FAIL: "[red]FAIL[/]"}


def check(output: OutputOpt = Output.text, registry: RegistryOpt = None,
          operator_token_file: OperatorFileOpt = None) -> None:
    """Is the mesh healthy? Every check says what it saw; warnings do not fail the command.
    From another host (--registry/--operator-token-file): the registry's view; proxies and
    interception are checked on this host only."""
    remote = named_client("check", registry, operator_token_file)
    results = evaluate(gather(mesh_home(), client=remote))
    overall = worst(results)
    if output == Output.json:
        echo_json({"status": overall, "checks": [r.to_wire() for r in results]})
    else:
        out = Console(highlight=False)
        for r in results:
            out.print(f"{_MARK[r.status]} {r.check:<12} {r.subject:<24} {r.detail}")
        out.print(f"overall: {overall}")
    if overall == FAIL:
        raise typer.Exit(1)
