"""The docker runtime: every meshed container gets a proxy in its network namespace.

The proxy is a host process (this venv's Python, uid 1337) started with
`nsenter --net=/proc/<container pid>/ns/net`, not a sidecar container: no image with
meshctl in it, any container works whoever started it, and the supervisor that restarts
local proxies restarts these the same way. docs/docker.md says why at more length.

Which containers: those of a compose project (`com.docker.compose.project=P`), or, with
no compose file, every container labelled `mesh.service`. Each container's mesh service
and version come from its labels, else from the compose file (meshctl.launch.compose);
a container whose service is not in mesh.yaml is left alone. Pure:
`container_workload(attrs, target, url)` turns `docker inspect` output into a plan
Workload named after the container (`docker exec NAME` finds it), advertising the
container's address, so a call to `orders:8080` (Docker's DNS answers with the orders
containers' addresses) is recognised by the proxy as service orders.

The registry listens on the gateway of the project's network (the host's address on that
bridge): reachable from every container of the host, since the host accepts packets for
any of its addresses on any interface.

`DockerWatch` follows the engine's event stream in a thread, so the supervisor meshes a
container started later within a tick and unmeshes one that stops.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshctl.launch import compose as composemod
from meshctl.launch.compose import (
    COMPOSE_SERVICE_LABEL,
    DEFAULT_VERSION,
    PROJECT_LABEL,
    SERVICE_LABEL,
    VERSION_LABEL,
    ComposeFile,
)
from meshctl.launch.plan import PUBLISHED_PORT, DockerTarget, Workload, transparent_proxy_args
from meshctl.launch.procs import LaunchError, LaunchPaths, read_json, write_json
from registry.config import MeshConfig

log = logging.getLogger("meshctl.docker")
RESYNC_S = 5.0  # a full listing now and then, in case an event was missed
EXAMPLE_IMAGE_REPO = "meshctl-example:"
COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")


def docker_client() -> Any:
    """A docker SDK client that answers, or a LaunchError saying what to do."""
    import docker
    import docker.errors

    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        text = str(exc)
        unreachable = any(w in text for w in ("Connection", "FileNotFound", "No such file"))
        reason = f"nothing answers at {host}" if unreachable else text.splitlines()[0][:200]
        raise LaunchError(
            f"cannot reach the Docker engine ({reason}): start it (`systemctl start docker`, "
            "or `dockerd &`), or run `meshctl up --runtime local`"
        ) from None
    return client


def compose_file_for(path: Path) -> Path | None:
    """The compose file `meshctl up PATH` means: PATH itself, or one in directory PATH."""
    if path.is_file():
        return path.resolve() if path.suffix in (".yml", ".yaml") else None
    return next(((path / n).resolve() for n in COMPOSE_FILES if (path / n).is_file()), None)


# --- containers -> workloads (pure) ------------------------------------------------------------


def mesh_identity(labels: Mapping[str, str], target: DockerTarget) -> tuple[str, str] | None:
    """(mesh service, version) of a container, or None when it is not in the mesh."""
    by_compose = {c: (m, v) for c, m, v in target.services}
    compose_svc = labels.get(COMPOSE_SERVICE_LABEL, "")
    if SERVICE_LABEL in labels:
        fallback = by_compose.get(compose_svc, ("", DEFAULT_VERSION))[1]
        found = labels[SERVICE_LABEL], labels.get(VERSION_LABEL) or fallback
    elif compose_svc in by_compose:
        found = by_compose[compose_svc]
    else:
        return None
    return found if found[0] in dict(target.ports) else None


def container_workload(
    attrs: Mapping[str, Any], target: DockerTarget, registry_url: str
) -> Workload | None:
    """The Workload for one running container (`docker inspect` attrs), or None."""
    state = attrs.get("State") or {}
    if not state.get("Running") or not state.get("Pid"):
        return None
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    if target.project and labels.get(PROJECT_LABEL) != target.project:
        return None
    ident = mesh_identity(labels, target)
    if ident is None:
        return None
    service, version = ident
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    addrs = {n: v.get("IPAddress") for n, v in networks.items() if v and v.get("IPAddress")}
    address = addrs.get(target.network) or next(iter(sorted(addrs.items())), ("", ""))[1]
    if not address:
        return None  # network_mode host or none: nothing to intercept
    name = str(attrs.get("Name", "")).lstrip("/")
    ports = dict(target.ports)[service]
    net: Mapping[str, Any] = next(
        (v for v in networks.values() if v and v.get("IPAddress") == address), {}
    )
    gateway = str(net.get("Gateway") or "")
    published = published_ports(attrs, ports) if gateway else ()
    subnet = ""
    with contextlib.suppress(ValueError, TypeError, KeyError):
        subnet = str(ipaddress.ip_interface(f"{address}/{int(net['IPPrefixLen'])}").network)
    args = transparent_proxy_args(service, version, registry_url, name, address)
    if published:
        args += ("--published", f"0.0.0.0:{PUBLISHED_PORT}")
    return Workload(
        name=name,
        service=service,
        version=version,
        replica=0,
        address=address,
        netns=None,
        app_argv=(),
        app_env=(),
        cwd="/",
        proxy_args=args,
        inbound_ports=ports,
        container=str(attrs.get("Id", "")),
        pid=int(state["Pid"]),
        exclude_inbound_ports=target.excluded_inbound(service, version),
        published=published,
        published_from=gateway if published else "",
        published_net=subnet if published else "",
    )


def published_ports(attrs: Mapping[str, Any], ports: Sequence[int]) -> tuple[tuple[int, str], ...]:
    """(service port, "HOST_IP:HOST_PORT") for each TCP binding Docker made of a service port.

    Their connections reach the container from the network's gateway (docker-proxy, or
    Docker's NAT of a loopback binding), and are served as ingress: docs/docker.md.
    """
    bindings = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    out: set[tuple[int, str]] = set()
    for key, hosts in bindings.items():
        number, _, proto = str(key).partition("/")
        if proto not in ("", "tcp") or not number.isdigit() or int(number) not in ports:
            continue
        for h in hosts or ():
            ip = str(h.get("HostIp") or "0.0.0.0")
            out.add((int(number), f"[{ip}]:{h.get('HostPort')}" if ":" in ip else
                     f"{ip}:{h.get('HostPort')}"))  # fmt: skip
    return tuple(sorted(out))


def workloads_of(
    containers: Sequence[Mapping[str, Any]], target: DockerTarget, registry_url: str
) -> tuple[Workload, ...]:
    found = (container_workload(a, target, registry_url) for a in containers)
    return tuple(sorted((w for w in found if w is not None), key=lambda w: w.name))


# --- the gateway's neighbour entry (published ports) ---------------------------------------------


def _ip_in(pid: int, *args: str) -> str:
    """`ip ARGS` in the network namespace of `pid`; LaunchError with what ip said."""
    argv = ["nsenter", f"--net=/proc/{pid}/ns/net", "--", "ip", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise LaunchError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def pin_gateway(pid: int, gateway: str) -> str:
    """Make the container's neighbour entry for its gateway permanent, at the host bridge's
    MAC, and return that MAC. Published-port connections are told apart by the gateway's
    address; a sibling with CAP_NET_RAW could otherwise answer ARP for it (poison this
    entry) and so complete a handshake from that address (docs/docker.md, spoofing).
    Docker gives its bridges a fixed random MAC, so the entry stays right."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.get_addr(address=gateway)
        links = ipr.get_links(found[0]["index"]) if found else []
        mac = str(links[0].get_attr("IFLA_ADDRESS") or "") if links else ""
    if not mac:
        raise LaunchError(f"no host interface has the gateway address {gateway}")
    route = _ip_in(pid, "-o", "route", "get", gateway).split()
    dev = route[route.index("dev") + 1] if "dev" in route else "eth0"
    _ip_in(pid, "neigh", "replace", gateway, "lladdr", mac, "dev", dev, "nud", "permanent")
    return mac


