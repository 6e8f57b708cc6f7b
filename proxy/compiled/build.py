"""Build the compiled core: mypyc over proxy.compiled.MODULES into build/core/."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any, Final

from proxy.compiled import MANIFEST, MODULES, NATIVE, ROOT, core_dir, digest, source_of

_HIDDEN: Final = ("-fvisibility=hidden",)


def build(
    out: Path | None = None,
    modules: tuple[str, ...] = MODULES,
    native: tuple[str, ...] = (*NATIVE,),
) -> Path:
    """Compile `modules` with mypyc and the C modules `native` into `out` (default
    core_dir()); returns the manifest.

    Needs mypy (its mypyc), a C compiler and the Python headers. The sources are hashed
    before the compile, so an edit made during the build makes the result stale, not wrong.
    The new build replaces the old one only once it is whole.
    """
    from mypy.version import __version__ as mypy_version
    from mypyc.build import mypycify

    # setuptools ships no type information; it is only the driver of the C compiler here.
    setuptools: Any = importlib.import_module("setuptools")

    out = out or core_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    sources = {m: source_of(m) for m in (*modules, *native)}
    digests = {m: digest(p) for m, p in sources.items()}
    with tempfile.TemporaryDirectory(prefix=".core-", dir=out.parent) as tmp:
        work = Path(tmp)
        cwd = os.getcwd()
        os.chdir(ROOT)  # mypycify names modules by their path from here
        try:
            exts = mypycify(
                [str(sources[m].relative_to(ROOT)) for m in modules],
                opt_level="3",
                # One C file per module: about half the compile time of one large file
                # (mypyc's multi-file mode cannot build a group of a single module).
                multi_file=len(modules) > 1,
                target_dir=str(work / "c"),
            )
            # Hidden visibility: the calls between the group's C files (one module's
            # function calling another's) bind directly, not through the PLT, and GCC may
            # inline within a file; only the modules' init functions are exported (Python's
            # PyMODINIT_FUNC marks them so), which is all an extension needs.
            for ext in exts:
                ext.extra_compile_args = [*ext.extra_compile_args, *_HIDDEN]
            exts += [
                setuptools.Extension(m, [str(sources[m].relative_to(ROOT))],
                                     extra_compile_args=["-O2", "-Wall", *_HIDDEN])
                for m in native
            ]
            dist = setuptools.Distribution({"name": "meshctl-core", "ext_modules": exts})
            cmd: Any = dist.get_command_obj("build_ext")
            cmd.build_lib = str(work / "lib")
            cmd.build_temp = str(work / "obj")
            cmd.parallel = os.cpu_count() or 1
            dist.run_command("build_ext")
        finally:
            os.chdir(cwd)
        lib = work / "lib"
        suffix = EXTENSION_SUFFIXES[0]
        entries: dict[str, dict[str, str]] = {}
        support: dict[str, str] = {}
        for so in sorted(lib.rglob(f"*{suffix}")):
            rel = so.relative_to(lib).as_posix()
            name = rel[: -len(suffix)].replace("/", ".")
            if name in digests:
                entries[name] = {"file": rel, "sha256": digests[name]}
            else:  # mypyc's runtime module shared by the group
                support[name] = rel
        missing = sorted(set(sources) - set(entries))
        if missing:
            raise RuntimeError(f"mypyc built no extension for {', '.join(missing)}")
        manifest = {
            "suffix": suffix,
            "python": sys.version.split()[0],
            "mypy": mypy_version,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "modules": entries,
            "support": support,
        }
        (lib / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        lib.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    return out / MANIFEST
