"""Builders for the `meshctl up` tests: a MESH_HOME, the CLI as a subprocess, traffic helpers."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshctl.launch.procs import marked_pids
from tests.example import COMPOSE, copy_example  # noqa: F401 - the builders tests import from here
from tests.integration.harness import free_port, wait_until  # noqa: F401 - the builders tests import from here

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = COMPOSE  # examples/compose as committed (tests/example.py)
# meshctl with up/down/status/intercept, whether or not meshctl/cli.py registers them yet.
MESHCTL = [sys.executable, "-m", "tests.commands.meshctl_cli"]


@dataclass
class Cli:
    home: Path
    env: dict[str, str]

    def run(
        self, *args: str, timeout: float = 90, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*MESHCTL, *args], env=self.env, cwd=REPO, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"meshctl {' '.join(args)} exited {done.returncode}\n"
                f"stdout: {done.stdout}\nstderr: {done.stderr}"
            )
        return done

    def json(self, *args: str, timeout: float = 90) -> Any:
        return json.loads(self.run(*args, "--output", "json", timeout=timeout).stdout)

    def processes(self) -> list[int]:
        """Every live process of this mesh: marked, or naming MESH_HOME on its command line."""
        found = set(marked_pids(self.home))
        needle = str(self.home).encode()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if needle in cmd:
                    found.add(int(entry))
        return sorted(found)


@contextmanager
def mesh_home(prefix: str = "meshctl-test-") -> Iterator[Cli]:
    """A MESH_HOME that uid 1337 can traverse (pytest's tmp_path, under a 0700 dir, is not),
    with free registry ports and a random namespace prefix; `down --purge` afterwards."""
    home = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(home, stat.S_IRWXU | stat.S_IXGRP | stat.S_IXOTH)
    env = {
        **os.environ,
        "MESH_HOME": str(home),
        "MESH_NETNS_PREFIX": f"t{secrets.token_hex(2)}-",
        "MESH_REGISTRY_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MESH_FORCE_EXPLICIT", None)
    cli = Cli(home, env)
    try:
        yield cli
    finally:
        try:
            cli.run("down", check=False, timeout=60)
        finally:
            shutil.rmtree(home, ignore_errors=True)


