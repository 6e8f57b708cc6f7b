"""Processes of a local mesh: where their pid files and logs live, start detached, find, stop.

Every process the local launcher starts (registry, supervisor, apps, proxies) carries
`MESHCTL_MESH=<id of MESH_HOME>` in its environment. `meshctl down` scans /proc for that
mark as well as reading the pid files, so it finds a proxy that a killed supervisor left
behind, or an app whose pid file was never written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.state import atomic_write, ensure_dir

MARK = "MESHCTL_MESH"


class LaunchError(Exception):
    """`up`/`down`/`status` cannot go on; str() is one line saying what and what to do."""


@dataclass(frozen=True, slots=True)
class LaunchPaths:
    """The local launcher's files under MESH_HOME."""

    home: Path

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def plan(self) -> Path:
        """What `up` asked for: the supervisor reads it on start and on SIGHUP."""
        return self.home / "launch" / "plan.json"

    @property
    def state(self) -> Path:
        """What the supervisor did: desired plan, actual processes, errors."""
        return self.home / "state.json"

    @property
    def owned(self) -> Path:
        """Every namespace and bridge ever made for this home, until `down` removes it."""
        return self.home / "launch" / "owned.json"

    @property
    def proxies(self) -> Path:
        return self.home / "proxies"

    def pid_file(self, name: str) -> Path:
        return self.logs / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def mesh_id(home: Path) -> str:
    """The mark for this MESH_HOME's processes: stable, short, distinct per directory."""
    return hashlib.blake2s(str(home.resolve()).encode(), digest_size=6).hexdigest()


def pid_alive(pid: int) -> bool:
    """True for a running (not zombie) process."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: Mapping[str, Any], mode: int = 0o600) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n", mode=mode)


def marked_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a process of this mesh: ours, plus MESH_HOME and the mark."""
    env = dict(os.environ)
    env.update(extra or {})
    env["MESH_HOME"] = str(home)
    env[MARK] = mesh_id(home)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str],
    cwd: str | Path | None = None,
    detach: bool = True,
) -> subprocess.Popen[bytes]:
    """Start `argv` with stdout and stderr appended to `log`, stdin from /dev/null.

    `detach`: a new session, so the process outlives the command that started it and a
    Ctrl-C in the terminal does not reach it.
    """
    ensure_dir(log.parent)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=detach,
            close_fds=True,
        )


def drop_to(uid: int, gid: int, *, no_new_privs: bool = False) -> list[str]:
    """The argv prefix that runs a command as `uid`:`gid`, no supplementary groups (and,
    for an app, no way back up through setuid or file-capability binaries)."""
    argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    return [*argv, "--no-new-privs", "--"] if no_new_privs else [*argv, "--"]


def marked_pids(home: Path) -> list[int]:
    """Processes whose environment carries this mesh's mark (those we may read)."""
    needle = f"{MARK}={mesh_id(home)}".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry))
    return found


def stop_pids(pids: Iterable[int], grace: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL after `grace` seconds; returns the pids that were running."""
    pids = [p for p in set(pids) if pid_alive(p)]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.05)
        if not any(pid_alive(p) for p in pids):
            break
    return pids


def log_tail(path: Path, lines: int = 1) -> str:
    """The last non-empty lines of a log, for one-line error messages."""
    try:
        text = path.read_bytes()[-8192:].decode(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def running_registry(home: Path) -> dict[str, Any] | None:
    """endpoint.json of the registry running for this home, or None."""
    ep = read_json(home / "registry" / "endpoint.json")
    if ep and isinstance(ep.get("pid"), int) and pid_alive(ep["pid"]):
        return ep
    return None
