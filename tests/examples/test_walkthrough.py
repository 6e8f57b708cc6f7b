"""The README's sequence, as a new user runs it, on a clean clone: `meshctl up` on the example,
the walkthrough of examples/compose/README.md command by command (it edits the example's
mesh/orders.yaml in place, as it should), `meshctl down`, then the tests that need the
example, which must pass whatever the walkthrough left in the working copy (issue 24); then
the walkthrough's documented way back to the shipped example.

What is not literal, and why:
- Install: the clone runs on this checkout's .venv (`python -m meshctl` with the clone first
  on PYTHONPATH, through a `meshctl` on PATH), not `./install.sh --run` again: that would
  install system packages, build a second virtualenv from the package index and compile the
  core for a minute, all of which the rest of the suite already needs and has; what this
  test is about is the example's state after the walkthrough. The `up` that install.sh --run
  runs is the walkthrough's first command (here with `--runtime local`, as the walkthrough
  says, so that a Docker engine running for other tests does not change the runtime).
- Isolation: `sudo` is dropped (the test runs as root), and so that a mesh the developer may
  have running is not touched, MESH_HOME, the namespace prefix and the registry's ports are
  the test's own: /var/lib/meshctl in a command becomes that MESH_HOME, `frontend-v1` and
  the other workload names get the prefix, and `up` gets `--monitor-port`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshctl.launch.local import free_port
from tests.example import REPO
from tests.integration.harness import wait_until

# The whole sequence: up, about 150 requests, down, and a run of the example's tests.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]

# The tests that read the example's config and assert on what it says (weights, policies):
# what failed or hung in issue 24 once the walkthrough had edited the example.
EXAMPLE_DEPENDENT = (
    "tests/registry/config",
    "tests/registry/server/test_config_push.py",
    "tests/registry/server/test_restart.py",
    "tests/commands/test_route.py",
    "tests/launch/test_plan.py",
    "tests/integration/test_two_hop.py",
)
WORKLOAD = re.compile(r"(?<![\w-])(frontend|orders|payments|inventory)-v\d\b")
# The walkthrough's sections for the local runtime, in order (README.md headings).
SECTIONS = ("Up", "Calls by plain name, mTLS by default", "From the host, through the gateway",
            "The canary: 90/10, then shift, "
            "then roll back", "Authorization: only orders may call payments", "A proxy dies",
            "Down")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Step:
    section: str
    command: str  # as written in the README, one shell command (continuations joined)
    expected: tuple[str, ...]  # the `# ...` lines shown under it: its output


def steps(readme: str) -> list[Step]:
    """Every command of the walkthrough's local sections, with the output shown under it."""
    out: list[Step] = []
    for section, body in re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", readme, re.M | re.S):
        if section not in SECTIONS:
            continue
        for block in re.findall(r"^```sh\n(.*?)^```", body, re.M | re.S):
            joined = block.replace("\\\n", " ")
            for line in joined.splitlines():
                if line.lstrip().startswith("#"):
                    if out and out[-1].section == section:
                        last = out[-1]
                        out[-1] = Step(section, last.command,
                                       (*last.expected, line.lstrip()[1:].strip()))
                elif line.strip():
                    out.append(Step(section, line.strip(), ()))
    return out


@dataclass
class Walk:
    clone: Path
    home: Path
    env: dict[str, str]
    prefix: str

    def localize(self, command: str) -> str:
        """The README's command, made to run in this test's own mesh (see the docstring)."""
        command = re.sub(r"(^|\s)sudo ", r"\1", command)
        command = command.replace("/var/lib/meshctl", str(self.home))
        command = WORKLOAD.sub(lambda m: self.prefix + m.group(0), command)
        if re.match(r"meshctl up\b", command):
            command += f" --monitor-port {free_port()}"
        return command

    def sh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", command], cwd=self.clone, env=self.env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def changed_example(self) -> str:
        return self.sh("git status --porcelain -- examples/").stdout


