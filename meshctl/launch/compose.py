"""The compose runtime: read a docker-compose file into what the docker runtime meshes.

`meshctl up examples/compose/docker-compose.yml` meshes the compose project with no change
to the compose file. From the file it takes, per compose service, the mesh service and
version of its containers, in this order of precedence:

  1. the labels `mesh.service` / `mesh.version` (Docker puts them on the containers too);
  2. `x-mesh: {service: orders, version: v2}` on the compose service, or a top-level
     `x-mesh: {services: {orders-v2: {service: orders, version: v2}}}`;
  3. the compose service's own name, version `v1`.

A compose service whose mesh service is not in mesh.yaml is left alone (a database the
mesh does not manage), unless a label or x-mesh names it: then it is an error.

The project is started with `docker compose` (Compose v2) or `docker-compose` (1.29),
whichever is installed, as `-p PROJECT -f FILE up -d`, only when none of its containers
runs; `meshctl down` runs `down` only for a project that `up` started. The project name
is `--project`, else COMPOSE_PROJECT_NAME, else the compose file's directory name,
normalized as Compose does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshctl.launch.procs import LaunchError

SERVICE_LABEL = "mesh.service"
VERSION_LABEL = "mesh.version"
PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
DEFAULT_VERSION = "v1"
COMPOSE_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class ComposeService:
    """What meshctl reads of one compose service."""

    name: str  # the compose service (orders-v2)
    mesh_service: str  # the mesh service its containers are endpoints of (orders)
    version: str
    named: bool  # a label or x-mesh said so (else guessed from the compose name)
    ports: tuple[int, ...]  # container ports: `expose` and the target side of `ports`
    image: str = ""


@dataclass(frozen=True, slots=True)
class ComposeFile:
    path: Path
    services: tuple[ComposeService, ...]

    def service(self, name: str) -> ComposeService | None:
        return next((s for s in self.services if s.name == name), None)


def _labels(raw: Any) -> dict[str, str]:
    """Compose labels: a map, or a list of `key=value` strings."""
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return {k: v for k, _, v in (str(item).partition("=") for item in raw)}
    return {}


def _ports(svc: Mapping[str, Any]) -> tuple[int, ...]:
    found: set[int] = set()
    for item in svc.get("expose") or ():
        m = re.match(r"(\d+)", str(item))
        if m:
            found.add(int(m.group(1)))
    for item in svc.get("ports") or ():
        if isinstance(item, Mapping) and "target" in item:
            found.add(int(item["target"]))
            continue
        # [ip:][host:]container[/proto]: the container port is the last part
        m = re.search(r"(\d+)(?:-\d+)?(?:/\w+)?$", str(item))
        if m:
            found.add(int(m.group(1)))
    return tuple(sorted(found))


def parse_compose(text: str, path: Path) -> ComposeFile:
    """The services of a compose file (pure). LaunchError with file:line:column if bad."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LaunchError(
            f"{where}: the compose file does not parse ({problem}): fix it and run "
            "`meshctl up` again (nothing was started)"
        ) from None
    services = doc.get("services") if isinstance(doc, Mapping) else None
    if not isinstance(services, Mapping) or not services:
        raise LaunchError(
            f"{path}: no `services:` in the compose file: is it a docker-compose file? "
            "(nothing was started)"
        )
    top = doc.get("x-mesh")
    top_services: Mapping[str, Any] = {}
    if isinstance(top, Mapping) and isinstance(top.get("services"), Mapping):
        top_services = top["services"]
    out = []
    for name, raw in services.items():
        svc: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        labels = _labels(svc.get("labels"))
        ext: Mapping[str, Any] = {}
        for candidate in (svc.get("x-mesh"), top_services.get(name)):
            if isinstance(candidate, Mapping):
                ext = candidate
                break
        mesh_service = labels.get(SERVICE_LABEL) or ext.get("service")
        version = labels.get(VERSION_LABEL) or ext.get("version") or DEFAULT_VERSION
        out.append(
            ComposeService(
                name=str(name),
                mesh_service=str(mesh_service or name),
                version=str(version),
                named=mesh_service is not None,
                ports=_ports(svc),
                image=str(svc.get("image") or ""),
            )
        )
    return ComposeFile(path, tuple(out))


def load_compose(path: Path) -> ComposeFile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise LaunchError(f"cannot read the compose file {path}: {exc.strerror}") from None
    return parse_compose(text, path)


def project_name(path: Path, explicit: str = "") -> str:
    """As Compose names a project: lower case, [a-z0-9_-] only."""
    raw = explicit or os.environ.get("COMPOSE_PROJECT_NAME", "") or path.resolve().parent.name
    name = re.sub(r"[^a-z0-9_-]", "", raw.lower()).lstrip("_-")
    if not name:
        raise LaunchError(
            f"cannot make a compose project name from {raw!r}: pass --project NAME "
            "(lower-case letters, digits, _ and -)"
        )
    return name


def compose_command() -> tuple[str, ...]:
    """`docker compose` (v2) when the plugin is there, else `docker-compose` (1.x)."""
    if shutil.which("docker"):
        done = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if done.returncode == 0:
            return ("docker", "compose")
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise LaunchError(
        "Docker Compose is not installed: `apt-get install docker-compose` (or the "
        "docker-compose-plugin), then run `meshctl up` again (nothing was started)"
    )


def _run(cmd: Sequence[str], project: str, file: Path, *args: str) -> None:
    argv = [*cmd, "-p", project, "-f", str(file.resolve()), *args]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMPOSE_TIMEOUT_S, cwd=file.parent
        )
    except subprocess.TimeoutExpired:
        raise LaunchError(
            f"`{' '.join(argv)}` did not finish in {COMPOSE_TIMEOUT_S:.0f}s"
        ) from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        raise LaunchError(
            f"`{' '.join(argv)}` failed: {lines[-1] if lines else f'exit {done.returncode}'}"
        )


def compose_up(cmd: Sequence[str], project: str, file: Path) -> None:
    _run(cmd, project, file, "up", "-d")


def compose_down(cmd: Sequence[str], project: str, file: Path) -> None:
    _run(cmd, project, file, "down", "--remove-orphans", "--timeout", "5")
