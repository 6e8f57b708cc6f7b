"""Shared pytest fixtures and skip markers for the whole suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest


def _docker_running() -> bool:
    """A Docker engine answers (not just a socket file left by one that died)."""
    if shutil.which("docker") is None or not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                              capture_output=True, timeout=20)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def pytest_report_header(config: pytest.Config) -> str:
    from tests import example

    return f"example config (examples/compose): {example.source()}"


@pytest.fixture(autouse=True)
def _example_stays_pristine() -> Iterator[None]:
    """Fail the test that wrote to the shared copy of the example (tests/example.py)."""
    yield
    example = sys.modules.get("tests.example")
    if example is not None and example.fingerprint() != example.SHIPPED:
        example.restore()  # so that only this test fails
        raise AssertionError(
            f"this test wrote to the shared example at {example.COMPOSE}: copy it first "
            "(tests.example.copy_config / copy_example) and edit the copy")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    docker_ok = any("docker" in item.keywords for item in items) and _docker_running()
    etcd_ok = shutil.which("etcd") is not None or os.path.exists("/usr/bin/etcd")
    for item in items:
        if "root" in item.keywords and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root (network namespaces, iptables)"))
        if "docker" in item.keywords and not docker_ok:
            if _in_ci():
                # The Docker tests are the only proof that compose projects are meshed: in
                # CI a missing engine is a failure of the run, never a quiet skip.
                item.add_marker(pytest.mark.docker_missing_in_ci)
            else:
                item.add_marker(pytest.mark.skip(reason="needs a running Docker engine"))
        if "etcd" in item.keywords and not etcd_ok:
            if _in_ci():  # install.sh --test installs it: in CI its absence is a failure
                item.add_marker(pytest.mark.etcd_missing_in_ci)
            else:
                item.add_marker(pytest.mark.skip(
                    reason="needs etcd (Debian's etcd-server: ./install.sh --test installs it)"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker_missing_in_ci") is not None:
        pytest.fail("CI=true and no Docker engine answers (`docker version`): the Docker "
                    "end-to-end tests must run in CI; see tests/run.sh and "
                    "/tmp/meshctl-test/dockerd.log", pytrace=False)  # fmt: skip
    if item.get_closest_marker("etcd_missing_in_ci") is not None:
        pytest.fail("CI=true and no etcd binary: the registry-on-etcd tests must run in CI; "
                    "./install.sh --test installs Debian's etcd-server", pytrace=False)
