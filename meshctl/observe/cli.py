"""What the observability commands share: the output option, errors, the proxies' metrics."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from common.promparse import Sample, parse
from common.proxies import ObserveError, ProxyInfo
from meshctl.client import RegistryError, RegistryUnavailable
from meshctl.observe.explain import ExplainError


class Output(enum.StrEnum):
    text = "text"
    json = "json"


OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text or json")]
AdminOpt = Annotated[
    str | None,
    typer.Option(
        "--admin",
        help="A proxy's admin listener HOST:PORT (default: the proxies found under MESH_HOME).",
        envvar="MESH_PROXY_ADMIN",
    ),
]


@contextmanager
def user_errors(command: str) -> Iterator[None]:
    """Errors a user can act on become one line on stderr and exit 1 (no traceback)."""
    try:
        yield
    except (ObserveError, ExplainError, RegistryUnavailable, RegistryError) as exc:
        typer.echo(f"meshctl {command}: {exc}", err=True)
        raise typer.Exit(1) from None


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, sort_keys=True))


def scrape(proxies: list[ProxyInfo]) -> dict[str, list[Sample]]:
    return {p.proxy_id: list(parse(p.metrics_text())) for p in proxies}


def fmt(v: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


Printer = Callable[[Any], None]
