"""`meshctl up PATH --join FILE`: mesh this host's workloads into a mesh whose registry runs
on another host. No registry and no CA start here.

FILE holds one join string per service this host runs, one a line, as `meshctl token create
SERVICE...` prints them on the registry's host (each bound to its one service identity;
`--reusable --ttl 24h` when a service has replicas or the host is rebuilt from an image).
One file, one command on the new host. Why not a token that mints other tokens, or the
operator credential: a workload host would then hold the power to become any service, and
one stolen file would be the whole mesh; per-service join strings keep each proxy's power
to its own identity, as Istio's per-workload service accounts do.

`up` checks FILE before anything starts (every service has a line, one registry, one CA
pin), fetches the CA once and checks it against the pin, and records the join in
MESH_HOME/joined.json (what `status` reads: "joined to registry URL"). The supervisor gives
each proxy its service's line; a restarted proxy renews with its kept SVID.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from common.state import atomic_write, ensure_dir
from meshctl.launch.procs import LaunchError
from registry.ca.joinstring import JoinString, JoinStringError, parse

JOINED = "joined.json"
JOINED_DIR = "joined"


@dataclass(frozen=True, slots=True)
class JoinTarget:
    url: str  # the registry URL that answered
    ca_file: Path  # its CA certificate, checked against the pin


def read_join_file(path: Path) -> list[JoinString]:
    """The join strings of FILE (blank lines and `#` comments skipped), or LaunchError."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise LaunchError(f"--join {path}: {exc.strerror or exc} (nothing was started)") from None
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            join = parse(line)
        except JoinStringError as exc:
            raise LaunchError(f"{path}:{n}: {exc} (nothing was started)") from None
        if join.ca_sha256 is None or join.service is None:
            raise LaunchError(
                f"{path}:{n}: not a join string naming its service (a bare token, or made "
                "by an older registry): make the file on the registry's host with "
                "`meshctl token create SERVICE... > FILE` (nothing was started)"
            )
        found.append(join)
    if not found:
        raise LaunchError(f"--join {path} holds no join string (nothing was started)")
    return found


def prepare(home: Path, path: Path, workloads: dict[str, int], registry_address: str
            ) -> JoinTarget:
    """Check FILE against the services this host runs (service -> its workloads here),
    fetch and pin the CA, record it all."""
    from proxy.control.bootstrap import BootstrapError, fetch_pinned_ca

    joins = read_join_file(path)
    pins = {j.ca_sha256 for j in joins}
    if len(pins) > 1:
        raise LaunchError(f"--join {path}: its lines come from {len(pins)} different meshes "
                          "(CA pins differ): one mesh per host (nothing was started)")
    have = {j.service for j in joins}
    services = sorted(workloads)
    missing = [s for s in services if s not in have]
    if missing:
        raise LaunchError(
            f"--join {path} has no join string for {', '.join(missing)}: on the registry's "
            f"host run `meshctl token create {' '.join(services)} > FILE` and copy FILE "
            "here (nothing was started)"
        )
    shared = sorted(j.service for j in joins
                    if j.service and workloads.get(j.service, 0) > 1 and not j.reusable)
    if shared:
        raise LaunchError(
            f"{', '.join(shared)} run{'s' if len(shared) == 1 else ''} several workloads here "
            "but the join string is one-time (the first proxy would spend it): make it with "
            f"`meshctl token create {' '.join(shared)} --reusable --ttl 24h` (nothing was "
            "started)"
        )
    urls = joins[0].registry
    if not local_or_loopback(registry_address):
        hosts = {urlsplit(u).hostname for u in urls}
        if registry_address not in hosts:
            raise LaunchError(
                f"mesh.yaml says the registry is at {registry_address}, the join strings "
                f"say {', '.join(urls)}: fix registry.address or use join strings from "
                "that registry (nothing was started)"
            )
        urls = tuple(u for u in urls if urlsplit(u).hostname == registry_address)
    joined = ensure_dir(home / JOINED_DIR)
    ca = joined / "ca.crt"
    try:
        url = fetch_pinned_ca(urls, str(joins[0].ca_sha256), ca)
    except BootstrapError as exc:
        raise LaunchError(f"{exc} (nothing was started)") from None
    atomic_write(joined / "join.tokens", "".join(j.encode() + "\n" for j in joins), mode=0o600)
    record = {"url": url, "ca_sha256": joins[0].ca_sha256, "joined_at": time.time(),
              "services": sorted(s for s in have if s)}  # fmt: skip
    atomic_write(home / JOINED, json.dumps(record, indent=2) + "\n", mode=0o644)
    return JoinTarget(url, ca)


def recorded(home: Path) -> JoinTarget | None:
    """The join a previous `up --join` recorded (a later `up` without --join keeps it)."""
    from meshctl.client import read_joined

    data = read_joined(home)
    return JoinTarget(str(data["url"]), home / JOINED_DIR / "ca.crt") if data else None


def token_for(home: Path, service: str) -> str:
    """The join string of `service` from the recorded FILE (for its proxy's token file)."""
    for line in (home / JOINED_DIR / "join.tokens").read_text().splitlines():
        with contextlib.suppress(JoinStringError):
            if parse(line).service == service:
                return line
    raise LaunchError(f"no join string for {service} in {home / JOINED_DIR / 'join.tokens'}: "
                      "run `meshctl up PATH --join FILE` with a FILE that has one")


def forget(home: Path) -> None:
    """`down` on a joined host: it leaves the mesh (the record and tokens go)."""
    import shutil

    (home / JOINED).unlink(missing_ok=True)
    shutil.rmtree(home / JOINED_DIR, ignore_errors=True)


def local_or_loopback(address: str) -> bool:
    """Is `address` (mesh.yaml registry.address) loopback or an address of this host?"""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(address).is_loopback:
            return True
    try:
        infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, proto, _, addr in infos:
        with contextlib.suppress(OSError), socket.socket(family, kind, proto) as s:
            s.bind((addr[0], 0))
            return True
    return False
