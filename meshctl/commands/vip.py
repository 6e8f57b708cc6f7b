"""`meshctl vip SERVICE` and `meshctl hosts [--apply]`: mesh names on hosts without `up`.

A VM whose proxy intercepts its app's traffic, but whose hosts file `up` did not write, needs
each service's virtual IP (common/vip.py) in its resolver. `vip` prints one; `hosts` prints the
marked /etc/hosts block for every service, and `--apply` puts it in the file, replacing the
block it wrote before and leaving every other line alone (meshctl/hostsfile.py).
The services come from the config directory (`--config`, MESH_CONFIG) or the registry
running for MESH_HOME. See docs/up.md.
"""

from __future__ import annotations

import enum
import errno
import json
import os
import stat
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from common.state import atomic_write, mesh_home
from common.vip import service_vip
from meshctl.client import RegistryClient, RegistryError, RegistryUnavailable
from meshctl.hostsfile import HostsFileError, entries, render_block, replace_block
from registry.config import load_directory

__all__ = ["hosts", "vip"]

HOSTS_FILE = Path("/etc/hosts")


class Output(enum.StrEnum):
    text = "text"
    json = "json"


class VipError(Exception):
    """A refusal of `vip` or `hosts`; nothing was written."""


ConfigDir = Annotated[Path | None, typer.Option(
    "--config", "-c", envvar="MESH_CONFIG", show_default=False,
    help="The mesh's config directory [default: $MESH_CONFIG, else the running registry's "
         "services].")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text or json")]


def mesh_services(config: Path | None) -> list[str]:
    """The mesh's service names: from the config directory, else from the local registry."""
    if config is not None:
        if not config.is_dir():
            raise VipError(f"config directory {config} does not exist: pass --config DIR "
                           "(or set MESH_CONFIG)")
        result = load_directory(config)
        if result.config is None or result.errors:
            first = str(result.errors[0]) if result.errors else "no snapshot"
            raise VipError(f"the config in {config} is invalid (first error: {first}): fix it "
                           f"first (meshctl validate {config})")
        return [s.name for s in result.config.services]
    try:
        data = RegistryClient.from_home(mesh_home()).call("GET", "/v1/config", timeout=5)
    except (RegistryUnavailable, RegistryError) as exc:
        raise VipError(f"{exc}; or pass --config DIR (the mesh's config directory)") from None
    return [str(s["name"]) for s in data["config"]["services"]]


def _fail(command: str, exc: Exception) -> NoReturn:
    typer.echo(f"meshctl {command}: {exc}", err=True)
    raise typer.Exit(1)


def vip(
    service: Annotated[str, typer.Argument(help="The service, as named in mesh.yaml.")],
    config: ConfigDir = None,
    output: OutputOpt = Output.text,
) -> None:
    """Print a mesh service's virtual IP (what its name resolves to inside the mesh)."""
    try:
        names = mesh_services(config)
        if service not in names:
            known = ", ".join(sorted(names)) or "none"
            raise VipError(f"no service `{service}` in the mesh (services: {known})")
    except VipError as exc:
        _fail("vip", exc)
    address = service_vip(service)
    if output == Output.json:
        typer.echo(json.dumps({"service": service, "vip": address}))
    else:
        typer.echo(address)


def hosts(
    apply: Annotated[bool, typer.Option(
        "--apply", help="Write the block into the hosts file (root for /etc/hosts).")] = False,
    file: Annotated[Path, typer.Option(
        "--file", envvar="MESH_HOSTS_FILE",
        help="The hosts file to write with --apply.")] = HOSTS_FILE,
    config: ConfigDir = None,
    output: OutputOpt = Output.text,
) -> None:
    """Print (or with --apply, write) the /etc/hosts block mapping every mesh service to its
    virtual IP, for VMs with interception but no `up`. Lines outside it are never touched."""
    try:
        pairs = entries(mesh_services(config))
        block = render_block(pairs)
        changed = _apply(file, block) if apply else None
    except (VipError, HostsFileError) as exc:
        _fail("hosts", exc)
    if output == Output.json:
        body = {"file": str(file), "applied": apply, "changed": changed,
                "entries": [{"service": n, "vip": v} for n, v in pairs]}
        typer.echo(json.dumps(body))
    elif not apply:
        typer.echo(block, nl=False)
    else:
        what = "updated" if changed else "already up to date"
        typer.echo(f"{file}: {len(pairs)} mesh service(s), {what}")


def _apply(path: Path, block: str) -> bool:
    """Put `block` into the hosts file; True if the file changed. Refuses before writing."""
    real = path.resolve()
    try:
        text = real.read_text()
        st = real.stat()
    except FileNotFoundError:
        raise VipError(f"{path} does not exist: pass --file PATH (or MESH_HOSTS_FILE) for "
                       "another hosts file") from None
    except OSError as exc:
        raise VipError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise VipError(f"{path} is not a regular file")
    new = replace_block(text, block, str(path))
    if new == text:
        return False
    try:
        try:
            atomic_write(real, new, mode=stat.S_IMODE(st.st_mode))
            if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
                os.chown(real, st.st_uid, st.st_gid)
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.EXDEV):
                raise
            # A bind-mounted file (Docker's /etc/hosts) cannot be renamed over: write in place.
            with real.open("r+") as f:
                f.write(new)
                f.truncate()
    except PermissionError:
        raise VipError(f"cannot write {path}: permission denied; run as root "
                       "(sudo meshctl hosts --apply)") from None
    except OSError as exc:
        raise VipError(f"cannot write {path}: {exc.strerror or exc}") from None
    return True
