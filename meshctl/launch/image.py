"""The example's container image, built locally: a Debian root filesystem with python3.

No image registry is reachable from the hosts meshctl's tests run on, so the image that
examples/compose/docker-compose.yml names (`meshctl-example:latest`) is made here:
`debootstrap --variant=minbase --include=python3 bookworm DIR` (about 35 s, from the
Debian mirror apt already uses), packed into a tarball kept in a cache directory outside
the repository, and `docker import`ed. Each step is skipped when its result exists: the
image in the engine, else the cached tarball, else a fresh debootstrap.

Concurrent builders (two test sessions) take an exclusive lock on the cache directory, so
the second waits and then finds the tarball or the image.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TAG = "meshctl-example:latest"
DEFAULT_CACHE = Path("/var/cache/meshctl")
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CMD = '["python3"]'  # an imported image has no CMD: compose files give their own command


class ImageError(Exception):
    """The image could not be built; str() is one line saying what and what to do."""


@dataclass(frozen=True, slots=True)
class ImageResult:
    tag: str
    image_id: str
    source: str  # "engine" (already there) | "cache" (imported the tarball) | "debootstrap"
    seconds: float


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt uses here (deb822 `URIs:` or a one-line `deb` entry)."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for f in files:
        if f.suffix not in ("", ".list", ".sources") or not f.is_file():
            continue
        with contextlib.suppress(OSError):
            for line in f.read_text().splitlines():
                m = re.match(r"\s*(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?\s*", line)
                if m and "security" not in m.group(1):
                    return m.group(1)
    return DEFAULT_MIRROR


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def tarball_path(cache: Path = DEFAULT_CACHE, packages: tuple[str, ...] = ("python3",)) -> Path:
    return cache / f"rootfs-{SUITE}-{'-'.join(packages)}.tar"


def _client() -> Any:
    from meshctl.launch.docker import docker_client

    return docker_client()


def _image_id(client: Any, tag: str) -> str | None:
    import docker.errors

    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        return None


def _debootstrap(tarball: Path, mirror: str, packages: tuple[str, ...]) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageError(
            "debootstrap is not installed: `apt-get install -y debootstrap`, then build again"
        )
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=tarball.parent) as tmp:
        root = Path(tmp) / "root"
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE,
             str(root), mirror],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ImageError(
                f"debootstrap of {SUITE} from {mirror} failed ({last[0]}); check that the "
                "mirror is reachable (apt-get update), then build again"
            )
        shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        partial = tarball.with_suffix(".tar.part")
        with open(partial, "wb") as out:
            subprocess.run(["tar", "-C", str(root), "-c", "."], stdout=out, check=True)
        os.replace(partial, tarball)


def ensure_image(
    tag: str = DEFAULT_TAG,
    *,
    cache: Path = DEFAULT_CACHE,
    mirror: str | None = None,
    rebuild: bool = False,
    packages: tuple[str, ...] = ("python3",),
) -> ImageResult:
    """Make sure `tag` exists in the engine (see the module docstring). `packages`: what
    debootstrap includes (tests build a systemd image with `systemd`, `iptables`...)."""
    t0 = time.monotonic()
    client = _client()
    if not rebuild and (found := _image_id(client, tag)):
        return ImageResult(tag, found, "engine", time.monotonic() - t0)
    with _locked(cache):
        if not rebuild and (found := _image_id(client, tag)):  # another builder made it
            return ImageResult(tag, found, "engine", time.monotonic() - t0)
        tarball = tarball_path(cache, packages)
        source = "cache"
        if rebuild or not tarball.is_file():
            _debootstrap(tarball, mirror or apt_mirror(), packages)
            source = "debootstrap"
        repo, _, version = tag.rpartition(":") if ":" in tag else (tag, "", "latest")
        try:
            client.api.import_image_from_file(
                str(tarball), repository=repo, tag=version, changes=[f"CMD {CMD}"]
            )
        except Exception as exc:
            raise ImageError(f"docker import of {tarball} failed: {exc}") from None
        found = _image_id(client, tag)
        if found is None:
            raise ImageError(f"docker import of {tarball} did not produce {tag}")
        return ImageResult(tag, found, source, time.monotonic() - t0)
