"""The state directory (MESH_HOME) and atomic, permission-safe file writes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(
    os, "O_NOFOLLOW", 0
)


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


def _temp_file(path: Path) -> tuple[int, str]:
    """A new 0600 file beside `path`, as tempfile.mkstemp makes it (O_EXCL, a random name),
    without importing tempfile: with shutil, bz2 and lzma under it, ~1 MiB of every
    sidecar's RSS, for one call."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write `data` to `path` so a reader sees the old file or the new one, never half.

    Write to a temporary file in the same directory with the final mode already set
    (a key is never readable by others, not even for a moment), fsync, rename, and
    fsync the directory so the rename survives a crash.
    """
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(path)
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
