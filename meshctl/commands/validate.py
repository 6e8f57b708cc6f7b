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
    """Check a config directory as the registry would; exit 1 listing every error (warnings,
    for what is accepted but not done as written, leave the exit status 0)."""
    result = load_directory(directory)
    if result.config is None or result.errors:
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        for diagnostic in result.errors:
            err.print(str(diagnostic), markup=False)
        err.print(f"[bold red]{len(result.errors)} error(s)[/] in {directory}")
        raise typer.Exit(1)
    if result.warnings:  # valid, but not doing all it says: on stderr, exit status 0
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        for diagnostic in result.warnings:
            err.print(f"{diagnostic.file}:{diagnostic.line}:{diagnostic.column}: warning: "
                      f"{diagnostic.path}: {diagnostic.message}", markup=False)
    out = Console(highlight=False)
    out.print(f"[bold green]valid[/] {directory}"
              + (f" ([yellow]{len(result.warnings)} warning(s)[/])" if result.warnings else ""),
              soft_wrap=True)
    for line in summary_lines(result.config):
        out.print(line, markup=False)
