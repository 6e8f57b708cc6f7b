"""The two loads, driven by wrk pinned to the load-generator core, with each proxy's CPU and RSS.

Fixed rate (open loop): wrk with `lua/paced.lua`, one connection per wrk thread, each
connection on its own schedule; latency counted from the intended send time (corrected for
coordinated omission, as wrk2 does). Why wrk + Lua and not another tool:
- wrk2 (the fixed-rate fork of wrk) is not packaged in Debian and cannot be fetched here;
- h2load's `--rate` is a *connection* creation rate, each connection then sending as fast
  as it can, and h2load reports no latency percentiles;
- autocannon (npm) has `--overallRate` but times from the actual send (no correction) and
  costs a Node process per core; `hey` (Debian) likewise times from the send, no p99.9.
The limit of the Lua pacer: wrk's timer is in whole milliseconds, so requests leave up to
1 ms early (never late) on an otherwise exact schedule; an early request is timed from its
real send, so the generator's granularity is never charged to the system.

Saturation (closed loop): plain wrk, 16 connections, one thread.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import CLK_TCK, Proc, core_busy_ticks, cpu_ticks, rss_kib

LUA = Path(__file__).resolve().parent / "lua"


@dataclass
class Sampler:
    """CPU ticks of each process over a window, and the largest VmRSS seen during it."""

    procs: dict[str, Proc]
    core: int | None = None  # the proxies' core: how much of it did *other* processes use?
    interval: float = 0.25
    ticks0: dict[str, int] = field(default_factory=dict)
    rss_max: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self.ticks0 = {role: cpu_ticks(p.pid) for role, p in self.procs.items()}
        self.core0 = core_busy_ticks(self.core) if self.core is not None else 0
        self.t0 = time.monotonic()
        self.rss_max = {role: rss_kib(p.pid) for role, p in self.procs.items()}
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            for role, p in self.procs.items():
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    self.rss_max[role] = max(self.rss_max[role], rss_kib(p.pid))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.cpu_s = {role: (cpu_ticks(p.pid) - self.ticks0[role]) / CLK_TCK
                      for role, p in self.procs.items()}
        self.foreign_share = None
        if self.core is not None:
            busy = (core_busy_ticks(self.core) - self.core0) / CLK_TCK
            wall = time.monotonic() - self.t0
            self.foreign_share = max(0.0, busy - sum(self.cpu_s.values())) / wall


def _wrk(argv: list[str], core: int, timeout: float, netns: str | None = None
         ) -> dict[str, object]:
    cmd = ["taskset", "-c", str(core), *argv]
    if netns is not None:  # wrk inside the client's namespace, as an app there
        cmd = ["ip", "netns", "exec", netns, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            return dict(json.loads(line[len("BENCHJSON "):]))
    raise RuntimeError(f"wrk printed no result (rc {out.returncode}): {' '.join(argv)}\n"
                       f"{out.stdout[-1500:]}\n{out.stderr[-1500:]}")


def _secs(seconds: float) -> int:
    """wrk takes whole seconds."""
    return max(1, round(seconds))


def fixed_rate(url: str, core: int, rate: int, connections: int, seconds: float,
               netns: str | None = None) -> dict[str, object]:
    """Open loop at `rate` requests/s over `connections` keep-alive connections."""
    period_us = connections * 1e6 / rate
    return _wrk(["wrk", f"-t{connections}", f"-c{connections}", f"-d{_secs(seconds)}s",
                 "--timeout", "5s", "-s", str(LUA / "paced.lua"), url, "--",
                 f"{period_us:.3f}", str(connections)], core, seconds + 60, netns)


def saturate(url: str, core: int, connections: int, seconds: float, netns: str | None = None
             ) -> dict[str, object]:
    """Closed loop: `connections` keep-alive connections, each sending as soon as answered."""
    return _wrk(["wrk", "-t1", f"-c{connections}", f"-d{_secs(seconds)}s", "--timeout", "5s",
                 "-s", str(LUA / "saturate.lua"), url], core, seconds + 60, netns)


def measured(run: object, procs: dict[str, Proc], core: int | None = None
             ) -> dict[str, object]:
    """Call `run()` (a load) while sampling `procs`; return the load's figures with theirs.

    `foreign_core_share`: the share of `core` (the proxies' core) used by processes other
    than `procs` during the load: the noise from whoever else shares the machine.
    """
    with Sampler(procs, core) as s:
        t0 = time.monotonic()
        result = run()  # type: ignore[operator]
        wall = time.monotonic() - t0
    assert isinstance(result, dict)
    requests = int(result["requests"])
    result["wall_s"] = round(wall, 3)
    result["rps"] = round(requests / (int(result["duration_us"]) / 1e6), 1)
    if s.foreign_share is not None:
        result["foreign_core_share"] = round(s.foreign_share, 3)
    result["proxies"] = {
        role: {"cpu_s": round(s.cpu_s[role], 3),
               "cpu_s_per_1k": round(s.cpu_s[role] / requests * 1000, 5) if requests else None,
               "rss_mib": round(s.rss_max[role] / 1024, 1)}
        for role in procs}
    return result
