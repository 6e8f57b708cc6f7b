"""`meshctl down` for the local runtime: remove every process, namespace, veth, rule and bridge.

It works from what is on disk, not from a live supervisor: plan.json and state.json name
the workloads, launch/owned.json every namespace and bridge ever made (written before each
is made), and /proc is scanned for processes carrying this mesh's mark. So a supervisor
killed with SIGKILL, or a proxy that crashed, leaves nothing behind. Interception rules
live inside the namespaces and go with them; the only rule in the root namespace, the
bridge's FORWARD accept, goes with the bridge.

The docker runtime's containers are not ours: the rules are removed from those still
running, and the compose project is stopped (`compose down`) only when `up` started it
(launch/owned.json says so, written before it was started).
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshctl.launch import plan as planmod
from meshctl.launch.procs import (
    LaunchError,
    LaunchPaths,
    marked_pids,
    read_json,
    running_registry,
    stop_pids,
)
from meshctl.launch.supervisor import running_pid

# --- down ----------------------------------------------------------------------------------------


@dataclass
class DownReport:
    processes: int = 0
    namespaces: list[str] = field(default_factory=list)
    bridges: list[str] = field(default_factory=list)
    registry_stopped: bool = False
    purged: bool = False
    containers: list[str] = field(default_factory=list)  # docker: rules removed, proxies gone
    compose_project: str | None = None  # docker: the project `up` started, now down

    @property
    def nothing(self) -> bool:
        return not (
            self.processes
            or self.namespaces
            or self.bridges
            or self.registry_stopped
            or self.containers
            or self.compose_project
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "processes": self.processes,
            "namespaces": self.namespaces,
            "bridges": self.bridges,
            "registry_stopped": self.registry_stopped,
            "purged": self.purged,
            "containers": self.containers,
            "compose_project": self.compose_project,
        }


def _containers(paths: LaunchPaths) -> dict[str, int]:
    """The docker runtime's meshed containers, by name, with their pids."""
    found: dict[str, int] = {}
    for source in (read_json(paths.plan), read_json(paths.state)):
        raw = source.get("plan") if source else None
        if raw:
            found.update((w.name, w.pid) for w in planmod.from_wire(raw).workloads if w.container)
    return found


def _names_owned(paths: LaunchPaths) -> tuple[set[str], set[str]]:
    namespaces: set[str] = set()
    bridges: set[str] = set()
    owned = read_json(paths.owned) or {}
    namespaces.update(owned.get("namespaces", []))
    bridges.update(owned.get("bridges", []))
    for source in (read_json(paths.plan), read_json(paths.state)):
        raw = source.get("plan") if source else None
        if raw:
            p = planmod.from_wire(raw)
            namespaces.update(w.netns for w in p.workloads if w.netns)
            if p.network:
                bridges.add(p.network.bridge)
    return namespaces, bridges


def teardown(home: Path, purge: bool = False) -> DownReport:
    """Remove every process, namespace, veth, rule and bridge of this home's mesh."""
    paths = LaunchPaths(home)
    report = DownReport()
    reg = running_registry(home)
    sup = running_pid(paths)
    if sup is not None:
        report.processes += len(stop_pids([sup], grace=8.0))
    report.registry_stopped = reg is not None
    report.processes += len(stop_pids(marked_pids(home), grace=5.0))
    from meshctl.launch.join import forget

    forget(home)  # a joined host leaves the mesh
    containers = _containers(paths)
    compose = (read_json(paths.owned) or {}).get("compose")
    if containers or compose:
        from meshctl.launch import docker

        docker.release(list(containers.values()), compose)
        report.containers = sorted(containers)
        report.compose_project = str(compose["project"]) if compose else None
    namespaces, bridges = _names_owned(paths)
    if namespaces or bridges:
        from proxy.intercept.iptables import PrivilegeError, check_privileges

        try:
            check_privileges(enter_namespace=True)
        except PrivilegeError:
            raise LaunchError(
                f"the mesh has network namespaces ({', '.join(sorted(namespaces)) or '-'}) "
                "and removing them needs root: run `sudo meshctl down`"
            ) from None
        from meshctl.launch import netns

        for name in sorted(namespaces):
            if (netns.NETNS_RUN_DIR / name).exists() or (netns.ETC_NETNS / name).exists():
                netns.delete_host(name)
                report.namespaces.append(name)
            else:
                netns.delete_host(name)  # a veth left by a half-made host
        for bridge in sorted(bridges):
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                existed = bool(ipr.link_lookup(ifname=bridge))
            netns.delete_bridge(bridge)
            if existed:
                report.bridges.append(bridge)
    for path in (
        paths.plan,
        paths.state,
        paths.owned,
        home / "registry" / "endpoint.json",
        home / "registry" / "catalog.json",
        *(paths.pid_file(n) for n in ("registry", "supervisor")),
    ):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    shutil.rmtree(paths.proxies, ignore_errors=True)  # per-run keys; a new up joins afresh
    if purge:
        shutil.rmtree(home, ignore_errors=True)
        report.purged = True
    return report
