"""End to end, as root: a registry killed under a running local mesh is restarted by the
supervisor, config versions go on from where they were, and while it is down `status` and
`check` say so (and exit 1) instead of "no mesh is running" while the workloads run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from meshctl.launch.procs import pid_alive
from tests.commands.support import EXAMPLE, free_port, mesh_home, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_a_killed_registry_comes_back_and_status_tells_the_truth_meanwhile() -> None:
    with mesh_home() as cli:
        up = cli.json("up", str(EXAMPLE / "mesh"), "--runtime", "local", "--timeout", "30",
                      "--monitor-port", str(free_port()))  # fmt: skip
        workloads = len(up["workloads"])
        version = cli.json("status")["config_version"]
        old = int((cli.home / "logs" / "registry.pid").read_text())
        sup = int((cli.home / "logs" / "supervisor.pid").read_text())
        # Hold the supervisor still so the outage lasts long enough to look at it.
        os.kill(sup, signal.SIGSTOP)
        try:
            os.kill(old, signal.SIGKILL)
            wait_until(lambda: not pid_alive(old), 10, "the registry to die")
            done = cli.run("status", check=False)
            assert done.returncode == 1, done.stdout
            assert "no mesh is running" not in done.stderr
            assert "registry not answering" in done.stderr and f"pid {old}" in done.stderr
            assert f"{workloads} workloads running" in done.stderr, done.stderr
            assert f"supervisor (pid {sup})" in done.stderr, done.stderr
            as_json = cli.run("status", "--output", "json", check=False)
            assert as_json.returncode == 1
            st = json.loads(as_json.stdout)
            assert st["registry"]["answering"] is False and st["registry"]["pid"] == old
            assert len([w for w in st["workloads"] if w["app_pid"]]) == workloads
            check = cli.run("check", "--output", "json", check=False)
            assert check.returncode == 1
            first = json.loads(check.stdout)["checks"][0]
            assert first["check"] == "registry" and first["status"] == "fail"
            assert "registry not answering" in first["detail"], first
            assert f"{workloads} workloads running" in first["detail"], first
        finally:
            os.kill(sup, signal.SIGCONT)
        # `up` at once: it waits for the supervisor's registry instead of racing it with
        # a second one for the ports.
        again = cli.json("up", str(EXAMPLE / "mesh"), "--runtime", "local", "--timeout", "30")
        assert again["started"] == again["stopped"] == again["restarted"] == []

        def answering() -> bool:
            return cli.run("status", check=False).returncode == 0

        wait_until(answering, 30, "the supervisor to bring the registry back")
        registries = [p for p in cli.processes()
                      if b"registry" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")]
        assert len(registries) == 1, registries  # fmt: skip
        st = cli.json("status")
        assert st["registry"]["pid"] != old and pid_alive(st["registry"]["pid"])
        assert st["config_version"] >= version  # versions never go backwards
        state = json.loads((cli.home / "state.json").read_text())
        assert state["registry"]["restarts"] == 1
        assert state["registry"]["pid"] == st["registry"]["pid"]
        # and the mesh works on: the proxies reconnect to the new registry
        wait_until(lambda: all(p["connected"] for p in cli.json("status")["proxies"]), 30,
                   "every proxy to reconnect")  # fmt: skip
        ns = next(w["netns"] for w in up["workloads"] if w["name"].endswith("frontend-v1"))
        curl = ["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w",
                "%{http_code}", "-m", "5", "http://orders:8080/"]  # fmt: skip
        done = subprocess.run(curl, capture_output=True, text=True, timeout=10)
        assert done.stdout == "200"
