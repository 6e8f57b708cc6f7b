"""`meshctl down` for the docker runtime: `release` removes our rules from a container's
namespace, IPv4 and IPv6 (root; a process in a namespace stands in for the container)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from meshctl.launch import docker, netns
from proxy.intercept import iptables
from proxy.intercept.rules import InterceptConfig
from tests.proxy.intercept.support import unique

pytestmark = pytest.mark.root


@pytest.fixture
def container_pid() -> Iterator[int]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = unique("c")
    subprocess.run(["ip", "netns", "add", name], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "60"])
    try:
        yield sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()
        netns.delete_host(name)


def test_release_leaves_no_rule_in_either_family(container_pid: int) -> None:
    iptables.install(InterceptConfig(proxy_uid=1337), container_pid)
    for family in (4, 6):
        assert "MESH_OUTPUT" in iptables.dump(container_pid, family=family)
    done = docker.release([container_pid], None)
    assert done == [f"rules of pid {container_pid}"]
    for tool in ("iptables-save", "ip6tables-save"):
        saved = subprocess.run(["nsenter", f"--net=/proc/{container_pid}/ns/net", tool],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "MESH_" not in saved, f"{tool} after release:\n{saved}"
