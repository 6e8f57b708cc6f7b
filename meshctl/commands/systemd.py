"""`meshctl systemd render|install proxy|registry|gateway`: systemd units for meshing a VM."""

from __future__ import annotations

import enum
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from meshctl.launch import gateway_unit, systemd

app = typer.Typer(
    help="systemd units for a VM: the registry, and a sidecar proxy beside an existing "
    "service unit (see docs/systemd.md).",
    no_args_is_help=True,
)


class Kind(enum.StrEnum):
    proxy = "proxy"
    registry = "registry"
    gateway = "gateway"


KindArg = Annotated[
    Kind,
    typer.Argument(help="proxy: a sidecar and the app's drop-in; registry: the control plane; "
                        "gateway: a gateway proxy serving Istio Gateways (docs/gateway.md)."),
]
Credentials = Annotated[
    list[str] | None,
    typer.Option("--credential", help="A credentialName of the Gateways (gateway): NAME.crt "
                                      "and NAME.key in --config, repeatable."),
]
GatewayAddress = Annotated[
    str, typer.Option(help="Address the Gateways' ports open on (gateway).")
]
Service = Annotated[str | None, typer.Option("--service", "-s", help="Mesh service (proxy).")]
Version = Annotated[str | None, typer.Option(help="Workload version label, e.g. v2 (proxy).")]
AppUnit = Annotated[
    str | None, typer.Option(help="The app's unit (proxy; default SERVICE.service).")
]
Registry = Annotated[
    str | None,
    typer.Option(
        help="Registry HOST:PORT (proxy; default: the addresses in the token file's join string).",
        envvar="MESH_REGISTRY",
    ),
]
Advertise = Annotated[
    str,
    typer.Option(
        help="Address peers reach the proxy at (proxy); `auto`: the source address of the "
        "route towards the registry, found when the proxy starts."
    ),
]
ProxyUser = Annotated[
    str, typer.Option(help="System user of the proxy (proxy); install creates it.")
]
Sans = Annotated[
    list[str] | None,
    typer.Option("--san", help="Extra DNS name or IP for the API's certificate (registry)."),
]
TokenFile = Annotated[
    str | None,
    typer.Option(help="Join token file (proxy; default /etc/meshctl/SERVICE.token)."),
]
Ports = Annotated[
    list[int] | None,
    typer.Option("--port", "-p", help="The app's inbound port, repeatable (proxy)."),
]
ProxyUid = Annotated[
    int,
    typer.Option(help="The proxy user's uid, excluded from interception (install: if free)."),
]
ExcludeInbound = Annotated[
    list[int] | None,
    typer.Option(
        "--exclude-inbound-port",
        help="A port never captured inbound (Istio's excludeInboundPorts), repeatable (proxy).",
    ),
]
MeshctlBin = Annotated[
    str | None, typer.Option(help="Absolute path of meshctl (default: this meshctl).")
]
MeshHome = Annotated[
    str | None,
    typer.Option(help="State directory of the unit's process (default /var/lib/meshctl; "
                      "a gateway: /var/lib/meshctl-gateway, its own user's)."),
]
ConfigDir = Annotated[str, typer.Option("--config", help="Config directory (registry).")]
Listen = Annotated[str | None, typer.Option(help="Address the API listens on (registry).")]
RegistryPort = Annotated[int | None, typer.Option(help="API port (registry).")]
User = Annotated[str, typer.Option(help="System user of the registry; install creates it.")]
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
    registry: str | None,
    token_file: str | None,
    port: list[int] | None,
    advertise: str,
    proxy_user: str,
    proxy_uid: int,
    exclude_inbound_port: list[int] | None,
    meshctl_bin: str | None,
    mesh_home: str | None,
    config: str,
    listen: str | None,
    registry_port: int | None,
    san: list[str] | None,
    user: str,
    notify: bool,
    credential: list[str] | None = None,
    gateway_address: str = "0.0.0.0",
) -> dict[str, str]:
    """The units of `kind`, from the options of `render` and `install` (same names)."""
    binary = _meshctl_bin(meshctl_bin)
    mesh_home = _home(kind, mesh_home)
    if kind is Kind.gateway:
        if not service:
            raise ValueError("a gateway unit needs --service (the workload its Gateways "
                             "select: `istio: NAME`)")
        return {gateway_unit.gateway_unit_name(service): gateway_unit.render_gateway_unit(
            service=service,
            meshctl_bin=binary,
            mesh_home=mesh_home,
            registry=registry,
            token_file=str(Path(token_file or f"/etc/meshctl/{service}.token").absolute()),
            config_dir=config,
            credentials=credential or (),
            address=gateway_address,
            user=proxy_user if proxy_user != systemd.PROXY_USER else gateway_unit.GATEWAY_USER,
        )}
    if kind is Kind.registry:
        return {
            systemd.REGISTRY_UNIT: systemd.render_registry_unit(
                meshctl_bin=binary,
                config_dir=config,
                mesh_home=mesh_home,
                user=user,
                listen=listen,
                port=registry_port,
                sans=san or (),
            )
        }
    if not service:
        raise ValueError("a proxy unit needs --service (the mesh service of the app)")
    if not port:
        raise ValueError("a proxy unit needs --port (the app's inbound port; repeatable)")
    return systemd.render_proxy_units(
        service=service,
        version=version,
        app_unit=app_unit or f"{service}.service",
        meshctl_bin=binary,
        mesh_home=mesh_home,
        registry=registry,
        # LoadCredential= needs an absolute path: a relative one is the caller's file.
        token_file=str(Path(token_file or f"/etc/meshctl/{service}.token").absolute()),
        inbound_ports=port,
        advertise=advertise,
        proxy_user=proxy_user,
        proxy_uid=proxy_uid,
        notify=notify,
        exclude_inbound_ports=exclude_inbound_port or (),
    )


