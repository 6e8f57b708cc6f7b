"""`meshctl systemd render|install proxy|registry`: systemd units for meshing a VM."""

from __future__ import annotations

import enum
import os
import pwd
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from meshctl.launch import systemd

app = typer.Typer(
    help="systemd units for a VM: the registry, and a sidecar proxy beside an existing "
    "service unit (see docs/systemd.md).",
    no_args_is_help=True,
)


class Kind(enum.StrEnum):
    proxy = "proxy"
    registry = "registry"


KindArg = Annotated[
    Kind,
    typer.Argument(help="proxy: a sidecar and the app's drop-in; registry: the control plane."),
]
Service = Annotated[str | None, typer.Option("--service", "-s", help="Mesh service (proxy).")]
Version = Annotated[str | None, typer.Option(help="Workload version label, e.g. v2 (proxy).")]
AppUnit = Annotated[
    str | None, typer.Option(help="The app's unit (proxy; default SERVICE.service).")
]
Registry = Annotated[
    str, typer.Option(help="Registry address HOST:PORT (proxy).", envvar="MESH_REGISTRY")
]
TokenFile = Annotated[
    str | None,
    typer.Option(help="Join token file (proxy; default /etc/meshctl/SERVICE.token)."),
]
Ports = Annotated[
    list[int] | None,
    typer.Option("--port", "-p", help="The app's inbound port, repeatable (proxy)."),
]
ExcludeInbound = Annotated[
    list[int] | None,
    typer.Option(
        "--exclude-inbound-port",
        help="A port never captured inbound (Istio's excludeInboundPorts), repeatable (proxy).",
    ),
]
ProxyUid = Annotated[int, typer.Option(help="The proxy's uid, excluded from interception.")]
MeshctlBin = Annotated[
    str | None, typer.Option(help="Absolute path of meshctl (default: this meshctl).")
]
MeshHome = Annotated[str, typer.Option(help="State directory of the unit's process.")]
ConfigDir = Annotated[str, typer.Option("--config", help="Config directory (registry).")]
Listen = Annotated[str | None, typer.Option(help="Address the API listens on (registry).")]
RegistryPort = Annotated[int | None, typer.Option(help="API port (registry).")]
User = Annotated[str, typer.Option(help="System user that runs the registry.")]
Notify = Annotated[
    bool, typer.Option(help="Type=notify: the app starts once its proxy listens (proxy).")
]


def _meshctl_bin(given: str | None) -> str:
    if given:
        return given
    found = shutil.which("meshctl") or sys.argv[0]
    return str(Path(found).resolve()) if found else "/usr/local/bin/meshctl"


def _units(
    kind: Kind,
    *,
    service: str | None,
    version: str | None,
    app_unit: str | None,
    registry: str,
    token_file: str | None,
    ports: list[int] | None,
    proxy_uid: int,
    exclude_inbound: list[int] | None,
    meshctl_bin: str | None,
    mesh_home: str,
    config_dir: str,
    listen: str | None,
    registry_port: int | None,
    user: str,
    notify: bool,
) -> dict[str, str]:
    binary = _meshctl_bin(meshctl_bin)
    if kind is Kind.registry:
        return {
            systemd.REGISTRY_UNIT: systemd.render_registry_unit(
                meshctl_bin=binary,
                config_dir=config_dir,
                mesh_home=mesh_home,
                user=user,
                listen=listen,
                port=registry_port,
            )
        }
    if not service:
        raise ValueError("a proxy unit needs --service (the mesh service of the app)")
    if not ports:
        raise ValueError("a proxy unit needs --port (the app's inbound port; repeatable)")
    return systemd.render_proxy_units(
        service=service,
        version=version,
        app_unit=app_unit or f"{service}.service",
        meshctl_bin=binary,
        mesh_home=mesh_home,
        registry=registry,
        token_file=token_file or f"/etc/meshctl/{service}.token",
        inbound_ports=ports,
        proxy_uid=proxy_uid,
        notify=notify,
        exclude_inbound_ports=exclude_inbound or (),
    )


