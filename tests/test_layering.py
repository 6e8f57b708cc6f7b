"""Imports point down (docs/architecture.md): `common/` imports none of the mesh's packages,
and neither `proxy/` nor `registry/` imports `meshctl/` (the command line and launchers sit
on top). Read from the source with `ast`, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Entry points sit above everything, whatever folder they are in.
ENTRY_POINTS = {"proxy/__main__.py"}
# package -> the top-level packages of ours it must never import
FORBIDDEN = {
    "common": {"meshctl", "proxy", "registry"},
    "proxy": {"meshctl"},
    "registry": {"meshctl"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package: str) -> None:
    wrong = [
        f"{path.relative_to(REPO)}:{line}: imports {name}"
        for path in sorted((REPO / package).rglob("*.py"))
        if str(path.relative_to(REPO)) not in ENTRY_POINTS
        for line, name in _imports(path)
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert not wrong, "imports that run upward:\n" + "\n".join(wrong)
