"""Shared pytest fixtures and skip markers for the whole suite."""

from __future__ import annotations

import os
import shutil

import pytest


def _docker_running() -> bool:
    if shutil.which("docker") is None:
        return False
    return os.path.exists("/var/run/docker.sock")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    docker_ok = _docker_running()
    for item in items:
        if "root" in item.keywords and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root (network namespaces, iptables)"))
        if "docker" in item.keywords and not docker_ok:
            item.add_marker(pytest.mark.skip(reason="needs a running Docker engine"))
