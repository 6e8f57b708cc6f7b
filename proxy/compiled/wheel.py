"""`python -m proxy.compiled wheel`: the installable wheels, pure and with the compiled core.

Two files in dist/ (or --out):

- `meshctl-<version>-py3-none-any.whl`: the package as setuptools builds it from
  pyproject.toml (pip wheel, no build isolation: the venv's setuptools), pure Python.
- `meshctl-<version>-<cp3X>-<cp3X>-<platform>.whl`: the same files plus the compiled core
  of this interpreter in proxy/_core/ (its manifest and extension modules), tagged for
  this interpreter and platform so pip installs it only where it can load.

The core is the checkout's build (core_dir(): build/core/, which install.sh made) when it
is current for these sources and this interpreter, else built afresh (proxy.compiled.build,
~90 s); either way it is then checked against the sources inside the pure wheel
(`check(..., root=<the unpacked wheel>)`): the wheel's manifest is only ever written for
the very files it ships. Installed, proxy/__init__ loads proxy/_core/ on the same terms
as build/core/ in a checkout (proxy.compiled.check).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

from proxy.compiled import BUNDLED, ROOT, check, core_dir
from proxy.compiled.build import build

# What the pure wheel is built from: pyproject.toml's packages and its readme. A copy, so
# setuptools' build/lib of an earlier run never leaks a deleted file into the wheel.
_TREE = ("pyproject.toml", "README.md", "common", "meshctl", "proxy", "registry")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "_core", "*.egg-info")


def platform_tag() -> str:
    """This interpreter's wheel tag, as bdist_wheel writes it: cp311-cp311-linux_x86_64."""
    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{py}-{py}-{plat}"


def _pure(out: Path, work: Path) -> Path:
    src = work / "src"
    src.mkdir()
    for name in _TREE:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=_SKIP)
        else:
            shutil.copy2(path, src / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(work / "pure"), str(src)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{done.stdout}{done.stderr}")
    noise = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if noise:  # a warning here is one every install would repeat: fix it, do not ship it
        raise RuntimeError("the build printed (fix pyproject.toml):\n" + "\n".join(noise))
    (wheel,) = (work / "pure").glob("*-py3-none-any.whl")
    return Path(shutil.copy2(wheel, out / wheel.name))


def _record_line(name: str, data: bytes) -> str:
    sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={sha},{len(data)}"


def _with_core(pure: Path, core: Path, out: Path) -> Path:
    """The pure wheel plus proxy/_core/, retagged, with a new RECORD."""
    tag = platform_tag()
    name = pure.name.replace("py3-none-any", tag)
    prefix = BUNDLED.relative_to(ROOT).as_posix()  # proxy/_core
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(pure) as zin:
        for item in zin.namelist():
            files[item] = zin.read(item)
    (dist_info,) = {n.split("/")[0] for n in files if n.split("/")[0].endswith(".dist-info")}
    wheel_meta = files[f"{dist_info}/WHEEL"].decode()
    wheel_meta = wheel_meta.replace("Root-Is-Purelib: true", "Root-Is-Purelib: false")
    wheel_meta = wheel_meta.replace("Tag: py3-none-any", f"Tag: {tag}")
    files[f"{dist_info}/WHEEL"] = wheel_meta.encode()
    for path in sorted(core.rglob("*")):
        if path.is_file():
            files[f"{prefix}/{path.relative_to(core).as_posix()}"] = path.read_bytes()
    record = f"{dist_info}/RECORD"
    files.pop(record)
    lines = [_record_line(n, data) for n, data in files.items()] + [f"{record},,"]
    files[record] = ("\n".join(lines) + "\n").encode()
    target = out / name
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for item, data in files.items():
            info = zipfile.ZipInfo(item, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zout.writestr(info, data)
    return target


def _current_core() -> Path | None:
    """The checkout's build when it was made from these very sources for this Python."""
    directory = core_dir()
    files, _ = check(directory)
    return directory if files is not None else None


def wheels(out: Path) -> tuple[Path, Path]:
    """Build (the pure wheel, the wheel with this interpreter's compiled core) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=out) as tmp:
        work = Path(tmp)
        pure = _pure(out, work)
        core = _current_core() or build(work / "core").parent
        unpacked = work / "unpacked"
        with zipfile.ZipFile(pure) as zin:
            zin.extractall(unpacked)
        files, detail = check(core, root=unpacked)
        if files is None:
            raise RuntimeError(f"the compiled core does not match the wheel's sources: {detail}")
        return pure, _with_core(pure, core, out)