def unpin_gateway(pid: int) -> None:
    """Undo pin_gateway in a container that keeps running (`down`): the default gateway's
    entry back to ARP. Only a permanent entry is touched."""
    route = _ip_in(pid, "-o", "route", "show", "default").split()
    if "via" not in route or "dev" not in route:
        return
    gateway, dev = route[route.index("via") + 1], route[route.index("dev") + 1]
    if "PERMANENT" in _ip_in(pid, "neigh", "show", gateway, "dev", dev):
        _ip_in(pid, "neigh", "del", gateway, "dev", dev)


def _filters(target: DockerTarget) -> dict[str, Any]:
    label = f"{PROJECT_LABEL}={target.project}" if target.project else SERVICE_LABEL
    return {"label": [label], "status": "running"}


def list_workloads(client: Any, target: DockerTarget, registry_url: str) -> tuple[Workload, ...]:
    """The workloads of every running container the target selects."""
    attrs = [c.attrs for c in client.containers.list(filters=_filters(target))]
    return workloads_of(attrs, target, registry_url)


# --- up: what to mesh ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DockerUp:
    target: DockerTarget
    gateway: str  # where the registry listens
    workloads: tuple[Workload, ...]
    skipped: tuple[str, ...]  # compose services left out of the mesh (not in mesh.yaml)