def _home(kind: Kind, mesh_home: str | None) -> str:
    if mesh_home is not None:
        return mesh_home
    return "/var/lib/meshctl-gateway" if kind is Kind.gateway else "/var/lib/meshctl"


def _under(root: Path, path: Path) -> Path:
    """`path` of the installed system, seen from here: under `root` (--root)."""
    return root / path.relative_to("/") if path.is_absolute() else path


def _fail(err: Exception, code: int) -> typer.Exit:
    typer.echo(f"meshctl systemd: {err}", err=True)
    return typer.Exit(code)


@app.command()
def render(
    kind: KindArg = Kind.proxy,
    service: Service = None,
    version: Version = None,
    app_unit: AppUnit = None,
    registry: Registry = None,
    token_file: TokenFile = None,
    port: Ports = None,
    advertise: Advertise = "auto",
    proxy_user: ProxyUser = systemd.PROXY_USER,
    proxy_uid: ProxyUid = systemd.PROXY_UID,
    exclude_inbound_port: ExcludeInbound = None,
    meshctl_bin: MeshctlBin = None,
    mesh_home: MeshHome = None,
    config: ConfigDir = "/etc/meshctl",
    listen: Listen = None,
    registry_port: RegistryPort = None,
    san: Sans = None,
    user: User = systemd.REGISTRY_USER,
    notify: Notify = True,
    credential: Credentials = None,
    gateway_address: GatewayAddress = "0.0.0.0",
    out: Annotated[
        Path | None, typer.Option(help="Write the units under this directory, not to stdout.")
    ] = None,
) -> None:
    """Print the units (or write them under --out), e.g. to review or ship them."""
    options = {k: v for k, v in locals().items() if k not in ("kind", "out")}
    try:
        units = _units(kind, **options)
        if kind is Kind.proxy:
            typer.echo(
                f"note: the proxy unit runs as user {proxy_user} (uid {proxy_uid}), which must "
                "exist on the host: `meshctl systemd install` creates it",
                err=True,
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
    registry: Registry = None,
    token_file: TokenFile = None,
    port: Ports = None,
    advertise: Advertise = "auto",
    proxy_user: ProxyUser = systemd.PROXY_USER,
    proxy_uid: ProxyUid = systemd.PROXY_UID,
    exclude_inbound_port: ExcludeInbound = None,
    meshctl_bin: MeshctlBin = None,
    mesh_home: MeshHome = None,
    config: ConfigDir = "/etc/meshctl",
    listen: Listen = None,
    registry_port: RegistryPort = None,
    san: Sans = None,
    user: User = systemd.REGISTRY_USER,
    notify: Notify = True,
    credential: Credentials = None,
    gateway_address: GatewayAddress = "0.0.0.0",
    root: Annotated[
        Path,
        typer.Option(
            help="Install into the file system under this directory (an image being built, "
            "as `systemctl --root`): units, user and state directory there; no daemon-reload."
        ),
    ] = Path("/"),
) -> None:
    """Write the units to /etc/systemd/system, create the state directory, daemon-reload."""
    if os.geteuid() != 0:
        raise _fail(ValueError("install needs root (or use `render --out DIR`)"), 1)
    options = {k: v for k, v in locals().items() if k not in ("kind", "root")}
    try:
        units = _units(kind, **options)  # every value checked before anything changes
        if kind is Kind.registry:
            uid, gid = systemd.ensure_system_user(user, root=root)
        elif kind is Kind.gateway:
            uid, gid = _gateway_files(root, service, token_file, config, credential,
                                      proxy_user)
        else:
            token_path = _under(root, Path(token_file or f"/etc/meshctl/{service}.token"))
            if not token_path.absolute().is_file():
                raise systemd.SystemdError(
                    f"token file {token_path.absolute()} does not exist (systemd would refuse "
                    "to start the proxy): put the join string of `meshctl token create "
                    f"{service}` there first"
                )
            uid, gid = systemd.ensure_system_user(proxy_user, proxy_uid, root=root)
            if uid != proxy_uid:  # 1337 was taken: the drop-in lets this uid's traffic out
                units = _units(kind, **{**options, "proxy_uid": uid})
        systemd.prepare_state_dir(_under(root, Path(_home(kind, mesh_home))), uid, gid)
        unit_dir = _under(root, systemd.UNIT_DIR)
        for path in systemd.install_units(units, unit_dir, reload=root == Path("/")):
            typer.echo(f"wrote {path}")
    except ValueError as e:
        raise _fail(e, 2) from None
    except systemd.SystemdError as e:
        raise _fail(e, 1) from None
    if kind is Kind.registry:
        typer.echo(f"start it: systemctl enable --now {systemd.REGISTRY_UNIT}")
    elif kind is Kind.gateway:
        assert service is not None
        typer.echo(f"start it: systemctl enable --now {gateway_unit.gateway_unit_name(service)}")
    else:
        typer.echo(f"mesh the app: systemctl restart {app_unit or f'{service}.service'}")


def _gateway_files(root: Path, service: str | None, token_file: str | None, config: str,
                   credential: list[str] | None, user: str) -> tuple[int, int]:
    """Install gateway: the token and each credential pair must exist (systemd would refuse
    to start the unit), then the gateway's own system user."""
    needed = [_under(root, Path(token_file or f"/etc/meshctl/{service}.token"))]
    needed += [_under(root, Path(config) / f"{name}{ext}")
               for name in credential or () for ext in (".crt", ".key")]
    for path in needed:
        if not path.absolute().is_file():
            raise systemd.SystemdError(
                f"{path.absolute()} does not exist (systemd would refuse to start the "
                "gateway): the join string of `meshctl token create "
                f"{service}`, and each credentialName's NAME.crt and NAME.key, go there first")
    name = user if user != systemd.PROXY_USER else gateway_unit.GATEWAY_USER
    return systemd.ensure_system_user(name, root=root)
