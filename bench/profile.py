"""Where the meshctl proxies spend their time under closed-loop load: py-spy, own time."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench import load
from bench.suite import Settings
from bench.systems import Lab

TOP = 10


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


LINE = re.compile(r":\d+\)$")


def own_time(collapsed: str, top: int = TOP, python_only: bool = False
             ) -> tuple[int, list[dict[str, Any]]]:
    """Own (self) samples per function from py-spy's collapsed stacks.

    A sample counts for its innermost frame (`python_only`: its innermost Python frame, so
    time in C code, the event loop's or OpenSSL's, is charged to the Python function that
    called it). Frames are merged per function, whatever the line.
    """
    counts: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        if python_only:
            frames = [f for f in frames if re.search(r"\.py:\d+\)$", f)] or ["(native only)"]
        counts[LINE.sub(")", frames[-1])] += int(n)
        total += int(n)
    rows = [{"function": f, "samples": c, "share": round(c / total, 4) if total else 0.0}
            for f, c in counts.most_common(top)]
    return total, rows


def profile_mesh(lab: Lab, s: Settings) -> dict[str, Any]:
    spy = _py_spy()
    if spy is None:
        return {"skipped": "py-spy not installed (pip install py-spy)"}
    system = lab.systems["meshctl-mtls-http"]
    outs: dict[str, Path] = {}
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    result: dict[str, Any] = {"seconds": s.profile_s, "system": system.name, "proxies": {}}
    native = _native_ok(spy, system.proxies["A"].pid)
    result["native"] = native
    try:
        for role, proc in system.proxies.items():
            outs[role] = lab.dir / f"profile-{role}.txt"
            argv = ["taskset", "-c", str(lab.load_core), spy, "record", "--pid", str(proc.pid),
                    "-d", f"{s.profile_s:g}", "-r", "100", "--format", "raw",
                    "-o", str(outs[role])]
            if native:
                argv.append("--native")
            procs.append((role, subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL)))
        box: dict[str, Any] = {}
        t = threading.Thread(target=lambda: box.update(load.saturate(
            system.url, lab.load_core, s.connections, s.profile_s + 2)))
        t.start()
        t.join()
        for _, p in procs:
            p.wait(timeout=s.profile_s + 60)
        result["load"] = {"rps": round(box["requests"] / (box["duration_us"] / 1e6), 1)}
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for role, path in outs.items():
        if path.exists():
            text = path.read_text()
            total, rows = own_time(text)
            _, py_rows = own_time(text, python_only=True)
            result["proxies"][role] = {"samples": total, "top": rows, "top_python": py_rows}
    return result


def _native_ok(spy: str, pid: int) -> bool:
    """py-spy --native needs unwind info it can read; try one dump before relying on it."""
    try:
        r = subprocess.run([spy, "dump", "--pid", str(pid), "--native"], capture_output=True,
                           timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0
