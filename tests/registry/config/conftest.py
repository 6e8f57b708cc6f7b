"""Builders for config-directory tests: copy the example, break one thing, load it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.example import copy_config

SEED = Path(__file__).parent / "fixtures" / "seed"

Edit = Callable[[str, str, str], Path]


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    return copy_config(tmp_path / "mesh")


def replace_in(directory: Path, name: str, old: str, new: str) -> None:
    path = directory / name
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} must occur exactly once in {name}"
    path.write_text(text.replace(old, new))