def _gateway(client: Any, network: str) -> str:
    import docker.errors

    try:
        attrs = client.networks.get(network).attrs
    except docker.errors.NotFound:
        raise LaunchError(f"no docker network {network!r}: is the project up?") from None
    for cfg in (attrs.get("IPAM") or {}).get("Config") or ():
        gw = cfg.get("Gateway")
        if gw and ":" not in gw:
            return str(gw)
    raise LaunchError(
        f"docker network {network!r} has no IPv4 gateway: the registry needs a host address "
        "that containers reach; use a bridge network"
    )


def _target(config: MeshConfig, compose: composemod.ComposeFile | None) -> DockerTarget:
    ports = tuple((s.name, tuple(p.port for p in s.ports)) for s in config.services)
    excluded = tuple((s.name, w.version, w.exclude_inbound_ports)
                     for s in config.services for w in s.workloads if w.exclude_inbound_ports)
    if compose is None:
        return DockerTarget(ports=ports, exclude_inbound=excluded)
    known = dict(ports)
    unknown = [s for s in compose.services if s.named and s.mesh_service not in known]
    if unknown:
        s = unknown[0]
        raise LaunchError(
            f"{compose.path}: compose service {s.name!r} is labelled mesh service "
            f"{s.mesh_service!r}, which mesh.yaml does not define: add it to mesh.yaml "
            f"(ports {list(s.ports) or '[...]'}) or fix the label (nothing was started)"
        )
    services = tuple((s.name, s.mesh_service, s.version) for s in compose.services)
    return DockerTarget(services=services, ports=ports, exclude_inbound=excluded)


def load_target(config: MeshConfig, path: Path) -> tuple[DockerTarget, ComposeFile | None]:
    """Read the compose file PATH names (if any) against mesh.yaml: errors before anything runs."""
    file = compose_file_for(path)
    compose = composemod.load_compose(file) if file else None
    return _target(config, compose), compose


def _check_images(client: Any, compose: ComposeFile) -> None:
    """The example's image is built here, never pulled: say how when it is missing."""
    import docker.errors

    for image in sorted({s.image for s in compose.services if s.image}):
        if not image.startswith(EXAMPLE_IMAGE_REPO):
            continue
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise LaunchError(
                f"image {image} is not built (it is made locally, not pulled): run "
                "`meshctl image build` (about a minute), then `meshctl up` again"
            ) from None


def prepare(
    config: MeshConfig,
    compose: ComposeFile | None,
    project: str,
    paths: LaunchPaths,
    previous: DockerTarget | None,
    registry_listen: str | None,
    registry_port: int,
) -> DockerUp:
    """Start the compose project if needed (recorded in owned.json first), find its containers.

    `registry_listen`: the running registry's address, when one runs; else it will listen
    on the gateway of the containers' network, found here.
    """
    client = docker_client()
    target = _target(config, compose)
    if compose is not None:
        compose_file = compose.path
        name = composemod.project_name(compose_file, project)
        if previous is not None and previous.project and previous.project != name:
            raise LaunchError(
                f"the running mesh meshes compose project {previous.project!r}, not {name!r}: "
                "run `meshctl down` first, or set MESH_HOME to another directory"
            )
        cmd = previous.compose_cmd if previous else composemod.compose_command()
        selector = {"label": [f"{PROJECT_LABEL}={name}"], "status": "running"}
        if not client.containers.list(filters=selector):
            _check_images(client, compose)
            record_compose(paths, name, compose_file, cmd)  # before: `down` must find it
            composemod.compose_up(cmd, name, compose_file)
        target = DockerTarget(
            project=name,
            compose_file=str(compose_file),
            compose_cmd=cmd,
            services=target.services,
            ports=target.ports,
            exclude_inbound=target.exclude_inbound,
        )
    containers = [c.attrs for c in client.containers.list(filters=_filters(target))]
    network = previous.network if previous else _network_of(containers, target)
    target = DockerTarget(
        project=target.project,
        compose_file=target.compose_file,
        compose_cmd=target.compose_cmd,
        network=network,
        services=target.services,
        ports=target.ports,
        exclude_inbound=target.exclude_inbound,
    )
    gateway = _gateway(client, network)
    url = f"https://{registry_listen or gateway}:{registry_port}"
    workloads = workloads_of(containers, target, url)
    if not workloads:
        what = f"compose project {target.project!r}" if target.project else (
            f"containers labelled {SERVICE_LABEL}")  # fmt: skip
        raise LaunchError(
            f"no running container of {what} is a service of mesh.yaml: start them, or label "
            f"them {SERVICE_LABEL}=NAME (a service in mesh.yaml)"
        )
    meshed = {w.name for w in workloads}
    names = (str(a.get("Name", "")).lstrip("/") for a in containers)
    skipped = sorted(n for n in names if n not in meshed)
    return DockerUp(target, gateway, workloads, tuple(skipped))


