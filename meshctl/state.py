"""The state directory (MESH_HOME) and atomic, permission-safe file writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def mesh_home() -> Path:
    """MESH_HOME, else /var/lib/meshctl for root, else ~/.local/state/meshctl."""
    env = os.environ.get("MESH_HOME")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/meshctl")
    return Path.home() / ".local" / "state" / "meshctl"


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    """Create `path` (and parents) and force its mode: state directories are 0700."""
    # Every directory this creates gets `mode` (mkdir's parents=True would leave the
    # intermediate ones at the umask's 0755); existing parents are left as they are.
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=mode)
        os.chmod(d, mode)
    os.chmod(path, mode)
    return path


def atomic_write(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write `data` to `path` so a reader sees the old file or the new one, never half.

    Write to a temporary file in the same directory with the final mode already set
    (a key is never readable by others, not even for a moment), fsync, rename, and
    fsync the directory so the rename survives a crash.
    """
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
