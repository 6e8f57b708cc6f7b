"""Errors a user can meet with `meshctl up`/`down`/`status`/`intercept`: one line saying what
and what to do, a non-zero exit, and nothing left running or installed."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from meshctl.launch.local import config_dir_for
from meshctl.launch.procs import LaunchError
from tests.commands.support import EXAMPLE, MESHCTL, REPO, Cli, copy_example, free_port, mesh_home


def _nothing_running(cli: Cli) -> None:
    assert cli.processes() == []
    assert not (cli.home / "launch" / "plan.json").exists()
    assert not (cli.home / "registry" / "endpoint.json").exists()


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_invalid_config_lists_positions_and_starts_nothing(tmp_path: Path) -> None:
    config = copy_example(tmp_path)
    orders = config / "orders.yaml"
    orders.write_text(orders.read_text().replace("weight: 10", "weight: 20"))
    with mesh_home() as cli:
        done = cli.run("up", str(config), "--runtime", "local", check=False)
        assert done.returncode == 1
        assert "orders.yaml:" in done.stderr and "add up to 110" in done.stderr
        first = done.stderr.splitlines()[0]
        assert first.split(":")[1].isdigit() and first.split(":")[2].isdigit()  # file:line:col
        assert "nothing was started" in done.stderr.splitlines()[-1]
        _nothing_running(cli)


def test_docker_runtime_without_a_docker_engine(tmp_path: Path) -> None:
    with mesh_home() as cli:
        cli.env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
        done = cli.run("up", str(EXAMPLE / "docker-compose.yml"), "--runtime", "docker",
                       check=False)  # fmt: skip
        assert done.returncode == 1
        line = _one_line(done.stderr)
        assert "cannot reach the Docker engine" in line and "--runtime local" in line
        _nothing_running(cli)


def test_a_taken_port_is_named_with_the_option_to_change_it() -> None:
    with socket.socket() as taken, mesh_home() as cli:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cli.env["MESH_FORCE_EXPLICIT"] = "1"
        done = cli.run("up", str(EXAMPLE / "mesh"), "--runtime", "local",
                       "--registry-port", str(port), check=False)  # fmt: skip
        assert done.returncode == 1
        line = _one_line(done.stderr)
        assert f"port {port} is already in use" in line and "--registry-port" in line
        _nothing_running(cli)


def test_a_workload_that_never_gets_ready_leaves_nothing_running(tmp_path: Path) -> None:
    config = copy_example(tmp_path)
    mesh_yaml = config / "mesh.yaml"
    mesh_yaml.write_text(
        mesh_yaml.read_text().replace(
            '["python3", "apps/shop.py", "--service", "inventory", "--version", "v1"]',
            '["python3", "-c", "raise SystemExit(3)"]',
        )
    )
    with mesh_home() as cli:
        cli.env["MESH_FORCE_EXPLICIT"] = "1"
        done = cli.run("up", str(config), "--runtime", "local", "--timeout", "15",
                       "--monitor-port", str(free_port()), check=False)  # fmt: skip
        assert done.returncode == 1
        line = _one_line(done.stderr)
        assert "inventory-v1" in line and "nothing was left running" in line
        _nothing_running(cli)


def test_status_and_down_without_a_mesh() -> None:
    with mesh_home() as cli:
        done = cli.run("status", check=False)
        assert done.returncode == 1
        assert "no mesh is running" in _one_line(done.stderr) and "meshctl up" in done.stderr
        done = cli.run("down")
        assert "nothing to remove" in done.stdout
        assert json.loads(cli.run("down", "--output", "json").stdout)["processes"] == 0


def test_paths_a_user_may_pass(tmp_path: Path) -> None:
    assert config_dir_for(EXAMPLE / "mesh") == (EXAMPLE / "mesh").resolve()
    assert config_dir_for(EXAMPLE) == (EXAMPLE / "mesh").resolve()  # the README's command
    compose = EXAMPLE / "docker-compose.yml"
    assert config_dir_for(compose) == (EXAMPLE / "mesh").resolve()  # mesh/ beside it
    with pytest.raises(LaunchError, match=r"no mesh\.yaml"):
        config_dir_for(tmp_path)
    lonely = tmp_path / "docker-compose.yml"
    lonely.write_text("services: {}\n")
    with pytest.raises(LaunchError, match="no mesh config beside it"):
        config_dir_for(lonely)


@pytest.mark.root
def test_without_privileges_up_falls_back_to_explicit_mode() -> None:
    code = "from meshctl.launch.local import choose_mode; print(choose_mode(False))"
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-c", code],
        capture_output=True, text=True, cwd=REPO, timeout=30,
        env={**os.environ, "HOME": "/tmp"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "'explicit'" in done.stdout and "not root" in done.stdout


@pytest.mark.root
def test_intercept_install_and_remove_in_a_namespace() -> None:
    from proxy.intercept import iptables

    ns = f"mt{secrets.token_hex(3)}ic"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        args = ["intercept", "install", "--service", "orders", "--proxy-uid", "1337",
                "--inbound-ports", "8080,9090", "--netns", ns]  # fmt: skip
        done = subprocess.run([*MESHCTL, *args], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert iptables.installed(ns)
        assert "--dport 9090 -j MESH_IN_REDIRECT" in iptables.dump(ns)
        remove = [*MESHCTL, "intercept", "remove", "--service", "orders", "--netns", ns]
        done = subprocess.run(remove, cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert not iptables.installed(ns)
        bad = subprocess.run([*MESHCTL, "intercept", "install", "--service", "orders",
                              "--inbound-ports", "15006", "--netns", ns],
                             cwd=REPO, capture_output=True, text=True)  # fmt: skip
        assert bad.returncode == 2 and "would loop" in bad.stderr
        assert not iptables.installed(ns)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.root
def test_intercept_install_captures_every_port_but_the_excluded_in_both_families() -> None:
    from proxy.intercept import iptables

    ns = f"mt{secrets.token_hex(3)}ic"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        args = ["intercept", "install", "--service", "orders", "--exclude-inbound-ports",
                "9100", "--exclude-outbound-cidr", "fd00::1/128", "--netns", ns]  # fmt: skip
        done = subprocess.run([*MESHCTL, *args], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        for family in (4, 6):
            rules = iptables.dump(ns, family=family)
            assert "--dport 9100 -j RETURN" in rules
            assert "--dport 22 -j RETURN" in rules  # the defaults are kept
            assert "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT" in rules
        assert "fd00::1/128" in iptables.dump(ns, family=6)
        shown = subprocess.run([*MESHCTL, "intercept", "status", "--netns", ns], cwd=REPO,
                               capture_output=True, text=True).stdout  # fmt: skip
        assert shown.startswith("installed") and "ip6tables-save" in shown
        bad = subprocess.run([*MESHCTL, "intercept", "install", "--service", "orders",
                              "--exclude-inbound-ports", "ssh", "--netns", ns],
                             cwd=REPO, capture_output=True, text=True)  # fmt: skip
        assert bad.returncode == 2 and "--exclude-inbound-ports" in bad.stderr
        remove = [*MESHCTL, "intercept", "remove", "--service", "orders", "--netns", ns]
        assert subprocess.run(remove, cwd=REPO, capture_output=True).returncode == 0
        for tool in ("iptables-save", "ip6tables-save"):
            saved = subprocess.run(["ip", "netns", "exec", ns, tool], capture_output=True,
                                   text=True, check=True).stdout  # fmt: skip
            assert "MESH_" not in saved, saved
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
