"""A real registry over a copy of the example config, in a MESH_HOME under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.example import CONFIG
from tests.integration.harness import Mesh


@pytest.fixture
def idle_mesh(tmp_path: Path) -> Iterator[Mesh]:
    """The files in place, no registry started yet."""
    m = Mesh(tmp_path, CONFIG)
    yield m
    m.close()


@pytest.fixture
def mesh(idle_mesh: Mesh) -> Mesh:
    idle_mesh.start_registry()
    return idle_mesh
