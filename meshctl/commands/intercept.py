"""`meshctl intercept install|remove`: the iptables interception, for systemd units and by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import typer

from common.state import mesh_home
from meshctl.launch.procs import pid_alive
from proxy.intercept import iptables
from proxy.intercept.rules import ALL, EXCLUDE_INBOUND_DEFAULT, InterceptConfig

__all__ = ["app"]

app = typer.Typer(
    help="Transparent interception rules (iptables REDIRECT) for one workload; "
    "see docs/interception.md.",
    no_args_is_help=True,
)

Netns = Annotated[
    str | None,
    typer.Option(help="Network namespace name (`ip netns`) or a pid; default: this one."),
]


def _target(netns: str | None) -> str | int | None:
    return int(netns) if netns is not None and netns.isdigit() else netns


def _netns_file(target: str | int | None) -> str:
    if target is None:
        return "/proc/self/ns/net"
    return f"/proc/{target}/ns/net" if isinstance(target, int) else f"/run/netns/{target}"


def registry_here(home: Path, target: str | int | None) -> int | None:
    """The API port of MESH_HOME's registry when it runs in the target namespace, else None.

    Every inbound port is captured by default: a registry sharing the namespace (a VM that
    is also the registry's host) would have the proxies' connections to its port sent to
    15006, so that port is excluded without being asked (docs/systemd.md). Its monitor
    port listens on loopback only, which inbound capture never sees."""
    try:
        ep = json.loads((home / "registry" / "endpoint.json").read_text())
        pid, port = int(ep["pid"]), urlsplit(str(ep["url"])).port
        if port is None or not pid_alive(pid):
            return None
        same = os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(_netns_file(target)).st_ino
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return port if same else None


def _inbound(text: str) -> tuple[int, ...] | Literal["*"]:
    return ALL if text.strip() == ALL else _ports(text, "--inbound-ports")


def _ports(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise typer.BadParameter(f"{what}: comma-separated port numbers, not {text!r}") from None


@app.command("install")
def install(
    service: Annotated[str, typer.Option(help="The service whose traffic is intercepted.")],
    inbound_ports: Annotated[
        str,
        typer.Option(
            help='Ports captured inbound: "*" (every port but the excluded: Istio\'s '
            "includeInboundPorts default), a list such as 8080,9090, or \"\" for none."
        ),
    ] = ALL,
    exclude_inbound_ports: Annotated[
        str,
        typer.Option(
            help="Ports never captured inbound (Istio's excludeInboundPorts), e.g. 9100; "
            f"added to {','.join(map(str, EXCLUDE_INBOUND_DEFAULT))} and the proxy's 15001, "
            "15006."
        ),
    ] = "",
    proxy_uid: Annotated[int, typer.Option(help="The proxy's uid: its traffic is let out.")] = 1337,
    proxy_gid: Annotated[int | None, typer.Option(help="The proxy's gid, also let out.")] = None,
    exclude_outbound_cidr: Annotated[
        list[str],
        typer.Option(help="Destinations never redirected (IPv4 or IPv6), e.g. the registry's /32."),
    ] = [],  # noqa: B006
    exclude_outbound_ports: Annotated[
        str, typer.Option(help="Outbound ports never redirected, e.g. 5432.")
    ] = "",
    dns: Annotated[
        bool,
        typer.Option("--dns/--no-dns",
                     help="Redirect the app's UDP and TCP port 53 to the proxy's DNS listener, "
                          "which answers mesh names (on by default: nothing else resolves "
                          "them on a VM)."),
    ] = True,
    dns_port: Annotated[
        int, typer.Option(help="The proxy's DNS port (`meshctl proxy --dns-port`).")
    ] = 15053,
    netns: Netns = None,
) -> None:
    """Install (or replace) the interception rules of SERVICE: one atomic transaction."""
    registry = registry_here(mesh_home(), _target(netns))
    try:
        cfg = InterceptConfig(
            proxy_uid=proxy_uid,
            proxy_gid=proxy_gid,
            inbound_ports=_inbound(inbound_ports),
            exclude_inbound_ports=(
                *EXCLUDE_INBOUND_DEFAULT,
                *_ports(exclude_inbound_ports, "--exclude-inbound-ports"),
                *([] if registry is None else [registry]),
            ),
            exclude_outbound_ports=_ports(exclude_outbound_ports, "--exclude-outbound-ports"),
            exclude_outbound_cidrs=tuple(exclude_outbound_cidr),
            dns_port=dns_port if dns else None,
        )
        iptables.install(cfg, _target(netns))
    except ValueError as exc:
        typer.echo(f"meshctl intercept install: {service}: {exc}", err=True)
        raise typer.Exit(2) from None
    except iptables.InterceptError as exc:
        typer.echo(f"meshctl intercept install: {service}: {exc}", err=True)
        raise typer.Exit(1) from None
    where = f"namespace {netns}" if netns else "this namespace"
    also = "" if registry is None else f" (the registry's port {registry} excluded: it runs here)"
    typer.echo(f"interception for {service} installed in {where}{also}")


@app.command("remove")
def remove(
    service: Annotated[str, typer.Option(help="The service whose interception is removed.")],
    netns: Netns = None,
) -> None:
    """Remove the interception rules (our chains and jumps only); fine if none are there."""
    try:
        iptables.remove(_target(netns))
    except iptables.InterceptError as exc:
        typer.echo(f"meshctl intercept remove: {service}: {exc}", err=True)
        raise typer.Exit(1) from None
    where = f"namespace {netns}" if netns else "this namespace"
    typer.echo(f"interception for {service} removed from {where}")


@app.command("status")
def show(netns: Netns = None) -> None:
    """Print whether the rules are installed, and the nat tables (IPv4, then IPv6)."""
    try:
        target = _target(netns)
        texts = [iptables.dump(target, family=f) for f in iptables.families()]
        installed = iptables.installed(target)
    except iptables.InterceptError as exc:
        typer.echo(f"meshctl intercept status: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("installed" if installed else "not installed")
    for text in texts:
        typer.echo(text.rstrip())
