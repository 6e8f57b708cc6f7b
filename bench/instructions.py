"""Machine instructions per request of both meshctl proxies, counted by callgrind.

    python -m bench.instructions                    # compiled core, 300 requests, top 30
    python -m bench.instructions --requests 500 --top 50 --json out.json
    python -m bench.instructions --interpreted      # the proxies on MESH_COMPILED=0

Why: CPU time on this shared machine moves 10 % between runs of the same build, so a change
worth 1-5 % is invisible to `python -m bench` and to side-by-side runs (a 6 % "gain" seen in
one side-by-side run of 10 rounds was gone in the next of 24). `bench.opcount` counts
bytecodes, which the compiled core no longer executes. Instructions executed in user space
are what the compiled core's changes move, and callgrind counts them exactly: the same build
gives the same figure to well under 1 % for the same --requests.

What it counts: each proxy (A, the caller's; B, the upstream's) runs under
`valgrind --tool=callgrind` with instrumentation off until the warm-up is done
(`callgrind_control -i on`), then `curl` sends N sequential keep-alive requests through
A -> mTLS -> B -> nginx (bench.opcount.two_hop: bench.systems' config and 1 kB body), and
each proxy's counts are dumped (`callgrind_control -d`). Per request: instructions (Ir) in
total, and inclusive per function (`callgrind_annotate --inclusive=yes`): the compiled
core's functions are `CPyDef_<module>___<Class>___<method>`. Everything the process runs
in user space is counted: our code, libpython, uvloop, OpenSSL, libc, plus the periodic
tasks spread over the requests. Not counted: the kernel (system calls, TCP), and time (a
cache miss costs nothing here). Under valgrind the proxies run ~50x slower, one request at
a time. Needs valgrind (`apt-get install valgrind`); without it the command says so.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.opcount import report, two_hop

_TOTALS = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.M)
_FN = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(?:\*\s+)?(.+?)(?:\s+\[.*\])?\s*$")


def measure(requests: int, warmup: int = 50, compiled: bool = True) -> dict[str, Any]:
    """Instructions per request of proxies A and B, with the top functions (inclusive)."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise RuntimeError("valgrind is not installed: apt-get install -y valgrind")
    outs: dict[str, Path] = {}

    def wrap(role: str, argv: list[str], tmp: Path) -> list[str]:
        outs[role] = tmp / f"callgrind-{role}"
        return ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={outs[role]}.%p", *argv]

    def control(procs: dict[str, Any], *args: str) -> None:
        for p in procs.values():
            subprocess.run(["callgrind_control", *args, str(p.p.pid)], check=True,
                           capture_output=True, timeout=120)

    def start(procs: dict[str, Any]) -> None:
        control(procs, "-i", "on")

    dumps: dict[str, Path] = {}

    def stop(procs: dict[str, Any]) -> None:
        for role, p in procs.items():
            before = set(outs[role].parent.glob(f"{outs[role].name}.{p.p.pid}*"))
            control({role: p}, "-d")
            new = set(outs[role].parent.glob(f"{outs[role].name}.{p.p.pid}*")) - before
            if len(new) != 1:
                raise RuntimeError(f"callgrind wrote {len(new)} dumps for {role}, expected 1")
            dumps[role] = new.pop()
        for p in procs.values():
            p.p.terminate()
            p.p.wait(120)

    two_hop(requests, warmup, compiled, wrap, start, stop, ready_timeout=300)
    result: dict[str, Any] = {"requests": requests, "compiled": compiled}
    for role in "AB":
        result[role] = _read(dumps[role], requests)
    return result


def _read(dump: Path, requests: int) -> dict[str, Any]:
    total = _TOTALS.search(dump.read_bytes())
    if total is None:
        raise RuntimeError(f"{dump}: no totals line")
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                          str(dump)], capture_output=True, text=True, check=True, timeout=300)
    functions = []
    for line in out.stdout.splitlines():
        m = _FN.match(line)
        if m:
            ir = int(m.group(1).replace(",", ""))
            name = m.group(2).split(":", 1)[-1] if "???" not in m.group(2) else m.group(2)
            functions.append({"function": name, "ir": ir / requests})
    return {"ir_per_request": int(total.group(1)) / requests, "functions": functions}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions",
                                description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--json", type=Path, help="write the whole result here")
    p.add_argument("--interpreted", action="store_true",
                   help="run the proxies with MESH_COMPILED=0 (the pure Python modules)")
    args = p.parse_args(argv)
    result = measure(args.requests, compiled=not args.interpreted)
    core = "compiled core" if result["compiled"] else "interpreted (MESH_COMPILED=0)"
    report(result, args.top, args.json,
           lambda r: f"{r['ir_per_request']:,.0f} instructions per request (user space, "
                     f"{core}); inclusive per function:",
           lambda f: f"{f['ir']:12,.0f}  {f['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
