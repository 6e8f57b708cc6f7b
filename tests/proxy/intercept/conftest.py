"""Fixtures for the intercept tests: namespaces with random `mt` names, always deleted."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from meshctl.launch import netns
from tests.proxy.intercept.support import Pair, make_pair, unique


@pytest.fixture
def bare_netns() -> Iterator[str]:
    """An empty named network namespace (only lo), deleted afterwards."""
    name = unique("n")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        netns.delete_host(name)


@pytest.fixture
def pair() -> Iterator[Pair]:
    with make_pair() as hosts:
        yield hosts