@pytest.fixture
def walk() -> Iterator[Walk]:
    # World-traversable, as a checkout is: the proxies run as uid 1337 (pytest's tmp_path is
    # under a 0700 directory).
    base = Path(tempfile.mkdtemp(prefix="meshctl-walk-", dir="/tmp"))
    os.chmod(base, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    clone, home, bin_dir = base / "meshctl", base / "home", base / "bin"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    home.mkdir(mode=0o755)
    bin_dir.mkdir()
    shim = bin_dir / "meshctl"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m meshctl \"$@\"\n")
    shim.chmod(0o755)
    prefix = f"w{secrets.token_hex(2)}-"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(clone),
           "MESH_HOME": str(home), "MESH_NETNS_PREFIX": prefix, "PYTHONUNBUFFERED": "1",
           "MESH_REGISTRY_PORT": str(free_port())}  # fmt: skip
    for name in ("MESH_CONFIG", "MESH_FORCE_EXPLICIT", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    w = Walk(clone, home, env, prefix)
    try:
        yield w
    finally:
        w.sh("meshctl down", timeout=120)  # whatever a failed step left running
        shutil.rmtree(base, ignore_errors=True)


def test_readme_walkthrough_then_the_example_tests_on_a_clean_clone(walk: Walk) -> None:
    readme = (walk.clone / "examples" / "compose" / "README.md").read_text()
    walkthrough = steps(readme)
    assert walkthrough and walkthrough[0].section == "Up"
    downs = [i for i, s in enumerate(walkthrough) if s.command == "sudo meshctl down"]
    assert downs, "the walkthrough ends with `sudo meshctl down`"
    down = downs[-1]
    assert walk.changed_example() == "", "a clean clone"

    for step in walkthrough[: down + 1]:
        done = walk.sh(walk.localize(step.command))
        where = f"README step {step.command!r} ({step.section}):\n{done.stdout}\n{done.stderr}"
        if step.section == "A proxy dies" and "curl" in step.command:
            # "refused for a moment, then works again": the moment may be now.
            wait_until(lambda c=step.command: walk.sh(walk.localize(c)).returncode == 0, 30,
                       "frontend's calls work again after its proxy was killed")  # fmt: skip
            continue
        assert done.returncode == 0, where
        for shown in step.expected:
            if re.fullmatch(r"\d+ \"version\": \"v\d\"", shown):  # the canary's counts
                assert shown in " ".join(done.stdout.split()), where
            if shown == "RBAC: access denied 403":
                assert done.stdout.strip() == shown, where
            if shown.startswith('"x-forwarded-client-cert": '):
                assert shown.rstrip(",") in done.stdout, where
            if shown.startswith('{"calls": {"orders"'):  # the shop through the gateway
                page = json.loads(done.stdout)
                assert (page["service"], page["calls"]["orders"]["service"]) == (
                    "frontend", "orders"), where
            if re.fullmatch(r"30\d https://\S+", shown):  # the gateway's httpsRedirect
                assert done.stdout.strip() == shown, where

    # The walkthrough edited the example in place, and `down` left the edit.
    assert walk.changed_example().split() == ["M", "examples/compose/mesh/orders.yaml"]
    orders = (walk.clone / "examples/compose/mesh/orders.yaml").read_text()
    assert re.findall(r"weight: (\d+)", orders) == ["100", "0"]

    # The test command's tests that need the example pass on this edited clone.
    # (As a user runs it: none of this test's MESH_* isolation in the environment.)
    user_env = {k: v for k, v in walk.env.items() if not k.startswith("MESH_")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *EXAMPLE_DEPENDENT],
        cwd=walk.clone, env=user_env, capture_output=True, text=True, timeout=700,
    )  # fmt: skip
    tail = "\n".join(run.stdout.splitlines()[-30:])
    assert run.returncode == 0, tail
    assert re.search(r"\d+ passed", tail) and "failed" not in tail and "error" not in tail, tail

    # The walkthrough's way back to the shipped example, after `down`.
    back = [s for s in walkthrough[down + 1:] if s.section == "Down"]
    assert back, "the Down section says how to return the example to its shipped state"
    for step in back:
        done = walk.sh(walk.localize(step.command))
        assert done.returncode == 0, f"{step.command}: {done.stderr}"
    assert walk.changed_example() == ""
    orders = (walk.clone / "examples/compose/mesh/orders.yaml").read_text()
    assert re.findall(r"weight: (\d+)", orders) == ["90", "10"]
