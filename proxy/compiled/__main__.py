"""`python -m proxy.compiled build|status|wheel`: make the compiled core, say which core
runs, or make the installable wheels (proxy/compiled/wheel.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from proxy.compiled import MODULES, NATIVE, assess, core_dir
from proxy.compiled.build import build
from proxy.compiled.wheel import wheels


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m proxy.compiled",
        description="Build or inspect the proxy's compiled core (mypyc, and the C modules).",
    )
    ap.add_argument("command", choices=["build", "status", "wheel"])
    ap.add_argument(
        "--out", type=Path,
        help=f"build directory (default {core_dir()}); for `wheel`, where the wheels go"
        " (default dist/)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.command == "wheel":
        for wheel in wheels(args.out or Path("dist")):
            print(wheel)
        return 0
    if args.command == "build":
        started = time.monotonic()
        manifest = build(args.out)
        took = time.monotonic() - started
        print(f"compiled core: {manifest.parent} ({len(MODULES)} modules and {len(NATIVE)} in C,"
              f" {took:.0f} s)")
        return 0
    _, status = assess(args.out)
    print(status)
    return 0 if status.compiled else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
