"""The compiled core: the request path's modules built with mypyc, used only while current.

The request path's modules (MODULES) are plain, strictly typed Python; mypyc compiles the
same files to C extensions, which run the same code with less interpreter work per
request (docs/performance.md has the figures). The only second implementations are the
NATIVE modules: the hottest loops in C, each beside the pure-Python twin it must agree with.

- `python -m proxy.compiled build` compiles MODULES into build/core/ (install.sh runs it),
  with the few hand-written C modules (NATIVE), and writes build/core/manifest.json: each
  module's extension file and the sha256 of the source it was built from.
- At import, proxy/__init__ calls `activate()`. When the manifest was built for this
  interpreter's extension ABI and every source file still has the digest it was built
  from, one finder on sys.meta_path serves those modules from build/core/. Otherwise
  nothing is installed and the .py modules load as always; `STATUS` says which core runs
  and why (a source edited since the build, another Python, no build, switched off).
  An edit is never shadowed by a stale build, and a half-compiled mix never runs: it is
  all of MODULES or none.
- `MESH_COMPILED=0` in the environment runs the pure-Python modules; `MESH_CORE_DIR`
  points at another build directory.
- An installed wheel (`python -m proxy.compiled wheel`, proxy/compiled/wheel.py) carries
  its build inside the package, in proxy/_core/, on the same terms: another interpreter,
  or a source edited after the install, runs the pure-Python modules and says why.

`python -m proxy.compiled status` prints which core a proxy started now would run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec
from importlib.util import spec_from_file_location
from pathlib import Path
from types import ModuleType
from typing import Any

# The request path, compiled as one group. Left out: package __init__ files (re-exports),
# the side channels (admin, httpio, control, certinfo, OTLP: not per request), interception
# (root tools) and identity (its ConnectionError subclass is beyond mypyc). mypyc cannot
# compile a required keyword-only argument after defaulted ones: RetryBudget takes `clock`
# first.
MODULES: tuple[str, ...] = (
    "proxy.accesslog",
    "proxy.downstream.fastpath",
    "proxy.downstream.http1",
    "proxy.forwarding.forward",
    "proxy.forwarding.routing",
    "proxy.http1.events",
    "proxy.http1.grammar",
    "proxy.http1.render",
    "proxy.http1.request",
    "proxy.http1.response",
    "proxy.http1.stream",
    "proxy.forwarding.authz",
    "proxy.inbound.stack",
    "proxy.main",
    "proxy.forwarding.cluster",
    "proxy.outbound.stack",
    "proxy.policy.authz",
    "proxy.policy.balancer",
    "proxy.policy.budget",
    "proxy.policy.clock",
    "proxy.policy.fault",
    "proxy.policy.limits",
    "proxy.policy.outlier",
    "proxy.policy.ratelimit",
    "proxy.policy.retry",
    "proxy.policy.weights",
    "proxy.runtime",
    "proxy.snapshot",
    "proxy.telemetry",
    "proxy.tracing.attributes",
    "proxy.tracing.context",
    "proxy.tracing.span",
    "proxy.transport.accept",
    "proxy.transport.detect",
    "proxy.transport.headwatch",
    "proxy.transport.streams",
    "proxy.transport.tcp",
    "proxy.transport.tls",
)

# Written in C by hand, built with the same command and loaded on the same terms: module ->
# its source from ROOT. Each has a pure-Python twin that runs when the core is interpreted,
# and tests hold the two to the same answers (the C file's first comment names them).
NATIVE: dict[str, str] = {"proxy.http1._speedups": "proxy/http1/_speedups.c"}
CORE: tuple[str, ...] = (*MODULES, *NATIVE)  # every module a build holds

ROOT = Path(__file__).resolve().parents[2]  # where `proxy/` is: sources are ROOT/proxy/...
BUNDLED = ROOT / "proxy" / "_core"  # a platform wheel's build, inside the package
MANIFEST = "manifest.json"
REBUILD = "python -m proxy.compiled build"
REINSTALL = "python -m proxy.compiled wheel"  # makes the wheel that carries a build
OFF = "MESH_COMPILED=0"  # Status.detail when the compiled core is switched off on purpose


@dataclass(frozen=True)
class Status:
    compiled: bool
    detail: str  # what runs and why, for logs and `meshctl --version`

    def __str__(self) -> str:
        return f"{'compiled' if self.compiled else 'pure Python'} ({self.detail})"


STATUS = Status(False, "not activated")


def core_dir() -> Path:
    """MESH_CORE_DIR, else an installed wheel's proxy/_core/, else a checkout's build/core/."""
    if os.environ.get("MESH_CORE_DIR"):
        return Path(os.environ["MESH_CORE_DIR"])
    if BUNDLED.is_dir() or not (ROOT / "pyproject.toml").exists():
        return BUNDLED
    return ROOT / "build" / "core"


def source_of(module: str, root: Path = ROOT) -> Path:
    if module in NATIVE:
        return root / NATIVE[module]
    return root.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Finder:
    """Serves the compiled modules (and mypyc's shared runtime module) from the build."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        return spec_from_file_location(fullname, file, loader=ExtensionFileLoader(fullname, file))


def check(directory: Path, root: Path = ROOT) -> tuple[dict[str, str] | None, str]:
    """(module -> extension file, detail) when the build in `directory` is current, else
    (None, why not). Reads the manifest and hashes the sources; imports nothing."""
    fix = (f"install the wheel built for this Python (`{REINSTALL}`)" if directory == BUNDLED
           else f"`{REBUILD}`")
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return None, f"no compiled core in {directory}; {fix}"
    except (OSError, ValueError) as exc:
        return None, f"{directory / MANIFEST}: unreadable ({exc}); {fix}"
    suffix = manifest.get("suffix")
    if suffix not in EXTENSION_SUFFIXES:
        return None, (
            f"built for {suffix!r}, this Python loads {EXTENSION_SUFFIXES[0]!r}; {fix}"
        )
    files: dict[str, str] = {}
    modules: dict[str, dict[str, str]] = manifest.get("modules", {})
    if sorted(modules) != sorted(CORE):
        return None, f"built for another module list than this source's; {fix}"
    for name, entry in modules.items():
        src = source_of(name, root)
        try:
            current = digest(src)
        except OSError:
            return None, f"{src} is missing"
        if current != entry.get("sha256"):
            rel = src.relative_to(root)
            return None, f"{rel} changed since the compiled core was built; {fix}"
        files[name] = str(directory / entry["file"])
    for name, file in manifest.get("support", {}).items():
        files[name] = str(directory / file)
    missing = [f for f in files.values() if not os.path.exists(f)]
    if missing:
        return None, f"{missing[0]} is missing; {fix}"
    built = manifest.get("built", "?")
    native = sum(1 for m in modules if m in NATIVE)
    return files, (
        f"mypyc {manifest.get('mypy', '?')}, {len(modules) - native} modules"
        f" and {native} in C, built {built}"
    )


def assess(directory: Path | None = None) -> tuple[dict[str, str] | None, Status]:
    """What a proxy started now would run: the extension files to load (None: the .py
    modules) and the Status saying so. For `activate` and `python -m proxy.compiled status`."""
    if os.environ.get("MESH_COMPILED", "1") == "0":
        return None, Status(False, OFF)
    files, detail = check(directory or core_dir())
    return files, Status(files is not None, detail)


def activate() -> Status:
    """Install the finder when the build is current; idempotent. Called by proxy/__init__."""
    global STATUS
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return STATUS
    files, status = assess()
    if files is not None:
        already = [m for m in MODULES if m in sys.modules]
        if already:  # too late to swap: they would run as a mix
            status = Status(False, f"{already[0]} was imported before proxy/__init__")
        else:
            sys.meta_path.insert(0, _Finder(files))
    STATUS = status
    return STATUS
