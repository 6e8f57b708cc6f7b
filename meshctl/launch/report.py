"""`meshctl status`: the registry's view joined with the supervisor's state (any runtime).

While the registry does not answer, status says so, and what still runs (from state.json
and /proc): never "no mesh is running" while this mesh's processes run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from meshctl.client import RegistryClient, RegistryError, RegistryUnavailable, read_joined
from meshctl.launch import plan as planmod
from meshctl.launch.procs import (
    LaunchError,
    LaunchPaths,
    pid_alive,
    read_json,
    read_pid,
    running_registry,
)
from meshctl.launch.supervisor import intercept_config, running_pid

# --- status --------------------------------------------------------------------------------------


def status(home: Path, client: RegistryClient | None = None) -> dict[str, Any]:
    """Services, endpoints, proxies (config version, certificate expiry), last config error.
    With the registry down: `registry.answering` false, `registry.problem` says what runs.
    `client`: a registry on another host (--registry); a host that `up --join` joined asks
    its mesh's registry as one of its proxies."""
    paths = LaunchPaths(home)
    reg = running_registry(home) if client is None else None
    joined = read_joined(home) if client is None and reg is None else None
    try:
        if client is not None:
            st = client.call("GET", "/v1/status", timeout=5)
        elif reg is None and joined is None:
            raise RegistryUnavailable("it is not running")
        else:
            client = RegistryClient.resolve(home)
            st = client.call("GET", "/v1/status", timeout=5)
    except (RegistryUnavailable, RegistryError) as exc:
        if reg is None and joined is None and client is not None:
            raise LaunchError(str(exc)) from None  # --registry: nothing local to tell of
        return outage(home, str(exc), joined)
    if reg is None:
        reg = {"url": client.url if client else None, "pid": None, "config_dir": None}
    state = read_json(paths.state) or {}
    plan_raw = state.get("plan") or (read_json(paths.plan) or {}).get("plan")
    plan = planmod.from_wire(plan_raw) if plan_raw else None
    actual = state.get("workloads", {})
    version = st.get("config_version")
    endpoints = st.get("endpoints", [])
    services: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        svc = services.setdefault(e["service"], {"endpoints": 0, "healthy": 0})
        svc["endpoints"] += 1
        svc["healthy"] += e.get("health") == "healthy"
    if plan:
        for w in plan.workloads:
            services.setdefault(w.service, {"endpoints": 0, "healthy": 0})
    proxies = []
    for p in st.get("proxies", []):
        a = actual.get(p["proxy_id"], {})
        proxies.append(
            {
                "proxy_id": p["proxy_id"],
                "service": p.get("service"),
                "connected": p.get("connected"),
                "config_version": p.get("acked_version"),
                "current": p.get("acked_version") == version,
                "nack_error": p.get("nack_error"),
                "cert_not_after": p.get("cert_not_after"),
                "restarts": a.get("proxy_restarts", 0),
                "pid": a.get("proxy_pid"),
                "replica": p.get("replica"),  # connected to another registry (docs/etcd.md)
            }
        )
    return {
        "registry": {
            "url": reg.get("url"),
            "pid": reg.get("pid"),
            "config_dir": reg.get("config_dir"),
            "answering": True,
            "problem": None,
            "joined": joined is not None,
        },
        "mode": plan.mode if plan else None,
        "runtime": plan.runtime if plan else None,
        "compose_project": plan.docker.project if plan and plan.docker else None,
        "config_version": version,
        "last_config_error": st.get("last_config_error"),
        "replicas": st.get("replicas"),  # None: one registry on files; else docs/etcd.md
        "supervisor_pid": running_pid(paths),
        "services": services,
        "endpoints": [
            {
                k: e.get(k)
                for k in (
                    "id",
                    "service",
                    "address",
                    "inbound_port",
                    "labels",
                    "health",
                    "reason",
                    "identity",
                )
            }
            for e in endpoints
        ],
        "proxies": proxies,
        "workloads": _workloads(plan, actual),
    }


