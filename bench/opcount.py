"""The Python work per request of both meshctl proxies, counted rather than timed.

Bytecodes executed and Python calls made by each of the two proxies (A: the caller's, B:
the upstream's) per request of the bench's HTTP path, with the functions that execute the
most.

    python -m bench.opcount                   # 500 requests after a warm-up, top 25
    python -m bench.opcount --requests 1000 --top 40 --json out.json

Why: on this shared machine CPU time moves by 10-20 % between runs of the same build, so a
change to the request path worth 5 % cannot be seen in `python -m bench` without many
repetitions. The counts are exact and repeatable (the same build gives the same figure to
within a fraction of a percent for the same --requests: the proxies' periodic tasks, the
registry stream and heartbeats, are counted too, spread over the requests), so they show
what a change did to the interpreter's work
before the full bench says what it does to CPU time. They are not time: a C call (a regex,
a bytes method) counts as one bytecode however long it runs, and under the tracer
everything runs ~100x slower, so the proxies here serve one request at a time.

How: each proxy runs under `sys.settrace` with opcode events (the `--wrap` mode of this
module), counters are reset after a warm-up (SIGUSR1), then `curl` sends N sequential
keep-alive requests through A -> mTLS -> B -> nginx (bench.systems' config and 1 kB body),
and each proxy writes its counts when it exits (SIGTERM: its own clean shutdown). The
proxies run the plain Python modules (MESH_COMPILED=0): the compiled core's C emits no
trace events, and what is counted is the source's work, which both cores execute.
`--compiled` runs them on the compiled core instead: what is counted then is the Python
that stays interpreted beside it (library code, uncompiled modules, generated __init__s).
"""

from __future__ import annotations

import argparse
import atexit
import collections
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]


# -- the wrapper a proxy runs under ----------------------------------------------------------

def _wrap(out: str, module: str, argv: list[str]) -> None:
    """Run `module` as __main__ with per-function opcode and call counts, written to `out`
    as JSON at exit; SIGUSR1 resets them (after the warm-up)."""
    ops: collections.Counter[tuple[str, int, str]] = collections.Counter()
    calls: collections.Counter[tuple[str, int, str]] = collections.Counter()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event != "call":
            return None
        code = frame.f_code
        name = code.co_name
        if code.co_filename == "<string>" and code.co_argcount:
            # Generated code (a dataclass's __init__, a NamedTuple's __new__): name its class.
            first = frame.f_locals.get(code.co_varnames[0])
            name = f"{(first if isinstance(first, type) else type(first)).__name__}.{name}"
        key = (code.co_filename, code.co_firstlineno, name)
        calls[key] += 1
        frame.f_trace_opcodes = True

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                ops[key] += 1
            return local

        return local

    def dump() -> None:
        sys.settrace(None)
        rows = [
            {"function": f"{_short(k[0])}:{k[1]}:{k[2]}", "opcodes": n, "calls": calls[k]}
            for k, n in ops.most_common()
        ]
        Path(out).write_text(json.dumps(rows))

    def reset(*_: object) -> None:
        ops.clear()
        calls.clear()

    atexit.register(dump)  # the proxy handles SIGTERM itself and exits cleanly
    signal.signal(signal.SIGUSR1, reset)
    sys.argv = [module, *argv]
    sys.settrace(tracer)
    threading.settrace(tracer)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _short(filename: str) -> str:
    try:
        return str(Path(filename).resolve().relative_to(REPO))
    except ValueError:
        return filename.rsplit("/lib/", 1)[-1]


# -- the run ---------------------------------------------------------------------------------

def measure(requests: int, warmup: int = 50, compiled: bool = False) -> dict[str, Any]:
    """Bytecodes and Python calls per request of proxies A and B (see the module doc)."""
    counts: dict[str, Path] = {}

    def wrap(role: str, argv: list[str], tmp: Path) -> list[str]:
        counts[role] = tmp / f"opcount-{role}.json"
        # [python, -m, meshctl, ...] -> [python, -m, bench.opcount, --wrap, FILE, meshctl, ...]
        return [argv[0], "-m", "bench.opcount", "--wrap", str(counts[role]), *argv[2:]]

    def start(procs: dict[str, Any]) -> None:
        for p in procs.values():
            p.p.send_signal(signal.SIGUSR1)
        time.sleep(0.5)

    def stop(procs: dict[str, Any]) -> None:
        for p in procs.values():  # each writes its counts at its own clean shutdown
            p.p.send_signal(signal.SIGTERM)
            p.p.wait(60)

    two_hop(requests, warmup, compiled, wrap, start, stop)
    result: dict[str, Any] = {"requests": requests}
    for role in "AB":
        rows = json.loads(counts[role].read_text())
        result[role] = {
            "opcodes_per_request": sum(r["opcodes"] for r in rows) / requests,
            "calls_per_request": sum(r["calls"] for r in rows) / requests,
            "functions": [
                {**r, "opcodes": r["opcodes"] / requests, "calls": r["calls"] / requests}
                for r in rows
            ],
        }
    return result


