"""`meshctl status`: the registry's view joined with the supervisor's state (any runtime)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshctl.client import RegistryClient, RegistryError, RegistryUnavailable
from meshctl.launch import plan as planmod
from meshctl.launch.procs import LaunchError, LaunchPaths, read_json, running_registry
from meshctl.launch.supervisor import intercept_config, running_pid

# --- status --------------------------------------------------------------------------------------


def status(home: Path) -> dict[str, Any]:
    """Services, endpoints, proxies (config version, certificate expiry), last config error."""
    paths = LaunchPaths(home)
    reg = running_registry(home)
    if reg is None:
        raise LaunchError(f"no mesh is running for MESH_HOME={home}: start one with `meshctl up`")
    try:
        st = RegistryClient.from_home(home).call("GET", "/v1/status", timeout=5)
    except (RegistryUnavailable, RegistryError) as exc:
        raise LaunchError(
            f"the registry (pid {reg['pid']}) does not answer: {exc}; see "
            f"{paths.log('registry')}, or `meshctl down` and `meshctl up` again"
        ) from None
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
            }
        )
    return {
        "registry": {
            "url": reg.get("url"),
            "pid": reg.get("pid"),
            "config_dir": reg.get("config_dir"),
        },
        "mode": plan.mode if plan else None,
        "runtime": plan.runtime if plan else None,
        "compose_project": plan.docker.project if plan and plan.docker else None,
        "config_version": version,
        "last_config_error": st.get("last_config_error"),
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
                    "identity",
                )
            }
            for e in endpoints
        ],
        "proxies": proxies,
        "workloads": [
            {
                "name": w.name,
                "service": w.service,
                "version": w.version,
                "address": w.address,
                "netns": w.netns,
                "container": w.container or None,
                "app_pid": actual.get(w.name, {}).get("app_pid"),
                "proxy_pid": actual.get(w.name, {}).get("proxy_pid"),
                "error": actual.get(w.name, {}).get("error"),
                "interception": _interception(w, plan) if plan else None,
            }
            for w in (plan.workloads if plan else ())
        ],
    }


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
