"""`python -m proxy.compiled build|status`: make the compiled core, or say which core runs."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from proxy.compiled import MODULES, Status, check, core_dir
from proxy.compiled.build import build


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m proxy.compiled",
        description="Build or inspect the proxy's compiled core (mypyc).",
    )
    ap.add_argument("command", choices=["build", "status"])
    ap.add_argument("--out", type=Path, help=f"build directory (default {core_dir()})")
    args = ap.parse_args(argv)
    if args.command == "build":
        started = time.monotonic()
        manifest = build(args.out)
        took = time.monotonic() - started
        print(f"compiled core: {manifest.parent} ({len(MODULES)} modules, {took:.0f} s)")
        return 0
    files, detail = check(args.out or core_dir())
    off = os.environ.get("MESH_COMPILED", "1") == "0"
    print(Status(files is not None and not off, "MESH_COMPILED=0" if off else detail))
    return 0 if files is not None and not off else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
