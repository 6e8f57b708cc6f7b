"""One bench run: build every system, load them interleaved (A B C, A B C ...), summarise.

The result is one JSON-able dict: `meta` (machine, versions, command), `settings`, `runs`
(every repetition's raw figures per system), `summary` (per system and metric: median, min,
max over repetitions), `ratios` (meshctl over HAProxy, on medians) and `control_plane`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import load
from bench.procs import cpus
from bench.systems import (
    FLOOR,
    INTERPRETED,
    NETNS,
    REPO,
    VARIANTS,
    Lab,
    System,
    direct_of,
    system_names,
)


@dataclass(frozen=True)
class Settings:
    reps: int = 3
    rate: int = 1000
    connections: int = 16
    fixed_s: float = 15.0
    saturate_s: float = 10.0
    warmup_s: float = 2.0
    variants: tuple[str, ...] = VARIANTS
    # loopback: everything on 127.0.0.1; netns: across two network namespaces (root only)
    topologies: tuple[str, ...] = ("loopback",)
    control_plane: bool = True
    profile_s: float = 0.0  # > 0: py-spy the meshctl HTTP proxies under saturation
    quick: bool = False

    @classmethod
    def quick_mode(cls) -> Settings:
        return cls(reps=1, fixed_s=3.0, saturate_s=3.0, warmup_s=1.0, variants=("http",),
                   quick=True)


# metric key -> (label, unit, lower is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "p50_ms": ("latency p50 at fixed rate", "ms", True),
    "p90_ms": ("latency p90 at fixed rate", "ms", True),
    "p99_ms": ("latency p99 at fixed rate", "ms", True),
    "p99.9_ms": ("latency p99.9 at fixed rate", "ms", True),
    "added_p50_ms": ("added latency p50 (minus direct, same repetition)", "ms", True),
    "added_p99_ms": ("added latency p99 (minus direct, same repetition)", "ms", True),
    "fixed_rps": ("achieved rate in the fixed-rate run", "req/s", False),
    "cpu_ms_per_1k": ("CPU per 1000 requests, both hops, at fixed rate", "ms", True),
    "cpu_ms_per_1k_sidecar": ("CPU per 1000 requests per sidecar (max of A, B) = "
                              "vCPU-ms per 1000 req/s", "ms", True),
    "rss_mib_sidecar": ("RSS per sidecar at fixed rate (max of A, B)", "MiB", True),
    "max_rps": ("closed-loop throughput (both hops on one core)", "req/s", False),
    "sat_cpu_ms_per_1k": ("CPU per 1000 requests, both hops, at saturation", "ms", True),
    "foreign_pct": ("noise: the proxy core used by other processes during the loads", "%",
                    True),
}


NOT_COMPARED = frozenset(("foreign_pct",))  # describes the machine, not the system


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpus_allowed": cpus(), "cpu_model": model,
            "kernel": platform.release(), "python": platform.python_version(),
            "python_executable": os.path.realpath(sys.executable),
            "python_shared": bool(sysconfig.get_config_var("Py_ENABLE_SHARED"))}


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def tool_versions() -> dict[str, Any]:
    commit = _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    try:  # the proxy measured is the work tree's: say when it is not the commit's
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                "proxy", "registry", "meshctl"], capture_output=True, text=True,
                               timeout=10, check=False).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        dirty = []
    return {"haproxy": _version(["haproxy", "-v"]), "nginx": _version(["nginx", "-v"]),
            "wrk": _version(["wrk", "--version"]), "meshctl_commit": commit,
            "meshctl_uncommitted": [ln[3:] for ln in dirty if ln.strip()],
            "meshctl_core": meshctl_core()}


def meshctl_core() -> str:
    """Which core the proxies run (proxy/compiled): they inherit this environment."""
    try:
        out = subprocess.run([sys.executable, "-m", "proxy.compiled", "status"], cwd=REPO,
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return out.stdout.strip() or out.stderr.strip() or "unknown"


def _one(system: System, lab: Lab, s: Settings) -> dict[str, Any]:
    core = lab.load_core
    ns = system.netns
    if s.warmup_s > 0:  # connections, pools, TLS sessions and caches warm before we time
        load.fixed_rate(system.url, core, s.rate, s.connections, s.warmup_s, ns)
    fixed = load.measured(lambda: load.fixed_rate(system.url, core, s.rate, s.connections,
                                                  s.fixed_s, ns), system.proxies, lab.proxy_core)
    sat = load.measured(lambda: load.saturate(system.url, core, s.connections, s.saturate_s, ns),
                        system.proxies, lab.proxy_core)
    for proc in system.proxies.values():
        proc.check()
    return {"fixed": fixed, "saturate": sat}


def _figures(raw: dict[str, Any], direct: dict[str, Any] | None) -> dict[str, float]:
    fixed, sat = raw["fixed"], raw["saturate"]
    c = fixed["corrected_us"]
    f: dict[str, float] = {f"{k}_ms": c[k] / 1000 for k in ("p50", "p90", "p99", "p99.9")}
    f["fixed_rps"] = fixed["rps"]
    f["max_rps"] = sat["rps"]
    shares = [x["foreign_core_share"] for x in (fixed, sat) if "foreign_core_share" in x]
    if shares:
        f["foreign_pct"] = max(shares) * 100
    if direct is not None:
        d = direct["fixed"]["corrected_us"]
        f["added_p50_ms"] = (c["p50"] - d["p50"]) / 1000
        f["added_p99_ms"] = (c["p99"] - d["p99"]) / 1000
    proxies = fixed["proxies"]
    if proxies:
        f["cpu_ms_per_1k"] = sum(p["cpu_s_per_1k"] for p in proxies.values()) * 1000
        f["cpu_ms_per_1k_sidecar"] = max(p["cpu_s_per_1k"] for p in proxies.values()) * 1000
        f["rss_mib_sidecar"] = max(p["rss_mib"] for p in proxies.values())
        f["sat_cpu_ms_per_1k"] = sum(p["cpu_s_per_1k"] for p in sat["proxies"].values()) * 1000
    return {k: round(v, 4) for k, v in f.items()}


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per system and metric: median, min, max over the repetitions."""
    per: dict[str, dict[str, list[float]]] = {}
    for name, reps in runs.items():
        for i, raw in enumerate(reps):
            ref = direct_of(name)
            direct = runs[ref][i] if ref in runs and name != ref else None
            for key, value in _figures(raw, direct).items():
                per.setdefault(name, {}).setdefault(key, []).append(value)
    return {name: {key: {"median": round(statistics.median(vals), 4), "min": min(vals),
                         "max": max(vals), "n": len(vals)} for key, vals in metrics.items()}
            for name, metrics in per.items()}


