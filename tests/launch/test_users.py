"""meshctl.launch.users: who each local app runs as (mesh.yaml `user:` resolved on this
host, default nobody), and `up` refusing a user that cannot run its app, before anything
starts."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshctl.launch import plan as pm
from meshctl.launch import users
from registry.config import MeshConfig, load_directory
from tests.commands.support import EXAMPLE, free_port, mesh_home

PAYMENTS = '"--service", "payments", "--version", "v1"]'


def _example(dest: Path, user: str | None = None) -> MeshConfig:
    shutil.copytree(EXAMPLE / "mesh", dest)
    if user is not None:
        text = (dest / "mesh.yaml").read_text()
        (dest / "mesh.yaml").write_text(text.replace(PAYMENTS, f"{PAYMENTS}\n        user: {user}"))
    result = load_directory(dest)
    assert result.config is not None, result.errors
    return result.config


def test_the_default_is_nobody() -> None:
    assert users.resolve("") == users.AppUser(65534, 65534, "nobody")


def test_names_ids_and_groups() -> None:
    assert users.resolve("daemon") == users.AppUser(1, 1, "daemon")  # its passwd group
    assert users.resolve("daemon:staff") == users.AppUser(1, 50, "daemon")
    assert users.resolve("4242") == users.AppUser(4242, 4242, "4242")  # no entry needed
    assert users.resolve("4242:50") == users.AppUser(4242, 50, "4242")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-such-user-x", "user `no-such-user-x` does not exist on this host"),
        ("daemon:no-such-group-x", "group `no-such-group-x` does not exist on this host"),
        ("daemon:root", "has gid 0 (root)"),  # root by name: mesh.yaml only knows "root" as uid
        ("4242:1337", "has gid 1337, the proxies' id"),
    ],
)
def test_refused_on_this_host(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        users.resolve(spec)


def test_errors_name_the_place_in_mesh_yaml(tmp_path: Path) -> None:
    cfg = _example(tmp_path / "mesh", "no-such-user-x")
    found, errors = users.app_users(cfg)
    assert errors == ["mesh.yaml:32:15: user `no-such-user-x` does not exist "
                      "on this host: create it (`useradd --system`) or give a uid"]  # fmt: skip
    assert ("payments", "v1") not in found and found[("orders", "v2")].uid == 65534


def test_explicit_mode_refuses_a_user_it_cannot_honour(tmp_path: Path) -> None:
    assert users.explicit_mode_errors(_example(tmp_path / "plain")) == []
    (error,) = users.explicit_mode_errors(_example(tmp_path / "mesh", "daemon"))
    assert error.startswith("mesh.yaml:32:15: `user: daemon` needs transparent mode")


def test_an_app_gets_its_own_users_environment() -> None:
    env = users.session_env(65534, {})
    assert env == {"HOME": "/nonexistent", "USER": "nobody", "LOGNAME": "nobody",
                   "PATH": users.DEFAULT_PATH}  # fmt: skip
    assert users.session_env(4242, {"PATH": "/opt/bin"})["PATH"] == "/opt/bin"
    assert users.session_env(4242, {})["HOME"] == "/"


def test_the_plan_carries_each_apps_ids(tmp_path: Path) -> None:
    cfg = _example(tmp_path / "mesh")
    plan = pm.build_plan(cfg, mode=pm.TRANSPARENT, config_dir=str(tmp_path), registry_port=1,
                         monitor_port=2, network=pm.Network("meshbr0", "10.250.7.0/24"),
                         users={("payments", "v1"): (4242, 4242)},
                         alloc_port=iter(range(20000, 20100)).__next__)  # fmt: skip
    ids = {w.name: w.run_as for w in plan.workloads}
    assert ids.pop("payments-v1") == (4242, 4242) and set(ids.values()) == {None}
    assert pm.from_wire(pm.to_wire(plan)) == plan


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A copy of the example in a directory only root can enter (as pytest's tmp_path)."""
    base = Path(tempfile.mkdtemp(prefix="meshctl-private-", dir="/tmp"))  # 0700
    shutil.copytree(EXAMPLE / "apps", base / "apps")
    shutil.copytree(EXAMPLE / "mesh", base / "mesh")
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.root
def test_up_refuses_an_app_its_user_cannot_reach(private_dir: Path) -> None:
    assert os.stat(private_dir).st_mode & 0o777 == 0o700
    with mesh_home() as cli:
        done = cli.run("up", str(private_dir / "mesh"), "--runtime", "local",
                       "--monitor-port", str(free_port()), check=False)  # fmt: skip
        assert done.returncode == 1
        line = done.stderr.strip()
        assert "runs as uid 65534, which cannot enter its working directory" in line, line
        assert str(private_dir) in line and "nothing was left running" in line
        assert cli.processes() == []
    os.chmod(private_dir, 0o755)
    mesh_yaml = private_dir / "mesh" / "mesh.yaml"
    mesh_yaml.write_text(mesh_yaml.read_text().replace('["python3", "apps/shop.py"',
                                                       '["no-such-program-x", "apps/shop.py"'))
    with mesh_home() as cli:
        done = cli.run("up", str(private_dir / "mesh"), "--runtime", "local",
                       "--monitor-port", str(free_port()), check=False)  # fmt: skip
        assert done.returncode == 1
        assert "cannot find or run `no-such-program-x`" in done.stderr, done.stderr
        assert cli.processes() == []


def test_up_in_explicit_mode_refuses_user_and_starts_nothing(tmp_path: Path) -> None:
    _example(tmp_path / "mesh", "daemon")
    with mesh_home() as cli:
        cli.env["MESH_FORCE_EXPLICIT"] = "1"
        done = cli.run("up", str(tmp_path / "mesh"), "--runtime", "local", check=False)
        assert done.returncode == 1
        assert "mesh.yaml:32:15: `user: daemon` needs transparent mode" in done.stderr
        assert "nothing was started" in done.stderr
        assert cli.processes() == []