Wrap = Callable[[str, list[str], Path], list[str]]  # (role, proxy argv, run dir) -> argv
Hook = Callable[[dict[str, Any]], None]  # called with {"A": Proc, "B": Proc}


def two_hop(requests: int, warmup: int, compiled: bool, wrap: Wrap, start: Hook, stop: Hook,
            ready_timeout: float = 30) -> None:
    """Build registry, nginx and proxies A and B (each started through `wrap`), warm up,
    call `start`, send `requests` sequential keep-alive requests through A -> mTLS -> B ->
    nginx (bench.systems' config and 1 kB body), call `stop`; tear it all down. `stop`
    must end the proxies (their counts are written then or before)."""
    sys.path.insert(0, str(REPO))
    from bench.systems import MESH_YAML, write_nginx
    from tests.integration.harness import Mesh, Proc, free_port, http_get, wait_until

    tmp = Path(tempfile.mkdtemp(prefix="meshctl-count-"))
    (tmp / "config").mkdir()
    (tmp / "config" / "mesh.yaml").write_text(MESH_YAML)
    port = free_port()
    nginx = Proc(["nginx", "-p", str(tmp), "-c", str(write_nginx(tmp, f"127.0.0.1:{port}"))],
                 dict(os.environ), tmp / "nginx.log")

    class CountingMesh(Mesh):
        role: str | None = None  # set: the next proxy started runs through `wrap`

        def meshctl(self, *args: str) -> list[str]:
            argv = super().meshctl(*args)
            return argv if self.role is None else wrap(self.role, argv, tmp)

    mesh = CountingMesh(tmp / "mesh", tmp / "config")
    mesh.env["MESH_LOG"] = "WARNING"
    mesh.env["PYTHONPATH"] = str(REPO)  # the proxies run this tree, wherever we were started
    mesh.env["MESH_COMPILED"] = "1" if compiled else "0"
    try:
        nginx.start()
        mesh.start_registry()
        mesh.role = "B"
        b = mesh.proxy("upstream", "v1", app_port=port, wait=False)
        local = free_port()
        mesh.role = "A"
        a = mesh.proxy("client", "v1", upstreams={"upstream:8080": local}, wait=False)
        mesh.role = None
        procs = {"A": a["proc"], "B": b["proc"]}
        for info in (a, b):
            wait_until(lambda info=info: http_get(f"http://127.0.0.1:{info['admin']}/ready")[0]
                       == 200, timeout=ready_timeout, what=f"proxy {info['id']} ready")
        url = f"http://127.0.0.1:{local}/"
        wait_until(lambda: _curl(url, 1), timeout=ready_timeout,
                   what="a request through both proxies")
        _curl(url, warmup)  # pools, caches and label sets in place before counting
        start(procs)
        if not _curl(url, requests):
            logs = "\n".join(f"{p.log}: {p.log.read_text()[-2000:]}" for p in procs.values())
            raise RuntimeError(f"requests failed while counting\n{logs}")
        stop(procs)
    finally:
        mesh.close()
        nginx.stop()


def _curl(url: str, n: int) -> bool:
    """`n` sequential requests on one keep-alive connection; True when all got a 200."""
    args = [a for _ in range(n) for a in ("-o", "/dev/null", url)]
    out = subprocess.run(["curl", "-s", "-w", "%{http_code}\n", *args],
                         capture_output=True, text=True, timeout=600)
    codes = out.stdout.split()
    ok = len(codes) == n and all(c == "200" for c in codes)
    if not ok:
        print(f"curl {url} x{n}: {collections.Counter(codes)} {out.stderr[-300:]}",
              file=sys.stderr)
    return ok


def main(argv: list[str]) -> int:
    if argv[:1] == ["--wrap"]:
        _wrap(argv[1], argv[2], argv[3:])
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.opcount", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--json", type=Path, help="write the whole result here")
    p.add_argument("--compiled", action="store_true",
                   help="run the proxies on the compiled core (proxy/compiled): count what "
                        "stays interpreted beside it")
    args = p.parse_args(argv)
    result = measure(args.requests, compiled=args.compiled)
    report(result, args.top, args.json,
           lambda r: f"{r['opcodes_per_request']:.0f} bytecodes and "
                     f"{r['calls_per_request']:.1f} Python calls per request",
           lambda f: f"{f['opcodes']:8.1f} {f['calls']:6.2f}  {f['function']}")
    return 0


def report(result: dict[str, Any], top: int, json_path: Path | None,
           headline: Callable[[dict[str, Any]], str], row: Callable[[dict[str, Any]], str]
           ) -> None:
    """Print each proxy's `headline` and its `top` functions (`row`); save all as JSON."""
    for role, name in (("A", "the caller's proxy"), ("B", "the upstream's proxy")):
        print(f"{role} ({name}): {headline(result[role])}")
        for f in result[role]["functions"][:top]:
            print(f"  {row(f)}")
    if json_path:
        json_path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