def ratios(summary: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """meshctl / HAProxy on medians, per topology and variant, against HAProxy TLS and plain."""
    out: dict[str, dict[str, float]] = {}
    for topo in ("", NETNS):
        for variant in VARIANTS:
            for mine, refs in (("mtls", ("tls", "plain")), ("plain", ("plain",))):
                mesh = summary.get(f"{topo}meshctl-{mine}-{variant}")
                if not mesh:
                    continue
                for ref in refs:
                    other = summary.get(f"{topo}haproxy-{ref}-{variant}")
                    if not other:
                        continue
                    out[f"{topo}meshctl-{mine}-{variant} / {topo}haproxy-{ref}-{variant}"] = {
                        k: round(mesh[k]["median"] / other[k]["median"], 3)
                        for k in mesh if k in other and other[k]["median"] not in (0, 0.0)
                        and k not in NOT_COMPARED}
    # The Python floor (bench/pyrelay.py): meshctl over it, and it over HAProxy TLS.
    floor, mesh, tls = (summary.get(n) for n in (FLOOR, "meshctl-mtls-http", "haproxy-tls-http"))
    interp = summary.get(INTERPRETED)
    for a, b, name in ((mesh, floor, f"meshctl-mtls-http / {FLOOR}"),
                       (floor, tls, f"{FLOOR} / haproxy-tls-http"),
                       (mesh, interp, f"meshctl-mtls-http / {INTERPRETED}")):
        if a and b:
            out[name] = {k: round(a[k]["median"] / b[k]["median"], 3) for k in a
                         if k in b and b[k]["median"] not in (0, 0.0) and k not in NOT_COMPARED}
    return out


def _json_out(stdout: str) -> dict[str, Any] | None:
    """A script's JSON: its whole output (indented or not), else its last `{...}` line."""
    candidates = [stdout] + [ln for ln in reversed(stdout.splitlines())
                             if ln.strip().startswith("{")]
    for text in candidates:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def control_plane(quick: bool) -> dict[str, Any]:
    """The other benches' JSON, each run as a subprocess (absent or failing ones noted)."""
    out: dict[str, Any] = {}
    scripts = {"ca_issuance": ["--count", "300"] if quick else [], "push_latency": [],
               "up_ready": ["--runs", "2"]}
    for name, args in scripts.items():
        if not (REPO / "bench" / f"{name}.py").exists():
            out[name] = {"skipped": f"bench/{name}.py is not there yet"}
            continue
        if quick and name in ("push_latency", "up_ready"):
            out[name] = {"skipped": "not run in --quick"}
            continue
        try:
            r = subprocess.run([sys.executable, "-m", f"bench.{name}", *args], cwd=REPO,
                               capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            out[name] = {"error": "timed out after 900 s"}
            continue
        parsed = _json_out(r.stdout) if r.returncode == 0 else None
        out[name] = parsed if parsed is not None else {
            "error": f"rc {r.returncode}: {(r.stderr or r.stdout)[-500:]}"}
    return out


def run(s: Settings, command: str, log: Callable[[str], None] = print,
        profile: Callable[[Lab, Settings], dict[str, Any]] | None = None,
        netns_note: str | None = None, netns_optional: bool = False) -> dict[str, Any]:
    """`netns_note`: why the netns topology was not run, for the report. `netns_optional`:
    a netns topology that fails to build is dropped (and said so), not fatal."""
    names = system_names(s.variants, s.topologies)
    started = dt.datetime.now(dt.UTC)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    prof: dict[str, Any] = {}
    with Lab(names, netns_optional=netns_optional) as lab:
        log(f"bench: building {', '.join(names)} in {lab.dir}")
        lab.start()
        if lab.netns_error:
            names = [n for n in names if n in lab.systems]
            runs = {n: [] for n in names}
            netns_note = f"it failed to build: {lab.netns_error}"
        log(f"bench: load generator, nginx, registry on CPU {lab.load_core}; "
            f"proxies on CPU {lab.proxy_core}")
        for rep in range(s.reps):
            for name in names:  # interleaved: every system once per repetition, same order
                raw = _one(lab.systems[name], lab, s)
                runs[name].append(raw)
                log(f"bench: rep {rep + 1}/{s.reps} {name:24s} "
                    f"p50 {raw['fixed']['corrected_us']['p50'] / 1000:.3f} ms  "
                    f"p99 {raw['fixed']['corrected_us']['p99'] / 1000:.3f} ms  "
                    f"max {raw['saturate']['rps']:.0f} req/s")
        if profile is not None and s.profile_s > 0 and "meshctl-mtls-http" in lab.systems:
            log(f"bench: profiling the meshctl HTTP proxies for {s.profile_s:g} s")
            prof = profile(lab, s)
    summary = summarise(runs)
    result: dict[str, Any] = {
        "meta": {"date": started.isoformat(timespec="seconds"), "command": command,
                 "machine": machine(), "tools": tool_versions(),
                 "pinning": {"load_generator_nginx_registry": lab.load_core,
                             "proxies": lab.proxy_core},
                 "netns": ({"prefix": lab.netns.prefix,
                            "network": lab.netns.up_result.get("network"),
                            "teardown_warnings": lab.netns.warnings}
                           if lab.netns is not None else {"skipped": netns_note}),
                 "duration_s": round((dt.datetime.now(dt.UTC) - started)
                                     .total_seconds(), 1)},
        "settings": asdict(s), "runs": runs, "summary": summary, "ratios": ratios(summary),
    }
    if s.control_plane:
        log("bench: control-plane benches")
        result["control_plane"] = control_plane(s.quick)
    if prof:
        result["profile"] = prof
    return result
