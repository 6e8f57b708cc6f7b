"""`python -m bench`: the data-plane bench (meshctl vs HAProxy vs direct) and the report.

    python -m bench                      # full run: 3 repetitions, HTTP and TCP, ~12 min on
                                         # 127.0.0.1, ~20 min with the netns topology (root)
    python -m bench --quick              # smoke run: 1 repetition, 3 s loads, HTTP, loopback
    python -m bench --topology netns     # only the network-namespace systems (root)
    python -m bench --profile 10         # also py-spy the meshctl proxies under saturation
    python -m bench --compare OLD.json   # print what moved beyond the noise, run nothing
    python -m bench --compare OLD.json --against NEW.json
    python -m bench --report-from RESULTS.json   # rewrite BENCHMARKS.md from a results file

Writes bench/results/<date>.json (raw), BENCHMARKS.md and bench/plots/*.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from bench.systems import REPO


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="1 repetition, 3 s loads, HTTP only, no push bench, the loopback "
                   "topology unless --topology says otherwise (under a minute)")
    p.add_argument("--reps", type=int, help="repetitions, interleaved (default 3)")
    p.add_argument("--fixed-seconds", type=float, help="fixed-rate load length (default 15)")
    p.add_argument("--saturate-seconds", type=float, help="closed-loop load length (default 10)")
    p.add_argument("--rate", type=int, help="fixed rate, requests/s (default 1000)")
    p.add_argument("--variants", choices=("http", "tcp", "both"), help="default: both")
    p.add_argument("--topology", choices=("loopback", "netns", "both"),
                   help="loopback: every hop on 127.0.0.1 (meshctl in explicit mode); netns: "
                   "client and upstream in two network namespaces, meshctl with iptables "
                   "interception via `meshctl up` (root). Default: both as root, loopback "
                   "without root and in --quick")
    p.add_argument("--no-control-plane", action="store_true",
                   help="skip bench.ca_issuance and bench.push_latency")
    p.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                   help="py-spy the meshctl HTTP proxies under closed-loop load")
    p.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--report", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--plots-dir", type=Path, default=REPO / "bench" / "plots")
    p.add_argument("--no-report", action="store_true",
                   help="write the results JSON only (no BENCHMARKS.md, no plots)")
    p.add_argument("--report-from", type=Path, metavar="RESULTS.json",
                   help="regenerate BENCHMARKS.md and the plots from a results file; run nothing")
    p.add_argument("--control-plane-only", action="store_true",
                   help="with --report-from: rerun the control-plane benches into that file")
    p.add_argument("--compare", type=Path, metavar="OLD.json",
                   help="compare with an earlier results file and exit")
    p.add_argument("--against", type=Path, metavar="NEW.json",
                   help="with --compare: the newer file (default: the latest in --results-dir)")
    return p


def _on_sigterm(main_pid: int) -> Callable[[int, FrameType | None], None]:
    """SIGTERM: unwind (sys.exit) in this process; exit at once in a fork of it.

    pyroute2 forks this process without exec to create a network namespace and stops the
    child with SIGTERM: unwinding there would run the lab's clean-up (meshctl down, delete
    the namespaces) from a copy of our stack, under the running bench.
    """
    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != main_pid:
            os._exit(128 + signum)
        sys.exit(128 + signum)

    return handler


def _topologies(asked: str | None, quick: bool) -> tuple[tuple[str, ...] | None, str | None]:
    """(topologies to run, why the netns one is not run); (None, why) when it was asked for
    and cannot run."""
    if asked == "loopback":
        return ("loopback",), "not asked for (--topology loopback)"
    from bench import netns

    why = netns.reason_unavailable()
    if asked is None:
        if why:
            return ("loopback",), why
        if quick:
            return ("loopback",), "not in --quick (add --topology netns or both)"
        return ("loopback", "netns"), None
    if why:
        return None, why
    return (("netns",) if asked == "netns" else ("loopback", "netns")), None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the lab's `finally` stops every process it started.
    signal.signal(signal.SIGTERM, _on_sigterm(os.getpid()))
    from bench import compare, report, suite

    if args.compare:
        new = args.against or compare.latest(args.results_dir, exclude=args.compare)
        if new is None:
            print(f"bench: no results in {args.results_dir} to compare with", file=sys.stderr)
            return 2
        print(compare.render(json.loads(args.compare.read_text()),
                             json.loads(new.read_text()), args.compare, new))
        return 0
    if args.report_from:
        result = json.loads(args.report_from.read_text())
        if args.control_plane_only:
            result["control_plane"] = suite.control_plane(result["settings"].get("quick", False))
            args.report_from.write_text(json.dumps(result, indent=1) + "\n")
        report.write(result, args.report, args.plots_dir, args.report_from)
        print(f"bench: report in {args.report}")
        return 0
    missing = [t for t in ("wrk", "haproxy", "nginx", "taskset") if shutil.which(t) is None]
    if missing:
        print(f"bench: missing {', '.join(missing)}: apt-get install wrk haproxy nginx-light "
              "util-linux", file=sys.stderr)
        return 2
    s = suite.Settings.quick_mode() if args.quick else suite.Settings()
    overrides = {"reps": args.reps, "fixed_s": args.fixed_seconds,
                 "saturate_s": args.saturate_seconds, "rate": args.rate}
    changes = {k: v for k, v in overrides.items() if v is not None}
    if args.variants:
        changes["variants"] = ("http", "tcp") if args.variants == "both" else (args.variants,)
    topologies, netns_note = _topologies(args.topology, s.quick)
    if topologies is None:
        print(f"bench: --topology {args.topology} cannot run here: {netns_note}",
              file=sys.stderr)
        return 2
    changes["topologies"] = topologies
    if netns_note:
        print(f"bench: the netns topology is not run: {netns_note}", flush=True)
    if args.no_control_plane:
        changes["control_plane"] = False
    if args.profile:
        changes["profile_s"] = args.profile
    s = dataclasses.replace(s, **changes)
    command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    from bench.profile import profile_mesh

    result = suite.run(s, command.strip(), log=lambda m: print(m, flush=True),
                       profile=profile_mesh, netns_note=netns_note,
                       netns_optional=args.topology is None)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    out = args.results_dir / f"{stamp}{'-quick' if s.quick else ''}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"bench: results in {out}")
    if not args.no_report:
        report.write(result, args.report, args.plots_dir, out)
        print(f"bench: report in {args.report}")
    print(report.console_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
