"""BENCHMARKS.md from a results dict: method, tables (meshctl, HAProxy, direct), goals, profile.

The file is regenerated whole by every full run. Hand-written notes (before/after of an
optimisation) survive between the markers `<!-- bench:keep:start -->` and
`<!-- bench:keep:end -->`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench import plots
from bench.suite import METRICS
from bench.systems import FLOOR, INTERPRETED

KEEP_START, KEEP_END = "<!-- bench:keep:start -->", "<!-- bench:keep:end -->"
TABLE_METRICS = ("added_p50_ms", "added_p99_ms", "p50_ms", "p90_ms", "p99_ms", "p99.9_ms",
                 "fixed_rps", "cpu_ms_per_1k", "cpu_ms_per_1k_sidecar", "rss_mib_sidecar",
                 "max_rps", "sat_cpu_ms_per_1k", "foreign_pct")


def _fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}"


def _cell(m: dict[str, float] | None) -> str:
    if m is None:
        return "-"
    if m["n"] > 1:
        return f"{_fmt(m['median'])} ({_fmt(m['min'])}–{_fmt(m['max'])})"
    return _fmt(m["median"])


def _table(result: dict[str, Any], variant: str, topo: str = "") -> list[str]:
    """One table per topology (`topo`: "" or "netns-") and variant.

    The HAProxy plain column (and its ratio) is left out when the run has no such system
    (the netns topology measures HAProxy with TLS only).
    """
    s, r = result["summary"], result["ratios"]
    plain = f"{topo}haproxy-plain-{variant}" in s or not topo
    floor = not topo and variant == "http" and FLOOR in s
    interp = not topo and variant == "http" and INTERPRETED in s
    mplain = f"{topo}meshctl-plain-{variant}" in s
    cols = [f"{topo}meshctl-mtls-{variant}",
            *([INTERPRETED] if interp else []),
            *([f"{topo}meshctl-plain-{variant}"] if mplain else []),
            f"{topo}haproxy-tls-{variant}",
            *([f"{topo}haproxy-plain-{variant}"] if plain else []),
            *([FLOOR] if floor else []), f"{topo}direct"]
    heads = ["meshctl mTLS", *(["meshctl mTLS, interpreted"] if interp else []),
             *(["meshctl plain"] if mplain else []), "HAProxy TLS",
             *(["HAProxy plain"] if plain else []),
             *(["Python floor (bare relay, TLS)"] if floor else []), "direct",
             "meshctl / HAProxy TLS", *(["meshctl / HAProxy plain"] if plain else []),
             *(["meshctl plain / HAProxy plain"] if mplain and plain else []),
             *(["meshctl / floor", "floor / HAProxy TLS"] if floor else []),
             *(["compiled / interpreted"] if interp else [])]
    pairs = [r.get(f"{topo}meshctl-mtls-{variant} / {topo}haproxy-{ref}-{variant}", {})
             for ref in ("tls", *(["plain"] if plain else []))]
    if mplain and plain:
        pairs.append(r.get(f"{topo}meshctl-plain-{variant} / {topo}haproxy-plain-{variant}", {}))
    if floor:
        pairs += [r.get(f"meshctl-mtls-http / {FLOOR}", {}),
                  r.get(f"{FLOOR} / haproxy-tls-http", {})]
    if interp:
        pairs.append(r.get(f"meshctl-mtls-http / {INTERPRETED}", {}))
    lines = ["| metric | unit | " + " | ".join(heads) + " |",
             "|---|---|" + "---|" * len(heads)]
    for key in TABLE_METRICS:
        label, unit, _ = METRICS[key]
        cells = [_cell(s.get(c, {}).get(key)) for c in cols]
        ratio = [f"{p[key]:.2f}x" if key in p else "-" for p in pairs]
        lines.append(f"| {label} | {unit} | " + " | ".join(cells + ratio) + " |")
    return lines


def _netns_method(result: dict[str, Any]) -> str:
    """The Method line on the network-namespace topology: what ran, or why it did not."""
    info = result["meta"].get("netns") or {}
    if "skipped" in info or "netns" not in result["settings"].get("topologies", ("loopback",)):
        why = info.get("skipped") or "not asked for"
        return ("- Network namespaces (meshctl with iptables interception, built by `meshctl "
                f"up`): not run: {why}. `sudo python -m bench --topology netns` runs it.")
    net = info.get("network") or {}
    where = f" (bridge {net.get('bridge')}, {net.get('subnet')})" if net else ""
    return ("- Network namespaces (tables \"in network namespaces\"): `meshctl up` (local "
            "runtime, transparent mode) runs the bench config: the `client` service (an idle "
            "app) and `upstream`/`upstream-tcp` (nginx, the same config) each in its own "
            f"namespace on up's bridge{where}, joined by veth pairs; the supervisor installs "
            "meshctl's iptables rules (proxy/intercept) and runs each proxy as uid 1337. wrk "
            "runs inside the client's namespace and calls `http://upstream:8080/` as an app "
            "would: /etc/netns hosts -> the service's VIP -> REDIRECT to proxy A's 15001 -> "
            "SO_ORIGINAL_DST -> mTLS across veth/bridge/veth to B's 15006 -> nginx on "
            "127.0.0.1 (the client's proxy is A for both variants, each upstream's is B). The "
            "references cross the same bridge from two namespaces of their "
            "own (without interception, made with meshctl.launch.netns): netns-direct is wrk "
            "-> nginx in the other namespace; HAProxy TLS is wrk -> HAProxy A on 127.0.0.1 "
            "(wrk's namespace) -> TLS 1.3 with client certificates -> HAProxy B (nginx's "
            "namespace) -> nginx on 127.0.0.1. Added latency is against netns-direct. Same "
            "pinning; the registry, the supervisor (it checks each namespace's rules every "
            "second with iptables-save) and the apps on the load core. `meshctl down` removes "
            "it all afterwards.")


def _goals(result: dict[str, Any]) -> list[str]:
    s = result["summary"].get("meshctl-mtls-http")
    ratio = result["ratios"].get("meshctl-mtls-http / haproxy-tls-http", {})
    if not s:
        return []
    ca = result.get("control_plane", {}).get("ca_issuance", {})
    rows: list[tuple[str, str, float | None, bool | None]] = []

    def goal(what: str, target: str, value: float | None, ok: bool | None) -> None:
        rows.append((what, target, value, ok))

    cpu = ratio.get("cpu_ms_per_1k")
    goal("CPU per request, meshctl / HAProxy TLS (both hops)", "<= 1.5x (moonshot 1.0x)", cpu,
         None if cpu is None else cpu <= 1.5)
    thr = ratio.get("max_rps")
    goal("closed-loop throughput, meshctl / HAProxy TLS", ">= 0.8x", thr,
         None if thr is None else thr >= 0.8)
    for key, limit in (("added_p50_ms", 0.5), ("added_p99_ms", 2.0)):
        v = s.get(key, {}).get("median")
        goal(f"{METRICS[key][0]} at {result['settings']['rate']} req/s, ms", f"<= {limit}", v,
             None if v is None else v <= limit)
    rss = s.get("rss_mib_sidecar", {}).get("median")
    goal("RSS per sidecar, MiB", "<= 40 MB (38.1 MiB)", rss,
         None if rss is None else rss <= 40e6 / 2**20)
    vcpu = s.get("cpu_ms_per_1k_sidecar", {}).get("median")
    goal("vCPU per 1000 req/s per sidecar (= CPU-s per 1000 requests)", "<= 0.05 (Istio: 0.20)",
         None if vcpu is None else vcpu / 1000, None if vcpu is None else vcpu / 1000 <= 0.05)
    svids = ca.get("svids_per_s")
    goal("SVIDs issued per second (bench.ca_issuance, one core)", ">= 1000", svids,
         None if svids is None else svids >= 1000)
    out = ["| goal (issue 7, HTTP two-hop mTLS) | target | measured (median) | met |",
           "|---|---|---|---|"]
    for what, target, value, ok in rows:
        shown = "-" if value is None else (f"{value:.2f}x" if "HAProxy" in what else _fmt(value))
        out.append(f"| {what} | {target} | {shown} | "
                   f"{'-' if ok is None else ('yes' if ok else '**no**')} |")
    push = _push_p99(result, 100)
    out.append("| push: file save -> all proxies ACKed, p99 with 100 proxies, ms | <= 150 | "
               f"{'-' if push is None else _fmt(push)} | "
               f"{'-' if push is None else ('yes' if push <= 150 else '**no**')} |")
    return out


def _push_p99(result: dict[str, Any], clients: int) -> float | None:
    push = result.get("control_plane", {}).get("push_latency", {})
    for run in push.get("runs", []):
        if run.get("clients") == clients:
            value = run.get("save_to_all_acked_ms", {}).get("p99")
            return float(value) if value is not None else None
    return None


def _control_plane(cp: dict[str, Any]) -> list[str]:
    lines = []
    ca = cp.get("ca_issuance", {})
    if "svids_per_s" in ca:
        lines.append(f"- SVID issuance (`python -m bench.ca_issuance`, one core): "
                     f"{ca['svids_per_s']:,.0f} SVIDs/s ({ca.get('us_per_svid')} µs each, "
                     f"{ca.get('count')} issued)")
    push = cp.get("push_latency", {})
    if push.get("runs"):
        lines += ["- Push (`python -m bench.push_latency`): config file saved -> every proxy "
                  "ACKed, ms:", "",
                  "| proxies | rounds | p50 | p90 | p99 | max | save -> first view p50 | "
                  "first view -> all ACKed p50 |", "|---|---|---|---|---|---|---|---|"]
        for run in push["runs"]:
            t = run.get("save_to_all_acked_ms", {})
            fv = run.get("save_to_first_view_ms", {})
            fo = run.get("first_view_to_all_acked_ms", {})
            lines.append(f"| {run.get('clients')} | {run.get('rounds')} | {t.get('p50')} | "
                         f"{t.get('p90')} | {t.get('p99')} | {t.get('max')} | {fv.get('p50')} "
                         f"| {fo.get('p50')} |")
        lines.append("")
    up = cp.get("up_ready", {})
    if "median_up_s" in up:
        mode = {r.get("mode") for r in up.get("runs", [])}
        lines.append(f"- `meshctl up` on the example to all proxies ready (`python -m "
                     f"bench.up_ready`, {'/'.join(sorted(m for m in mode if m))} mode): "
                     f"median {up['median_up_s']} s (goal 5 s); `route set-weight` to every "
                     f"proxy ACKed: median {up['median_set_weight_s']:.2f} s (goal 1 s)")
    for name, data in cp.items():
        if name == "ca_issuance" and "svids_per_s" in data:
            continue
        if name == "up_ready" and "median_up_s" in data:
            continue
        if name == "push_latency" and data.get("runs"):
            continue
        lines.append(f"- `python -m bench.{name}`: `{json.dumps(data)}`")
    return lines


def _profile(result: dict[str, Any]) -> list[str]:
    prof = result.get("profile")
    if not prof:
        return ["Not profiled in this run (`python -m bench --profile 10`)."]
    if "skipped" in prof:
        return [f"Skipped: {prof['skipped']}."]
    lines = [f"py-spy (100 Hz, {'with' if prof.get('native') else 'without'} native frames) on "
             f"both proxies of `{prof['system']}` for {prof['seconds']:g} s of closed-loop load "
             f"({prof.get('load', {}).get('rps', 0):,.0f} req/s while sampled, slowed by the "
             "sampling). Own time = samples whose innermost frame is the function; idle "
             "(a thread asleep in epoll) is not sampled. Left: the innermost frame of "
             "each sample, C included. Right: the innermost *Python* frame, so C time "
             "(OpenSSL, the event loop, syscalls) counts for the Python function that "
             "called it.", ""]
    names = {"A": "proxy A (outbound: plaintext in, mTLS out)",
             "B": "proxy B (inbound: mTLS in, plaintext to nginx)"}
    for role, data in prof.get("proxies", {}).items():
        lines += [f"**{names.get(role, role)}**, {data['samples']} samples:", "",
                  "| # | innermost frame (C or Python) | own time | innermost Python frame "
                  "(C time charged to its caller) | own time |", "|---|---|---|---|---|"]
        py = data.get("top_python", [])
        for i, row in enumerate(data["top"]):
            fn = row["function"].replace("|", "\\|")
            cells = [f"`{fn}`", f"{row['share']:.1%}"]
            if i < len(py):
                cells += [f"`{py[i]['function']}`", f"{py[i]['share']:.1%}"]
            lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def render(result: dict[str, Any], report: Path, plot_paths: list[Path] | str,
           results_path: Path, kept: str) -> str:
    meta, st = result["meta"], result["settings"]
    m = meta["machine"]

    def rel(p: Path) -> str:
        return os.path.relpath(p, report.parent)

    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench` (bench/); do not edit by hand except between the "
        "keep markers at the end. Only same-run comparisons and ratios hold: the machines are "
        "shared and noisy.",
        "",
        f"- Date: {meta['date']} (run took {meta['duration_s']:.0f} s)",
        f"- Command: `{meta['command']}`",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), kernel {m['kernel']}, "
        f"Python {m['python']}",
        f"- Tools: {meta['tools']['haproxy']}; {meta['tools']['nginx']}; "
        f"{meta['tools']['wrk'].split(' Copyright')[0]}; "
        f"meshctl at {meta['tools']['meshctl_commit']}"
        + (f" with uncommitted changes in {', '.join(meta['tools']['meshctl_uncommitted'])}"
           if meta["tools"].get("meshctl_uncommitted") else "")
        + (f", core {meta['tools']['meshctl_core']}" if meta["tools"].get("meshctl_core") else ""),
        f"- Raw results: `{rel(results_path)}` (compare runs with "
        f"`python -m bench --compare OLD.json`)",
        f"- Repetitions: {st['reps']}, interleaved (every system once per repetition, same "
        "order); cells are `median (min–max)`.",
        "",
        "## Method",
        "",
        "- Path (tables without \"in network namespaces\": every hop on 127.0.0.1): client "
        "(wrk) -> proxy A -> proxy B -> nginx (1 kB static body, keep-alive, one "
        "worker). meshctl: A is the `client` service's proxy in explicit mode (a local "
        "plaintext listener per upstream), B the upstream service's, TLS 1.3 with SVIDs "
        "(EC P-256) on both sides between them. HAProxy 2 instances, `nbthread 1`, same path, "
        "plain or TLS 1.3 with client certificates (throwaway CA, EC P-256) between them; HTTP "
        "variant in `mode http` with `http-reuse always`, TCP variant in `mode tcp` (meshctl: "
        "a service whose port has `protocol: tcp`). direct: wrk -> nginx.",
        "- Python floor (HTTP table): bench/pyrelay.py as hop A and hop B, a bare uvloop "
        "byte relay with TLS 1.3 and client certificates between them (the HAProxy TLS "
        "certificates), no HTTP parsing, no policy, one upstream connection per downstream "
        "one. Not a product: what any Python proxy costs before it does a proxy's work; "
        "meshctl / floor is what our per-request work costs, floor / HAProxy TLS what the "
        "language and the event loop cost.",
        "- meshctl mTLS runs the proxies' compiled core (proxy/compiled: the request path "
        "built with mypyc, see the Tools line); meshctl mTLS, interpreted (HTTP table) is the "
        "same path with both proxies on the plain Python modules (`MESH_COMPILED=0`): "
        "compiled / interpreted is what the compiled core buys.",
        "- meshctl plain: the same two proxies with plaintext between them (the upstream's "
        "DestinationRule says `tls.mode: DISABLE`, its PeerAuthentication PERMISSIVE): "
        "compare with HAProxy plain.",
        f"- Pinning, the same for every system: wrk, nginx and the registry on CPU "
        f"{meta['pinning']['load_generator_nginx_registry']}, both proxy hops on CPU "
        f"{meta['pinning']['proxies']} (taskset; every thread of the meshctl proxies).",
        f"- Fixed rate (open loop): {st['rate']} req/s over {st['connections']} connections "
        f"for {st['fixed_s']:g} s after a {st['warmup_s']:g} s warm-up; wrk with "
        "`bench/lua/paced.lua`, latency counted from each request's *intended* send time "
        "(corrected for coordinated omission as wrk2 does; wrk2 is not in Debian, h2load's "
        "`--rate` paces connections not requests, see bench/load.py). Added latency = the "
        "system's percentile minus direct's, same repetition.",
        f"- Saturation (closed loop): wrk, 1 thread, {st['connections']} connections, "
        f"{st['saturate_s']:g} s. With both hops on one core this is requests/s per proxy core "
        "for the two-hop path; a system as fast as direct is bound by the load generator's "
        "core, not by itself.",
        "- CPU: utime + stime of each proxy process from /proc/PID/stat over the load, divided "
        "by the requests completed (ms per 1000 requests = vCPU-ms per 1000 req/s). RSS: the "
        "largest VmRSS seen during the fixed-rate load.",
        "- Noise row: the share of the proxies' core that *other* processes took during the "
        "loads (/proc/stat for that core minus the proxies' own CPU). The machine is shared; "
        "a repetition with a high share is the one to distrust, and the CPU-per-request "
        "figures (the kernel's accounting of each proxy) hold best under it.",
        _netns_method(result),
        "",
    ]
    variants = st["variants"]
    ran = result["summary"]
    if any(not n.startswith("netns-") for n in ran):
        for variant in variants:
            lines += [f"## Data plane, {variant.upper()}", "", *_table(result, variant), ""]
    if any(n.startswith("netns-") for n in ran):
        for variant in variants:
            lines += [f"## Data plane in network namespaces, {variant.upper()}", "",
                      *_table(result, variant, "netns-"), ""]
    goals = _goals(result)
    if goals:
        lines += ["## Goals", "", *goals, ""]
    lines += ["## Plots", ""]
    if isinstance(plot_paths, str):
        lines += [f"No plots: {plot_paths}.", ""]
    else:
        for p in plot_paths:
            lines += [f"![{p.stem}]({rel(p)})", ""]
    cp = result.get("control_plane")
    lines += ["## Control plane", ""]
    if cp:
        lines += _control_plane(cp)
    else:
        lines.append("Not run (`--no-control-plane`).")
    lines += ["", "## Where the proxy spends its time", "", *_profile(result), ""]
    lines += ["## Notes", "", KEEP_START, kept.strip("\n"), KEEP_END, ""]
    return "\n".join(lines)


def write(result: dict[str, Any], report: Path, plots_dir: Path, results_path: Path) -> None:
    kept = ""
    if report.exists():
        old = report.read_text()
        if KEEP_START in old and KEEP_END in old:
            kept = old.split(KEEP_START, 1)[1].split(KEEP_END, 1)[0]
    plot_paths = plots.write(result, plots_dir)
    report.write_text(render(result, report, plot_paths, results_path, kept))


def console_table(result: dict[str, Any]) -> str:
    keys = ("added_p50_ms", "added_p99_ms", "p99.9_ms", "cpu_ms_per_1k", "rss_mib_sidecar",
            "max_rps")
    head = f"{'system':24s}" + "".join(f"{k:>16s}" for k in keys)
    rows = [head]
    for name, metrics in result["summary"].items():
        rows.append(f"{name:24s}" + "".join(
            f"{_fmt(metrics[k]['median']) if k in metrics else '-':>16s}" for k in keys))
    for pair, r in result["ratios"].items():
        rows.append(f"{pair}: cpu {r.get('cpu_ms_per_1k', 0):.2f}x, "
                    f"throughput {r.get('max_rps', 0):.2f}x")
    return "\n".join(rows)