def _network_of(containers: Sequence[Mapping[str, Any]], target: DockerTarget) -> str:
    """The network most meshable containers share (the project's), else Docker's default."""
    counts: dict[str, int] = {}
    for a in containers:
        labels = (a.get("Config") or {}).get("Labels") or {}
        if mesh_identity(labels, target) is None:
            continue
        for n in (a.get("NetworkSettings") or {}).get("Networks") or {}:
            counts[n] = counts.get(n, 0) + 1
    if not counts:
        return "bridge"
    return max(sorted(counts), key=lambda n: counts[n])


def record_compose(paths: LaunchPaths, project: str, file: Path, cmd: Sequence[str]) -> None:
    """Note a compose project `up` starts, so `down` stops it whatever happens."""
    owned = read_json(paths.owned) or {}
    owned["compose"] = {"project": project, "file": str(file), "cmd": list(cmd)}
    write_json(paths.owned, owned)


# --- the supervisor's view: events ---------------------------------------------------------------


class DockerWatch:
    """Follows container start/die events; `changed()` says when to list containers again."""

    def __init__(self, target: DockerTarget) -> None:
        self.target = target
        self.client = docker_client()
        self._event = threading.Event()
        self._stop = threading.Event()
        self._events: Any = None
        self._last_sync = 0.0
        self._thread = threading.Thread(target=self._follow, name="docker-events", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        filters: dict[str, Any] = {"type": "container", "event": ["start", "die", "destroy"]}
        while not self._stop.is_set():
            try:
                self._events = self.client.events(decode=True, filters=filters)
                self._event.set()  # (re)connected: anything may have happened meanwhile
                for ev in self._events:
                    labels = (ev.get("Actor") or {}).get("Attributes") or {}
                    if self.target.project and labels.get(PROJECT_LABEL) != self.target.project:
                        continue
                    if not self.target.project and SERVICE_LABEL not in labels:
                        continue
                    log.info("container %s: %s", labels.get("name", "?"), ev.get("status"))
                    self._event.set()
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("docker event stream: %s; reconnecting", exc)
                    time.sleep(1.0)

    def changed(self) -> bool:
        now = time.monotonic()
        if self._event.is_set() or now - self._last_sync >= RESYNC_S:
            self._event.clear()
            self._last_sync = now
            return True
        return False

    def workloads(self, registry_url: str) -> tuple[Workload, ...]:
        return list_workloads(self.client, self.target, registry_url)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            if self._events is not None:
                self._events.close()


# --- down ---------------------------------------------------------------------------------------


def release(pids: Sequence[int], compose: Mapping[str, Any] | None) -> list[str]:
    """Remove our rules from containers still running; stop a compose project `up` started.

    Returns what was done, for the report. Runs without a registry or supervisor.
    """
    from meshctl.launch.procs import pid_alive
    from proxy.intercept import iptables

    done = []
    for pid in sorted(set(pids)):
        if pid_alive(pid):
            with contextlib.suppress(iptables.InterceptError):
                iptables.remove(pid)
                done.append(f"rules of pid {pid}")
            with contextlib.suppress(LaunchError, OSError, subprocess.SubprocessError):
                unpin_gateway(pid)
    if compose:
        project, file = str(compose["project"]), Path(str(compose["file"]))
        cmd = tuple(str(c) for c in compose.get("cmd") or ())
        try:
            if not file.is_file() or not cmd:
                raise LaunchError(f"{file} is gone")
            composemod.compose_down(cmd, project, file)
        except LaunchError as exc:
            log.info("compose down of %s: %s; removing by label", project, exc)
            _remove_project(project)
        done.append(f"compose project {project}")
    return done


def _remove_project(project: str) -> None:
    """What `compose down` does, by label, when the compose file is gone."""
    client = docker_client()
    selector = {"label": [f"{PROJECT_LABEL}={project}"]}
    for c in client.containers.list(all=True, filters=selector):
        with contextlib.suppress(Exception):
            c.remove(force=True)
    for n in client.networks.list(filters=selector):
        with contextlib.suppress(Exception):
            n.remove()
