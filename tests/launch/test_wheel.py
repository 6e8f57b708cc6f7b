"""docs/systemd.md's "Getting meshctl onto the VM", run as written: the wheels built by
`python -m proxy.compiled wheel`, the platform one installed into a fresh venv by the
documented command; its compiled core runs, and falls back to pure Python, saying why,
when its manifest does not match (a tampered digest, another interpreter's ABI) and when
the pure wheel is installed instead.

The install takes its dependencies from this machine's configured package index, as a VM
would from its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from proxy.compiled import MANIFEST, check, core_dir
from proxy.compiled.wheel import platform_tag, wheels
from tests.proxy.test_compiled import _can_compile

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "systemd.md"
SECTION = "## Getting meshctl onto the VM"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def doc_blocks() -> list[str]:
    text = DOC.read_text()
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def run(cmd: str | list[str], *, cwd: Path, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    done = subprocess.run(
        cmd, shell=isinstance(cmd, str), cwd=cwd, env=env or os.environ.copy(),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, f"{cmd}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done


def warnings_in(output: str) -> list[str]:
    """Lines that warn, less pip's notes on this machine's own pip configuration: its
    extra-index-url names file:// indexes that lack some projects' directories, and pip
    says so for every lookup. Those name a location from `pip config list`; nothing else
    is let through."""
    config = run([sys.executable, "-m", "pip", "config", "list"], cwd=REPO).stdout
    indexes = re.findall(r"file://[^\s']+", config)
    ignored = re.compile(r"WARNING: Location '(file://[^']+)' is ignored: it is neither a file "
                         r"nor a directory\.")  # fmt: skip
    out = []
    for line in output.splitlines():
        m = ignored.fullmatch(line.strip())
        if m and any(m.group(1).startswith(i) for i in indexes):
            continue
        if re.search(r"warn|deprecat", line, re.I):
            out.append(line)
    return out


@dataclass(frozen=True)
class Installed:
    dist: Path
    pure: Path
    platform: Path
    venv: Path
    bin: Path  # stands for /usr/local/bin
    output: str  # what the documented install printed

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        return {**env, "PATH": f"{self.bin}{os.pathsep}{env['PATH']}"}

    def version(self) -> str:
        return run("meshctl --version", cwd=self.dist, env=self.env()).stdout

    def manifest(self) -> Path:
        (path,) = self.venv.glob("lib/python3*/site-packages/proxy/_core/manifest.json")
        return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    reason = _can_compile()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("wheel")
    pure, platform = wheels(tmp / "dist")
    install, version = doc_blocks()[1].strip().splitlines()
    doc_wheel = re.search(r"\./(meshctl-\S+\.whl)", install)
    assert doc_wheel, install
    # The documented file name is the one built here (version and tag): the docs stay true.
    assert doc_wheel.group(1) == platform.name, (doc_wheel.group(1), platform.name)
    venv, bin_dir = tmp / "opt-meshctl", tmp / "usr-local-bin"
    bin_dir.mkdir()
    line = install.replace("/opt/meshctl", str(venv)).replace("/usr/local/bin", str(bin_dir))
    done = run(line, cwd=platform.parent)
    inst = Installed(platform.parent, pure, platform, venv, bin_dir, done.stdout + done.stderr)
    assert version.strip() == "meshctl --version"
    yield inst


def test_the_build_writes_a_pure_and_a_platform_wheel(installed: Installed) -> None:
    assert installed.pure.name == "meshctl-0.1.0-py3-none-any.whl"
    assert installed.platform.name == f"meshctl-0.1.0-{platform_tag()}.whl"
    assert platform_tag().startswith(f"cp{sys.version_info.major}{sys.version_info.minor}-")


def test_the_build_packs_the_checkouts_current_core_without_recompiling(
    installed: Installed,
) -> None:
    """install.sh built build/core/ from these sources: the wheel carries that very build
    (its manifest, build time included), not a second ~90 s compile."""
    files, detail = check(core_dir())
    if files is None:
        pytest.skip(f"the checkout has no current compiled core: {detail}")
    packed = json.loads(installed.manifest().read_text())
    assert packed == json.loads((core_dir() / MANIFEST).read_text())


def test_the_documented_install_runs_the_compiled_core(installed: Installed) -> None:
    assert warnings_in(installed.output) == [], installed.output
    out = installed.version()
    assert out.startswith("meshctl 0.1.0\nproxy core: compiled (mypyc "), out
    # The modules come from the installed package's proxy/_core/, not from this checkout.
    probe = run([str(installed.venv / "bin" / "python"), "-c",
                 "import proxy.downstream.fastpath as f; print(f.__file__)"],
                cwd=installed.dist, env=installed.env()).stdout.strip()  # fmt: skip
    fastpath = f"proxy/downstream/fastpath{EXTENSION_SUFFIXES[0]}"
    assert probe == str(installed.manifest().parent / fastpath)
    helped = run([str(installed.venv / "bin" / "python"), "-m", "proxy", "--help"],
                 cwd=installed.dist, env=installed.env())  # fmt: skip
    assert "--registry" in helped.stdout, helped.stdout


def test_a_core_that_does_not_match_runs_pure_python_and_says_why(installed: Installed) -> None:
    path = installed.manifest()
    original = path.read_text()
    manifest = json.loads(original)
    try:
        manifest["modules"]["proxy.forwarding.routing"]["sha256"] = "0" * 64
        path.write_text(json.dumps(manifest))
        out = installed.version()
        assert ("proxy core: pure Python (proxy/forwarding/routing.py changed since the "
                "compiled core") in out
        assert "install the wheel built for this Python" in out

        manifest = json.loads(original)
        manifest["suffix"] = ".cpython-399-x86_64-linux-gnu.so"  # another interpreter's ABI
        path.write_text(json.dumps(manifest))
        out = installed.version()
        assert "proxy core: pure Python (built for '.cpython-399-x86_64-linux-gnu.so', this " \
               f"Python loads '{EXTENSION_SUFFIXES[0]}'" in out, out
    finally:
        path.write_text(original)
    assert "proxy core: compiled" in installed.version()


def test_the_pure_wheel_runs_pure_python_and_says_why(installed: Installed) -> None:
    """Last: it replaces the platform wheel in the venv."""
    core = installed.manifest().parent
    done = run([str(installed.venv / "bin" / "pip"), "install", "-q", "--no-deps",
                "--force-reinstall", str(installed.pure)], cwd=installed.dist)  # fmt: skip
    assert warnings_in(done.stdout + done.stderr) == []
    out = installed.version()
    want = f"meshctl 0.1.0\nproxy core: pure Python (no compiled core in {core}; install the wheel"
    assert out.startswith(want), out
    assert not list(core.glob(f"**/*{EXTENSION_SUFFIXES[0]}"))
    helped = run([str(installed.venv / "bin" / "python"), "-m", "proxy", "--help"],
                 cwd=installed.dist, env=installed.env())  # fmt: skip
    assert "--registry" in helped.stdout
