"""Processes of a bench run: start pinned to a core, stop by pid, read CPU and RSS from /proc."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessExited(RuntimeError):
    """A process we wait on has died: waiting longer will not help."""


def wait_until(pred: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return
        except ProcessExited:
            raise
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def cpu_ticks(pid: int) -> int:
    """utime + stime of `pid` in clock ticks (fields 14 and 15 of /proc/PID/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces
    return int(fields[11]) + int(fields[12])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def core_busy_ticks(core: int) -> int:
    """Ticks `core` spent not idle (all processes), from the cpuN line of /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            v = [int(x) for x in line.split()[1:]]
            return sum(v[:8]) - v[3] - v[4]  # minus idle and iowait; guest is in user
    return 0


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


@dataclass
class Proc:
    """A child process in its own session, pinned with taskset, logging to a file."""

    name: str
    argv: list[str]
    log: Path
    core: int | None = None
    env: dict[str, str] | None = None
    cwd: Path | None = None
    p: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Proc:
        argv = self.argv if self.core is None else ["taskset", "-c", str(self.core), *self.argv]
        with self.log.open("ab") as out:
            self.p = subprocess.Popen(argv, env=self.env, cwd=self.cwd, stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.p is not None
        return self.p.pid

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def check(self) -> None:
        if not self.alive():
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ProcessExited(f"{self.name} exited (see {self.log}):\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM this process only (by pid), SIGKILL if it lingers."""
        if not self.alive():
            return
        assert self.p is not None
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


@dataclass
class Adopted(Proc):
    """A process someone else started and stops (meshctl's supervisor): watched by pid only."""

    known_pid: int = 0

    @property
    def pid(self) -> int:
        return self.known_pid

    def alive(self) -> bool:
        try:
            raw = Path(f"/proc/{self.known_pid}/stat").read_text()
        except OSError:
            return False
        return raw[raw.rindex(")") + 2:].split()[0] not in ("Z", "X")

    def stop(self, timeout: float = 10.0) -> None:
        return None  # its owner stops it (`meshctl down`)
