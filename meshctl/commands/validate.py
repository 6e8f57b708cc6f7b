"""`meshctl validate DIR`: load a config directory and report every error, or summarise it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from registry.config import load_directory, summary_lines

__all__ = ["validate"]


def validate(
    directory: Annotated[
        Path, typer.Argument(help="The config directory: mesh.yaml plus Istio resources.")
    ] = Path("mesh"),
) -> None:
    """Check a config directory as the registry would; exit 1 listing every error."""
    result = load_directory(directory)
    if result.config is None or result.errors:
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        for diagnostic in result.errors:
            err.print(str(diagnostic), markup=False)
        err.print(f"[bold red]{len(result.errors)} error(s)[/] in {directory}")
        raise typer.Exit(1)
    out = Console(highlight=False)
    out.print(f"[bold green]valid[/] {directory}")
    for line in summary_lines(result.config):
        out.print(line, markup=False)
