"""The supervisor's watch on the registry (no root): it adopts the registry `up` started,
restarts it when it dies (at once, then with backoff while it keeps dying), and `status`
describes the outage from the files: who restarts it and what still runs."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from common.state import atomic_write
from meshctl.launch import plan as pm
from meshctl.launch import supervisor as supmod
from meshctl.launch.procs import LaunchError, LaunchPaths, write_json
from meshctl.launch.report import outage

PLAN = pm.Plan(mode=pm.EXPLICIT, prefix="", config_dir="/nowhere",
               registry_url="https://127.0.0.1:1", registry_listen="127.0.0.1",
               registry_port=1, monitor_port=2, network=None)  # fmt: skip


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.kill()
        p.wait()


def _pid_file(home: Path, pid: int) -> None:
    atomic_write(LaunchPaths(home).pid_file("registry"), f"{pid}\n")


def test_adopts_then_restarts_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, children: list[subprocess.Popen[bytes]]
) -> None:
    def start(paths: LaunchPaths, plan: pm.Plan) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["true"])  # a registry that dies at once
        children.append(p)
        _pid_file(paths.home, p.pid)
        return p

    monkeypatch.setattr(supmod, "start_registry", start)
    sup = supmod.Supervisor(tmp_path)
    sup.plan = PLAN
    ups = subprocess.Popen(["sleep", "60"])  # the one `up` started: not the supervisor's
    children.append(ups)
    _pid_file(tmp_path, ups.pid)
    sup._tend_registry(100.0)
    assert sup.registry_pid == ups.pid and children == [ups]  # adopted, nothing started
    ups.kill()
    ups.wait()
    sup._tend_registry(101.0)  # dead: started again at once
    assert len(children) == 2 and sup.registry_pid == children[1].pid
    assert sup.registry.restarts == 1 and sup.registry_down_at is None
    children[1].wait()
    sup._tend_registry(101.5)  # died again within STABLE_S: 0.25 s of backoff
    assert len(children) == 2 and sup.registry.restarts == 2
    assert sup.registry_down_at is not None and sup.registry.last_exit == 0
    sup._tend_registry(101.7)
    assert len(children) == 2
    sup._tend_registry(101.8)
    assert len(children) == 3 and sup.registry.restarts == 2
    sup._write_state()
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["registry"]["pid"] == children[2].pid and state["registry"]["restarts"] == 2
    assert os.stat(tmp_path / "state.json").st_mode & 0o777 == 0o600


def _state(home: Path, workload_pid: int | None, registry: dict[str, object]) -> None:
    orders = pm.Workload(name="orders-v1", service="orders", version="v1", replica=0,
                         address="127.0.0.1", netns=None, app_argv=("true",), app_env=(),
                         cwd="/", proxy_args=(), inbound_ports=(8080,))  # fmt: skip
    plan = replace(PLAN, workloads=(orders,))
    wl = {"app_pid": workload_pid, "proxy_pid": None, "error": None}
    write_json(LaunchPaths(home).state, {"plan": pm.to_wire(plan), "registry": registry,
                                         "workloads": {"orders-v1": wl}})  # fmt: skip


def test_outage_says_what_runs_and_who_restarts(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    _pid_file(tmp_path, dead.pid)
    _state(tmp_path, os.getpid(), {"down_at": 60.0, "restarts": 3})
    st = outage(tmp_path, "connection refused")
    assert st["registry"]["answering"] is False and st["registry"]["pid"] == dead.pid
    assert st["registry"]["problem"] == (
        f"registry not answering at https://127.0.0.1:1 (pid {dead.pid} dead since 00:01:00Z; "
        f"no supervisor runs to restart it: see {tmp_path}/logs/registry.log, then `meshctl "
        "up` again); 1 workload running (from state.json)"
    )
    assert [w["app_pid"] for w in st["workloads"]] == [os.getpid()]
    alive = subprocess.Popen(["sleep", "60"])
    try:
        _pid_file(tmp_path, alive.pid)
        st = outage(tmp_path, "read timed out")
        assert f"pid {alive.pid} running but not answering: read timed out" in (
            st["registry"]["problem"]
        )
    finally:
        alive.kill()
        alive.wait()


def test_no_mesh_is_running_only_when_nothing_runs(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    _pid_file(tmp_path, dead.pid)
    _state(tmp_path, dead.pid, {})
    with pytest.raises(LaunchError, match="no mesh is running"):
        outage(tmp_path, "connection refused")
