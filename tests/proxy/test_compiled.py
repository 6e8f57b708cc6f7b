"""The compiled core (proxy/compiled): used only when current, never a stale or mixed build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from proxy.compiled import (
    CORE,
    MANIFEST,
    MODULES,
    ROOT,
    Status,
    check,
    core_dir,
    digest,
    source_of,
)

SUFFIX = EXTENSION_SUFFIXES[0]

# Run in a fresh interpreter: which core loads is decided once, when `proxy` is imported.
PROBE = (
    "import proxy.downstream.fastpath, proxy.compiled as c; "
    "print(c.STATUS.compiled, proxy.downstream.fastpath.__file__, c.STATUS.detail, sep='|')"
)


def probe(**env: str) -> tuple[bool, str, str]:
    full = {k: v for k, v in os.environ.items() if k not in ("MESH_COMPILED", "MESH_CORE_DIR")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**full, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    compiled, file, detail = out.split("|", 2)
    return compiled == "True", file, detail


def fake_core(directory: Path, *, suffix: str = SUFFIX, wrong: str | None = None) -> None:
    """A manifest as `build` writes it, over empty files: enough for every check but a load."""
    modules = {}
    for name in CORE:
        rel = name.replace(".", "/") + suffix
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(b"")
        sha = "0" * 64 if name == wrong else digest(source_of(name))
        modules[name] = {"file": rel, "sha256": sha}
    (directory / f"abc__mypyc{suffix}").write_bytes(b"")
    manifest = {
        "suffix": suffix,
        "mypy": "test",
        "built": "now",
        "modules": modules,
        "support": {"abc__mypyc": f"abc__mypyc{suffix}"},
    }
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_current_manifest_serves_every_module_from_the_build(tmp_path: Path) -> None:
    fake_core(tmp_path)
    files, detail = check(tmp_path)
    assert files is not None, detail
    assert set(files) == {*CORE, "abc__mypyc"}
    assert files["proxy.http1._speedups"] == str(tmp_path / f"proxy/http1/_speedups{SUFFIX}")
    fastpath = str(tmp_path / f"proxy/downstream/fastpath{SUFFIX}")
    assert files["proxy.downstream.fastpath"] == fastpath
    assert f"{len(MODULES)} modules" in detail


def test_an_edited_source_makes_the_whole_build_stale(tmp_path: Path) -> None:
    fake_core(tmp_path, wrong="proxy.http1.request")
    files, detail = check(tmp_path)
    assert files is None
    assert "proxy/http1/request.py changed since the compiled core was built" in detail
    assert "python -m proxy.compiled build" in detail
    # A proxy started now runs the pure-Python modules, all of them.
    compiled, file, why = probe(MESH_CORE_DIR=str(tmp_path))
    assert not compiled and file.endswith("proxy/downstream/fastpath.py")
    assert "proxy/http1/request.py changed" in why


def test_a_build_for_another_python_is_not_loaded(tmp_path: Path) -> None:
    fake_core(tmp_path, suffix=".cpython-399-x86_64-linux-gnu.so")
    files, detail = check(tmp_path)
    assert files is None and "built for '.cpython-399" in detail


def test_a_build_of_another_module_list_is_not_loaded(tmp_path: Path) -> None:
    fake_core(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    del manifest["modules"]["proxy.transport.tcp"]
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    files, detail = check(tmp_path)
    assert files is None and "another module list" in detail


def test_a_missing_extension_file_is_not_loaded(tmp_path: Path) -> None:
    fake_core(tmp_path)
    (tmp_path / f"proxy/transport/streams{SUFFIX}").unlink()
    files, detail = check(tmp_path)
    assert files is None and f"proxy/transport/streams{SUFFIX} is missing" in detail


def test_no_build_and_a_broken_manifest_say_so(tmp_path: Path) -> None:
    files, detail = check(tmp_path)
    assert files is None and f"no compiled core in {tmp_path}" in detail
    (tmp_path / MANIFEST).write_text("{not json")
    files, detail = check(tmp_path)
    assert files is None and "unreadable" in detail


def test_switched_off_runs_pure_python() -> None:
    compiled, file, detail = probe(MESH_COMPILED="0")
    assert (compiled, detail) == (False, "MESH_COMPILED=0")
    assert file.endswith("proxy/downstream/fastpath.py")


def test_status_reads_as_a_sentence() -> None:
    assert str(Status(False, "MESH_COMPILED=0")) == "pure Python (MESH_COMPILED=0)"
    assert str(Status(True, "mypyc 1, 2 modules")) == "compiled (mypyc 1, 2 modules)"


def _can_compile() -> str | None:
    if shutil.which(sysconfig.get_config_var("CC").split()[0] or "cc") is None:
        return "no C compiler"
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        return "no Python headers (python3-dev)"
    try:
        import mypyc  # noqa: F401
    except ImportError:
        return "mypyc is not installed"
    return None


@pytest.mark.slow
def test_build_compiles_and_the_finder_loads_it(tmp_path: Path) -> None:
    """The real build, of one small module, loaded through the finder in a fresh interpreter."""
    reason = _can_compile()
    if reason:
        pytest.skip(reason)
    from proxy.compiled.build import build

    manifest = json.loads(build(tmp_path / "core", modules=("proxy.policy.clock",)).read_text())
    entry = manifest["modules"]["proxy.policy.clock"]
    assert entry["sha256"] == digest(source_of("proxy.policy.clock"))
    assert manifest["suffix"] == SUFFIX and manifest["support"]
    files = {"proxy.policy.clock": str(tmp_path / "core" / entry["file"])}
    files.update({k: str(tmp_path / "core" / v) for k, v in manifest["support"].items()})
    script = (
        "import sys, proxy.compiled as c\n"
        f"sys.meta_path.insert(0, c._Finder({files!r}))\n"
        "from proxy.policy import clock\n"
        "k = clock.FakeClock(5.0); k.advance(2.5)\n"
        "print(clock.__file__, k())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "MESH_COMPILED": "0"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert out == [files["proxy.policy.clock"], "7.5"]


def test_the_installed_build_is_current_and_runs() -> None:
    """After install.sh the proxy runs compiled; CI (MESH_EXPECT_COMPILED=1) insists on it."""
    files, detail = check(core_dir())
    if files is None:
        if os.environ.get("MESH_EXPECT_COMPILED") == "1":
            pytest.fail(f"MESH_EXPECT_COMPILED=1 but the compiled core is not current: {detail}")
        pytest.skip(f"compiled core not in use: {detail}")
    compiled, file, detail = probe()
    assert compiled, detail
    assert file == files["proxy.downstream.fastpath"] and file.endswith(SUFFIX)


def test_the_core_extra_has_the_stubs_the_type_check_needs() -> None:
    """mypyc type-checks all the request path imports: the stub packages the test extra
    installs for mypy must come with the `core` extra too, or `install.sh --run` (which
    installs only `core`) builds nothing and the proxies run interpreted."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    stubs = {d for d in extras["test"] if d.startswith("types-")}
    assert stubs and stubs <= set(extras["core"]), (stubs, extras["core"])
    assert any(d.startswith("mypy") for d in extras["core"])
