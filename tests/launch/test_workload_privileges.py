"""End to end, as root: workloads are not trusted. Each app runs as its own unprivileged
user (mesh.yaml `user:`, default nobody), never root or the proxies' uid 1337, and from
inside a workload, as that user in its namespace, nothing of MESH_HOME can be read: not
the CA key, not another workload's SVID key, not the operator token, not state or logs."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.commands.support import EXAMPLE, Cli, free_port, mesh_home, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]
NOBODY = 65534
PAYMENTS_UID = 4242

# Run as the app's own uid and gid in its network and mount namespaces: tries every path
# it is given, prints what it could open (files) or list (directories).
PROBE = """
import json, os, sys
opened = []
for path in json.load(sys.stdin):
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
        opened.append(path)
    except PermissionError:
        pass
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "opened": opened}))
"""


@dataclass
class Mesh:
    cli: Cli
    up: dict[str, Any]

    def workload(self, suffix: str) -> dict[str, Any]:
        return next(w for w in self.up["workloads"] if w["name"].endswith(suffix))

    def app_pid(self, suffix: str) -> int:
        state = json.loads((self.cli.home / "state.json").read_text())
        return int(state["workloads"][self.workload(suffix)["name"]]["app_pid"])


def _ids(pid: int) -> tuple[int, int]:
    """The real uid and gid of a running process."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return int(fields["Uid"][0]), int(fields["Gid"][0])


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    # The example, with payments as a uid of its own; the rest run as the default user.
    base = Path(tempfile.mkdtemp(prefix="meshctl-privs-", dir="/tmp"))
    os.chmod(base, 0o755)  # the apps (nobody) run from here: it must be theirs to read
    try:
        shutil.copytree(EXAMPLE / "apps", base / "apps")
        shutil.copytree(EXAMPLE / "mesh", base / "mesh")
        mesh_yaml = base / "mesh" / "mesh.yaml"
        marker = '"--service", "payments", "--version", "v1"]'
        text = mesh_yaml.read_text()
        assert marker in text
        mesh_yaml.write_text(text.replace(marker, f'{marker}\n        user: "{PAYMENTS_UID}"'))
        with mesh_home() as cli:
            up = cli.json("up", str(base / "mesh"), "--runtime", "local", "--timeout", "30",
                          "--monitor-port", str(free_port()))  # fmt: skip
            yield Mesh(cli, up)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_apps_run_as_their_own_unprivileged_users(mesh: Mesh) -> None:
    seen = {}
    for w in mesh.up["workloads"]:
        suffix = w["name"].removeprefix(mesh.cli.env["MESH_NETNS_PREFIX"])
        seen[suffix] = _ids(mesh.app_pid(suffix))
    assert seen.pop("payments-v1") == (PAYMENTS_UID, PAYMENTS_UID)
    assert set(seen.values()) == {(NOBODY, NOBODY)}, seen
    state = json.loads((mesh.cli.home / "state.json").read_text())
    gateways = {g["name"] for g in mesh.up["gateways"]}
    assert gateways, "the example's Gateway has its proxy"
    for name, run in state["workloads"].items():
        # `ip netns exec` has become the sidecar. The gateway (on the host, no app beside
        # it) runs as the user that ran `up`, so the sidecars' uid cannot read its keys
        # (SECURITY.md).
        assert _ids(run["proxy_pid"])[0] == (0 if name in gateways else 1337), name


def test_the_apps_work_as_those_users(mesh: Mesh) -> None:
    ns = mesh.workload("frontend-v1")["netns"]
    curl = ["ip", "netns", "exec", ns, "curl", "-s", "-m", "5", "http://orders:8080/"]
    done = subprocess.run(curl, capture_output=True, text=True, timeout=10)
    assert json.loads(done.stdout)["service"] == "orders", done.stdout


def test_from_inside_a_workload_nothing_of_mesh_home_can_be_read(mesh: Mesh) -> None:
    home = mesh.cli.home
    every = [str(home)]
    for root, dirs, files in os.walk(home):
        every += [os.path.join(root, n) for n in dirs + files]
    payments = mesh.workload("payments-v1")["name"]
    secrets = [home / "registry" / "ca" / "ca.key", home / "registry" / "operator.token",
               home / "proxies" / payments / "tls" / "svid.key", home / "state.json"]  # fmt: skip
    for path in secrets:
        assert str(path) in every, f"{path} is not where this test expects it"
    for suffix in ("frontend-v1", "payments-v1"):  # the default user and a `user:` of its own
        pid = mesh.app_pid(suffix)
        uid, gid = _ids(pid)
        assert uid not in (0, 1337) and gid not in (0, 1337)
        argv = ["nsenter", "-t", str(pid), "-n", "-m", "-S", str(uid), "-G", str(gid),
                "python3", "-c", PROBE]  # fmt: skip
        done = subprocess.run(argv, input=json.dumps(every), capture_output=True, text=True,
                              timeout=30, cwd="/")  # fmt: skip
        assert done.returncode == 0, done.stderr
        probe = json.loads(done.stdout)
        assert (probe["uid"], probe["gid"]) == (uid, gid)
        assert probe["opened"] == [], f"{suffix} (uid {uid}) could read {probe['opened']}"


def test_keys_belong_to_their_owners_only(mesh: Mesh) -> None:
    home = mesh.cli.home

    def owner_mode(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_uid, stat.S_IMODE(st.st_mode)

    assert owner_mode(home / "registry" / "ca" / "ca.key") == (0, 0o600)
    for private in ("registry", "registry/ca", "logs", "launch"):
        assert owner_mode(home / private) == (0, 0o700), private
    for shared in (home, home / "proxies"):  # root and the proxies' group may enter
        assert owner_mode(shared) == (0, 0o710) and shared.stat().st_gid == 1337
    assert owner_mode(home / "registry" / "operator.token") == (0, 0o600)
    assert owner_mode(home / "state.json") == (0, 0o600)
    for w in mesh.up["workloads"]:
        pdir = home / "proxies" / w["name"]
        wait_until(lambda p=pdir: (p / "tls" / "svid.key").exists(), 10, f"{pdir} key")
        assert owner_mode(pdir / "tls" / "svid.key") == (1337, 0o600)
        assert owner_mode(pdir) == (1337, 0o700)
        assert owner_mode(pdir / "tls") == (1337, 0o700)