def _fail(err: Exception, code: int) -> typer.Exit:
    typer.echo(f"meshctl systemd: {err}", err=True)
    return typer.Exit(code)


@app.command()
def render(
    kind: KindArg = Kind.proxy,
    service: Service = None,
    version: Version = None,
    app_unit: AppUnit = None,
    registry: Registry = "127.0.0.1:15012",
    token_file: TokenFile = None,
    port: Ports = None,
    proxy_uid: ProxyUid = systemd.PROXY_UID,
    exclude_inbound_port: ExcludeInbound = None,
    meshctl_bin: MeshctlBin = None,
    mesh_home: MeshHome = "/var/lib/meshctl",
    config: ConfigDir = "/etc/meshctl",
    listen: Listen = None,
    registry_port: RegistryPort = None,
    user: User = "meshctl",
    notify: Notify = True,
    out: Annotated[
        Path | None, typer.Option(help="Write the units under this directory, not to stdout.")
    ] = None,
) -> None:
    """Print the units (or write them under --out), e.g. to review or ship them."""
    try:
        units = _units(
            kind,
            service=service,
            version=version,
            app_unit=app_unit,
            registry=registry,
            token_file=token_file,
            ports=port,
            proxy_uid=proxy_uid,
            exclude_inbound=exclude_inbound_port,
            meshctl_bin=meshctl_bin,
            mesh_home=mesh_home,
            config_dir=config,
            listen=listen,
            registry_port=registry_port,
            user=user,
            notify=notify,
        )
        if out is None:
            for rel, text in units.items():
                typer.echo(f"# ---- {rel}\n{text}")
            return
        for path in systemd.install_units(units, out, reload=False):
            typer.echo(f"wrote {path}")
    except ValueError as e:
        raise _fail(e, 2) from None
    except systemd.SystemdError as e:
        raise _fail(e, 1) from None


@app.command()
def install(
    kind: KindArg = Kind.proxy,
    service: Service = None,
    version: Version = None,
    app_unit: AppUnit = None,
    registry: Registry = "127.0.0.1:15012",
    token_file: TokenFile = None,
    port: Ports = None,
    proxy_uid: ProxyUid = systemd.PROXY_UID,
    exclude_inbound_port: ExcludeInbound = None,
    meshctl_bin: MeshctlBin = None,
    mesh_home: MeshHome = "/var/lib/meshctl",
    config: ConfigDir = "/etc/meshctl",
    listen: Listen = None,
    registry_port: RegistryPort = None,
    user: User = "meshctl",
    notify: Notify = True,
) -> None:
    """Write the units to /etc/systemd/system, create the state directory, daemon-reload."""
    if os.geteuid() != 0:
        raise _fail(ValueError("install needs root (or use `render --out DIR`)"), 1)
    try:
        units = _units(
            kind,
            service=service,
            version=version,
            app_unit=app_unit,
            registry=registry,
            token_file=token_file,
            ports=port,
            proxy_uid=proxy_uid,
            exclude_inbound=exclude_inbound_port,
            meshctl_bin=meshctl_bin,
            mesh_home=mesh_home,
            config_dir=config,
            listen=listen,
            registry_port=registry_port,
            user=user,
            notify=notify,
        )
        if kind is Kind.registry:
            try:
                owner = pwd.getpwnam(user)
            except KeyError:
                raise systemd.SystemdError(
                    f"user {user!r} does not exist: create it with `useradd --system "
                    f"--no-create-home --shell /usr/sbin/nologin {user}`"
                ) from None
            systemd.prepare_state_dir(Path(mesh_home), owner.pw_uid, owner.pw_gid)
        else:
            systemd.prepare_state_dir(Path(mesh_home), proxy_uid, proxy_uid)
        for path in systemd.install_units(units):
            typer.echo(f"wrote {path}")
    except ValueError as e:
        raise _fail(e, 2) from None
    except systemd.SystemdError as e:
        raise _fail(e, 1) from None
    if kind is Kind.registry:
        typer.echo(f"start it: systemctl enable --now {systemd.REGISTRY_UNIT}")
    else:
        typer.echo(f"mesh the app: systemctl restart {app_unit or f'{service}.service'}")