def _workloads(plan: planmod.Plan | None, actual: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's workloads with the supervisor's pids (those still alive) and errors."""
    out: list[dict[str, Any]] = []
    if plan is None:
        return out
    for w in plan.workloads:
        a = actual.get(w.name, {})
        pids = {k: a[k] if isinstance(a.get(k), int) and pid_alive(a[k]) else None
                for k in ("app_pid", "proxy_pid")}  # fmt: skip
        out.append({"name": w.name, "service": w.service, "version": w.version,
                    "address": w.address, "netns": w.netns, "container": w.container or None,
                    **pids, "error": a.get("error"),
                    "interception": _interception(w, plan)})  # fmt: skip
    return out


def _clock(wall: object) -> str:
    return time.strftime("%H:%M:%SZ", time.gmtime(wall)) if isinstance(wall, (int, float)) else "?"


def outage(home: Path, why: str, joined: dict[str, Any] | None = None) -> dict[str, Any]:
    """Status while the registry does not answer, from the files and /proc: what runs, and
    who brings the registry back. LaunchError "no mesh is running" only when nothing runs."""
    paths = LaunchPaths(home)
    state = read_json(paths.state) or {}
    plan_raw = state.get("plan") or (read_json(paths.plan) or {}).get("plan")
    plan = planmod.from_wire(plan_raw) if plan_raw else None
    workloads = _workloads(plan, state.get("workloads", {}))
    running = [w for w in workloads if w["app_pid"] or w["proxy_pid"]]
    sup = running_pid(paths)
    endpoint = read_json(home / "registry" / "endpoint.json") or {}
    pid = read_pid(paths.pid_file("registry")) or endpoint.get("pid")
    alive = isinstance(pid, int) and pid_alive(pid)
    if not (running or sup or alive) and joined is None:
        raise LaunchError(f"no mesh is running for MESH_HOME={home}: start one with `meshctl up`")
    url = joined["url"] if joined else plan.registry_url if plan else endpoint.get("url", "?")
    seen = state.get("registry") or {}
    if joined is not None:
        where, who = f"this host joined it; {why}", "it runs on another host"
    elif alive:
        where = f"pid {pid} running but not answering: {why}"
    elif seen.get("down_at"):
        where = f"pid {pid} dead since {_clock(seen['down_at'])}"
    else:
        where = f"pid {pid} dead"
    log = paths.log("registry")
    if joined is not None:
        pass
    elif sup is None:
        who = f"no supervisor runs to restart it: see {log}, then `meshctl up` again"
    elif alive:
        who = f"the supervisor (pid {sup}) watches it; see {log}"
    else:
        when = seen.get("next_start_wall")
        at = f" at {_clock(when)}" if isinstance(when, (int, float)) and when > time.time() else ""
        who = f"the supervisor (pid {sup}) is restarting it{at}; see {log}"
    problem = (f"registry not answering at {url} ({where}; {who}); "
               f"{len(running)} workload{'' if len(running) == 1 else 's'} running "
               "(from state.json)")  # fmt: skip
    return {
        "registry": {"url": url, "pid": pid, "config_dir": plan.config_dir if plan else None,
                     "answering": False, "problem": problem, "restarts": seen.get("restarts"),
                     "joined": joined is not None},
        "mode": plan.mode if plan else None,
        "runtime": plan.runtime if plan else None,
        "compose_project": plan.docker.project if plan and plan.docker else None,
        "config_version": None,
        "last_config_error": None,
        "supervisor_pid": sup,
        "services": {},
        "endpoints": [],
        "proxies": [],
        "workloads": workloads,
    }  # fmt: skip


def _interception(w: planmod.Workload, plan: planmod.Plan) -> dict[str, Any] | None:
    """What iptables captures for an intercepted workload (None in explicit mode): the
    inbound ports ("*" = every port but the excluded), the excluded ones, the families."""
    if w.netns is None and not w.container:
        return None
    from proxy.intercept.iptables import families

    cfg = intercept_config(w, plan)
    return {
        "inbound_captured": cfg.captured_inbound(),
        "inbound_excluded": cfg.excluded_inbound(),
        "families": [f"IPv{f}" for f in families()],
    }
