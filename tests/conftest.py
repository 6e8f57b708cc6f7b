"""Shared pytest fixtures and skip markers for the whole suite."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator

import pytest


def _docker_running() -> bool:
    if shutil.which("docker") is None:
        return False
    return os.path.exists("/var/run/docker.sock")


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
    docker_ok = _docker_running()
    for item in items:
        if "root" in item.keywords and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root (network namespaces, iptables)"))
        if "docker" in item.keywords and not docker_ok:
            item.add_marker(pytest.mark.skip(reason="needs a running Docker engine"))
