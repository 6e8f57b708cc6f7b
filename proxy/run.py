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

from common.state import mesh_home


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
    switch: bool = False  # a flag without a value (`--no-dns`): True when given


# The same options as the Typer command, in its order: keep the two in step (a test does).
OPTIONS = (
    Opt("--service", "service", required=True),
    Opt("--registry", "registry", envvar="MESH_REGISTRY"),
    Opt("--token-file", "token_file", Path, required=True),
    Opt("--ca-file", "ca_file", Path),
    Opt("--version", "version"),
    Opt("--advertise", "advertise", default="auto"),
    Opt("--inbound", "inbound", default="0.0.0.0:15006"),
    Opt("--outbound", "outbound"),
    Opt("--dns-port", "dns_port", int, default=15053),
    Opt("--no-dns", "no_dns", bool, default=False, switch=True),
    Opt("--published", "published"),
    Opt("--upstream", "upstream", multiple=True),
    Opt("--app", "app_addr", multiple=True),
    Opt("--admin", "admin", default="127.0.0.1:15000"),
    Opt("--metrics", "metrics", default="0.0.0.0:15090"),
    Opt("--proxy-id", "proxy_id", default=""),
    Opt("--header-timeout", "header_timeout", float, default=60.0),
    Opt("--body-idle-timeout", "body_idle_timeout", float, default=30.0),
    Opt("--request-timeout", "request_timeout", float, default=300.0),
    Opt("--max-connections", "max_connections", int, default=10_000),
    Opt("--max-inbound-connections", "max_inbound_connections", int, default=10_000,
        envvar="MESH_PROXY_MAX_INBOUND_CONNECTIONS"),
    Opt("--max-connections-per-source", "max_connections_per_source", int, default=1024,
        envvar="MESH_PROXY_MAX_CONNECTIONS_PER_SOURCE"),
    Opt("--inbound-handshake-timeout", "inbound_handshake_timeout", float, default=5.0,
        envvar="MESH_PROXY_INBOUND_HANDSHAKE_TIMEOUT"),
    Opt("--trace-sampling", "trace_sampling", float, default=0.0, envvar="MESH_TRACE_SAMPLING"),
    Opt("--otlp-endpoint", "otlp_endpoint", envvar="MESH_OTLP_ENDPOINT"),
    Opt("--drain", "drain", float, default=5.0),
    Opt("--gateway", "gateway", bool, default=False, switch=True),
    Opt("--gateway-address", "gateway_address", default="0.0.0.0"),
    Opt("--credentials", "credentials", Path),
    Opt("--num-trusted-proxies", "num_trusted_proxies", int, default=0),
    Opt("--max-request-bytes", "max_request_bytes", int, default=0),
    Opt("--rate-limit", "rate_limit"),
    Opt("--access-log", "access_log"),
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
        if o.switch:
            if eq:
                raise _Refused(f"{flag} takes no value")
            values[o.dest] = True
            i += 1
            continue
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
        elif not o.multiple and not o.switch:
            try:
                value = o.type(value)
            except ValueError as exc:
                raise _Refused(f"{o.flag}: {exc}") from None
        kwargs[o.dest] = value
    token = kwargs["token_file"]
    if (
        not token.is_file()
        or not 0.0 <= kwargs["trace_sampling"] <= 100.0
        or kwargs["max_inbound_connections"] < 1
        or kwargs["max_connections_per_source"] < 0
        or kwargs["inbound_handshake_timeout"] <= 0
        or not 1 <= kwargs["dns_port"] <= 65535
    ):
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
    registry: str | None,
    token_file: Path,
    ca_file: Path | None,
    version: str | None,
    advertise: str,
    inbound: str,
    outbound: str | None,
    dns_port: int,
    no_dns: bool,
    published: str | None,
    upstream: Sequence[str],
    app_addr: Sequence[str],
    admin: str,
    metrics: str,
    proxy_id: str,
    header_timeout: float,
    body_idle_timeout: float,
    request_timeout: float,
    max_connections: int,
    max_inbound_connections: int,
    max_connections_per_source: int,
    inbound_handshake_timeout: float,
    trace_sampling: float,
    otlp_endpoint: str | None,
    drain: float,
    gateway: bool = False,
    gateway_address: str = "0.0.0.0",
    credentials: Path | None = None,
    num_trusted_proxies: int = 0,
    max_request_bytes: int = 0,
    rate_limit: str | None = None,
    access_log: str | None = None,
) -> None:
    """Build the proxy's options, then run it until SIGTERM. UsageError for a bad value;
    JoinError, OSError or TimeoutError when it cannot start."""
    from proxy.control.bootstrap import BootstrapError, bootstrap, registry_url
    from proxy.main import Proxy, ProxyOptions, Upstream
    from registry.ca import joinstring

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
    for flag, seconds in (("--body-idle-timeout", body_idle_timeout),
                          ("--request-timeout", request_timeout)):
        if not seconds >= 0:  # NaN too
            raise UsageError(f"{flag} {seconds}: expected seconds >= 0 (0: no timeout)")
    home = mesh_home() / "proxies" / (proxy_id or service)
    if registry is not None:
        try:
            registry_url(registry)
        except ValueError as exc:
            raise UsageError(f"--registry: {exc}") from None
    try:
        join = joinstring.parse(token_file.read_text())
    except ValueError as exc:
        raise BootstrapError(f"{token_file}: {exc}") from None
    boot = bootstrap(
        join,
        registry=registry,
        ca_file=ca_file,
        default_ca=mesh_home() / "registry" / "ca" / "ca.crt",
        state_dir=home,
        advertise=advertise,
    )
    gw = None
    labels: dict[str, str] = {}
    if not gateway and (credentials or rate_limit or num_trusted_proxies or max_request_bytes
                        or access_log or gateway_address != "0.0.0.0"):
        raise UsageError("--gateway-address, --credentials, --num-trusted-proxies, "
                         "--max-request-bytes, --rate-limit and --access-log go with --gateway")
    if access_log is not None and access_log not in ("off", "stdout") and not (
            access_log.startswith("/")):
        raise UsageError(f"--access-log `{access_log}`: expected off, stdout or an absolute "
                         "file path")
    if gateway:
        from proxy.gateway.server import GatewayOptions, parse_rate_limit

        if num_trusted_proxies < 0 or max_request_bytes < 0:
            raise UsageError("--num-trusted-proxies and --max-request-bytes: expected >= 0")
        try:
            limit = parse_rate_limit(rate_limit) if rate_limit else None
        except ValueError as exc:
            raise UsageError(f"--rate-limit {exc}") from None
        gw = GatewayOptions(gateway_address, credentials, num_trusted_proxies,
                            max_request_bytes, limit, access_log or "off")
        labels = {"istio": service}  # what Istio's Gateway selectors name
    opts = ProxyOptions(
        registry_url=boot.registry_url,
        ca_file=boot.ca_file,
        token=join.token,
        service=service,
        home=home,
        version=version,
        advertise=boot.advertise,
        inbound=hostport(inbound, "0.0.0.0"),
        outbound=hostport(outbound, "127.0.0.1") if outbound else None,
        # DNS goes with transparent mode: the interception rules bring the app's port-53
        # queries to it. Explicit mode has no redirect, so nothing would ever ask.
        dns=("127.0.0.1", dns_port) if outbound and not no_dns else None,
        published=hostport(published, "0.0.0.0") if published else None,
        upstreams=tuple(ups),
        apps=apps,
        admin=hostport(admin, "127.0.0.1"),
        metrics=hostport(metrics, "0.0.0.0"),
        proxy_id=proxy_id,
        header_timeout_s=header_timeout,
        body_idle_timeout_s=body_idle_timeout,
        request_timeout_s=request_timeout,
        max_connections=max_connections,
        max_inbound_connections=max_inbound_connections,
        max_connections_per_source=max_connections_per_source,
        inbound_handshake_timeout_s=inbound_handshake_timeout,
        drain_s=drain,
        trace_sampling=trace_sampling,
        otlp_endpoint=otlp_endpoint,
        gateway=gw,
        labels=labels,
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
    from common import sdnotify
    from proxy.main import Proxy

    assert isinstance(p, Proxy)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await p.start()
    # Listeners bound and the first config in: a Type=notify unit is now "started", and
    # systemd starts the app after it (sd_notify(3)).
    with contextlib.suppress(OSError):
        sdnotify.notify("READY=1")
    await stop.wait()
    with contextlib.suppress(OSError):
        sdnotify.notify("STOPPING=1")
    await p.stop()


def main(argv: Sequence[str] | None, documented: Callable[[list[str]], None]) -> None:
    """Run a sidecar from the command line. `documented(args)` runs the Typer command, for
    help and usage errors (`meshctl proxy`, or `python -m proxy`'s own app): handed in by
    the entry point, which sits above this package (imports point down)."""
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
        from proxy.control.bootstrap import BootstrapError
        from proxy.control.client import JoinError

        if isinstance(exc, (BootstrapError, JoinError, OSError, TimeoutError)):
            print(f"meshctl proxy: {exc}", file=sys.stderr)
            sys.exit(1)
        raise
