"""The sidecar process's entry: `meshctl proxy ...` and `python -m proxy ...` land here.

The documented command is the Typer one (meshctl/commands/proxy.py: its `--help`, its
error messages). Importing Typer and Rich costs a sidecar ~15 MiB of RSS it would keep
for its whole life, so the process parses the same options itself first; only
`--help`, or options it cannot take as they are (a missing or unknown option, a bad
value), go to the Typer command, which then says what is wrong exactly as documented.
tests/commands/test_proxy_entry.py checks that both parsers know the same options.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshctl.state import mesh_home


class UsageError(ValueError):
    """An option value the proxy cannot use; the message names the option."""


@dataclass(frozen=True, slots=True)
class Opt:
    """One option of `meshctl proxy`, as the lean parser reads it."""

    flag: str
    dest: str
    type: Callable[[str], Any] = str
    default: Any = None
    required: bool = False
    multiple: bool = False
    envvar: str | None = None


# The same options as the Typer command, in its order: keep the two in step (a test does).
OPTIONS = (
    Opt("--service", "service", required=True),
    Opt("--registry", "registry", required=True, envvar="MESH_REGISTRY"),
    Opt("--token-file", "token_file", Path, required=True),
    Opt("--ca-file", "ca_file", Path),
    Opt("--version", "version"),
    Opt("--advertise", "advertise", default="127.0.0.1"),
    Opt("--inbound", "inbound", default="0.0.0.0:15006"),
    Opt("--outbound", "outbound"),
    Opt("--published", "published"),
    Opt("--upstream", "upstream", multiple=True),
    Opt("--app", "app_addr", multiple=True),
    Opt("--admin", "admin", default="127.0.0.1:15000"),
    Opt("--metrics", "metrics", default="0.0.0.0:15090"),
    Opt("--proxy-id", "proxy_id", default=""),
    Opt("--header-timeout", "header_timeout", float, default=60.0),
    Opt("--max-connections", "max_connections", int, default=10_000),
    Opt("--trace-sampling", "trace_sampling", float, default=0.0, envvar="MESH_TRACE_SAMPLING"),
    Opt("--otlp-endpoint", "otlp_endpoint", envvar="MESH_OTLP_ENDPOINT"),
    Opt("--drain", "drain", float, default=5.0),
)


class _Refused(Exception):
    """The lean parser will not take these arguments: the Typer command reports why."""


def parse(argv: Sequence[str]) -> dict[str, Any]:
    """The options as keyword arguments of `run`; _Refused for anything but a plain run.

    By hand rather than with argparse, whose formatter imports shutil (and bz2 and lzma
    under it, ~1 MiB of RSS): `--flag VALUE` or `--flag=VALUE`, nothing else.
    """
    by_flag = {o.flag: o for o in OPTIONS}
    values: dict[str, Any] = {o.dest: [] for o in OPTIONS if o.multiple}
    i = 0
    while i < len(argv):
        flag, eq, raw = argv[i].partition("=")
        o = by_flag.get(flag)
        if o is None:
            raise _Refused(f"not an option: {argv[i]}")  # --help, an unknown one, a stray
        if not eq:
            i += 1
            if i == len(argv):
                raise _Refused(f"{flag} needs a value")
            raw = argv[i]
        i += 1
        if o.multiple:
            values[o.dest].append(raw)
        else:
            values[o.dest] = raw
    kwargs: dict[str, Any] = {}
    for o in OPTIONS:
        value = values.get(o.dest)
        if value is None and o.envvar:
            value = os.environ.get(o.envvar)
        if value is None:
            if o.required:
                raise _Refused(f"missing {o.flag}")
            value = o.default
        elif not o.multiple:
            try:
                value = o.type(value)
            except ValueError as exc:
                raise _Refused(f"{o.flag}: {exc}") from None
        kwargs[o.dest] = value
    token = kwargs["token_file"]
    if not token.is_file() or not 0.0 <= kwargs["trace_sampling"] <= 100.0:
        raise _Refused("a value the Typer command checks")
    return kwargs


def hostport(value: str, default_host: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise UsageError(f"`{value}` is not HOST:PORT or PORT")
    return (host or default_host), int(port)


def run(
    *,
    service: str,
    registry: str,
    token_file: Path,
    ca_file: Path | None,
    version: str | None,
    advertise: str,
    inbound: str,
    outbound: str | None,
    published: str | None,
    upstream: Sequence[str],
    app_addr: Sequence[str],
    admin: str,
    metrics: str,
    proxy_id: str,
    header_timeout: float,
    max_connections: int,
    trace_sampling: float,
    otlp_endpoint: str | None,
    drain: float,
) -> None:
    """Build the proxy's options, then run it until SIGTERM. UsageError for a bad value;
    JoinError, OSError or TimeoutError when it cannot start."""
    from proxy.main import Proxy, ProxyOptions, Upstream

    ups = []
    for u in upstream:
        left, _, right = u.partition("=")
        svc, _, port = left.partition(":")
        if not (svc and port.isdigit() and right):
            raise UsageError(f"--upstream `{u}`: expected SERVICE:PORT=[HOST:]LOCALPORT")
        host, lport = hostport(right, "127.0.0.1")
        ups.append(Upstream(svc, int(port), host, lport))
    apps = {}
    for a in app_addr:
        port, _, target = a.partition("=")
        if not port.isdigit():
            raise UsageError(f"--app `{a}`: expected PORT=HOST:PORT")
        apps[int(port)] = hostport(target, "127.0.0.1")
    home = mesh_home() / "proxies" / (proxy_id or service)
    opts = ProxyOptions(
        registry_url=registry,
        ca_file=ca_file or mesh_home() / "registry" / "ca" / "ca.crt",
        token=token_file.read_text().strip(),
        service=service,
        home=home,
        version=version,
        advertise=advertise,
        inbound=hostport(inbound, "0.0.0.0"),
        outbound=hostport(outbound, "127.0.0.1") if outbound else None,
        published=hostport(published, "0.0.0.0") if published else None,
        upstreams=tuple(ups),
        apps=apps,
        admin=hostport(admin, "127.0.0.1"),
        metrics=hostport(metrics, "0.0.0.0"),
        proxy_id=proxy_id,
        header_timeout_s=header_timeout,
        max_connections=max_connections,
        drain_s=drain,
        trace_sampling=trace_sampling,
        otlp_endpoint=otlp_endpoint,
    )
    logging.basicConfig(
        level=getattr(logging, os.environ.get("MESH_LOG", "INFO")),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    _event_loop_run(_run(Proxy(opts)))


def _event_loop_run(coro: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed (a C-speed loop for the hot path), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)
        return
    uvloop.run(coro)


async def _run(p: object) -> None:
    from proxy.main import Proxy

    assert isinstance(p, Proxy)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await p.start()
    await stop.wait()
    await p.stop()


def _typer(args: list[str]) -> None:
    from meshctl.commands.proxy import app

    app(args=args)


def main(
    argv: Sequence[str] | None = None, documented: Callable[[list[str]], None] = _typer
) -> None:
    """Run a sidecar from the command line. `documented(args)` runs the Typer command, for
    help and usage errors (`meshctl proxy`, or `python -m proxy`'s own app)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        kwargs = parse(args)
    except _Refused:
        documented(args)
        return
    try:
        run(**kwargs)
    except UsageError:
        documented(args)  # says it the documented way, exit 2
    except Exception as exc:
        from proxy.control.client import JoinError

        if isinstance(exc, (JoinError, OSError, TimeoutError)):
            print(f"meshctl proxy: {exc}", file=sys.stderr)
            sys.exit(1)
        raise
