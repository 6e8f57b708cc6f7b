"""The example shop (examples/compose) as committed: what every test that needs it reads.

The walkthrough in examples/compose/README.md edits the example in place (`meshctl route
set-weight orders v1=50 v2=50` rewrites mesh/orders.yaml: the files are the source of truth),
so the working copy says whatever the user last did with it. The tests need the shipped
state (90/10, the shipped policies), whatever that is: `COMPOSE` is a copy of the example's
config (mesh/ and docker-compose.yml) taken from git's HEAD, made once per test process in a
temporary directory, with apps/ (code, not config) from the working tree. An edit to the
example's config is seen by the tests once it is committed.

Without git (a tarball, no `git` on PATH, a repository git refuses to read) the copy is
taken from the working copy, and `source()` says so (pytest prints it in its header): an
edited example then changes the results.

The copy is shared and read-only by convention: a test that edits config copies it first
(`copy_example`, `copy_config`). tests/conftest.py checks after every test that nobody
wrote to it.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The parts of the example that are config (edited by `meshctl route`, by hand, by compose).
CONFIG_PARTS = ("mesh", "docker-compose.yml")
IN_REPO = "examples/compose"


def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True,
                          timeout=30).stdout  # fmt: skip


def _from_git(dest: Path, repo: Path) -> str:
    """Write HEAD's version of every config file of the example under dest; say which commit."""
    paths = [f"{IN_REPO}/{part}" for part in CONFIG_PARTS]
    names = _git(repo, "ls-tree", "-r", "--name-only", "-z", "HEAD", "--", *paths).split(b"\0")
    files = [n.decode() for n in names if n]
    if not files:
        raise LookupError(f"HEAD has no {IN_REPO}/mesh")
    for name in files:
        target = dest / Path(name).relative_to(IN_REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_git(repo, "show", f"HEAD:{name}"))
    commit = _git(repo, "rev-parse", "--short", "HEAD").decode().strip()
    return f"git HEAD ({commit})"


def build(dest: Path, repo: Path = REPO) -> str:
    """The example of `repo` at dest: config from git's HEAD (else the working copy, and the
    answer says so), apps/ as they are. Returns where the config came from."""
    dest.mkdir(mode=0o755)
    try:
        source = _from_git(dest, repo)
    except (OSError, subprocess.SubprocessError, LookupError, ValueError) as exc:
        shutil.rmtree(dest)
        dest.mkdir(mode=0o755)
        for part in CONFIG_PARTS:
            src = repo / IN_REPO / part
            if src.is_dir():
                shutil.copytree(src, dest / part)
            else:
                shutil.copy2(src, dest / part)
        stderr = getattr(exc, "stderr", None)
        why = stderr.decode(errors="replace").strip() if stderr else str(exc)
        source = (f"the working copy {repo / IN_REPO} (no git history to read: {why:.120}); "
                  "tests that need the example assume it is unedited")  # fmt: skip
    shutil.copytree(repo / IN_REPO / "apps", dest / "apps")
    return source


@cache
def _pristine() -> tuple[Path, str]:
    root = Path(tempfile.mkdtemp(prefix="meshctl-example-"))
    atexit.register(shutil.rmtree, root, True)
    # Traversable by the workloads' unprivileged users, as examples/ in a checkout is.
    os.chmod(root, 0o755)
    return root / "compose", build(root / "compose")


def restore() -> None:
    """Make the shared copy pristine again (after a test wrote to it)."""
    shutil.rmtree(COMPOSE)
    build(COMPOSE)


def compose_dir() -> Path:
    """examples/compose as committed (mesh/, docker-compose.yml, apps/): do not write to it."""
    return _pristine()[0]


def source() -> str:
    """Where the example's config was taken from (git HEAD, or the working copy and why)."""
    return _pristine()[1]


def fingerprint(root: Path | None = None) -> str:
    """A hash of every config file of the pristine copy (or of the example at `root`):
    tests/conftest.py compares it after each test."""
    h = hashlib.sha256()
    root = root or compose_dir()
    for part in CONFIG_PARTS:
        base = root / part
        for path in sorted(base.rglob("*")) if base.is_dir() else [base]:
            if path.is_file():
                h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def copy_config(dest: Path) -> Path:
    """The example's mesh/ (as committed) copied to dest, for a test that edits it."""
    shutil.copytree(compose_dir() / "mesh", dest)
    return dest


def copy_example(dest: Path) -> Path:
    """The example's apps/ and mesh/ (as committed) copied to dest; returns dest/mesh."""
    shutil.copytree(compose_dir() / "apps", dest / "apps")
    return copy_config(dest / "mesh")


COMPOSE = compose_dir()
CONFIG = COMPOSE / "mesh"
SHOP = REPO / IN_REPO / "apps" / "shop.py"
SHIPPED = fingerprint()


GATEWAY_PORTS = (18443, 18081)  # mesh/shop-gateway.yaml: https, http (redirected)


def repoint_gateway(mesh: Path, https: int, http: int) -> None:
    """The example's Gateway in a copy (mesh/) on other ports, so two runs cannot collide
    on 127.0.0.1:18443 (as tests publish compose's 18080 on an ephemeral port)."""
    path = mesh / "shop-gateway.yaml"
    text = path.read_text()
    for old, new in zip(GATEWAY_PORTS, (https, http), strict=True):
        assert text.count(f"number: {old}") == 1, f"{path}: port {old} not found once"
        text = text.replace(f"number: {old}", f"number: {new}")
    path.write_text(text)
