"""Imports point down (docs/architecture.md): `common/` imports none of the mesh's packages,
and neither `proxy/` nor `registry/` imports `meshctl/` (the command line and launchers sit
on top); inside `proxy/`, the request path's folders import only the layers below them,
never the process shell. Read from the source with `ast`, so a lazy import inside a
function (or one under TYPE_CHECKING) counts too."""

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


# The request path's layers in proxy/, top to bottom (docs/architecture.md "The folders"):
# a module may import from the layers below its own, and from its own folder; never from
# the process shell above them all (main.py, admin.py, run.py), never upward.
SHELL = ("proxy/main.py", "proxy/admin.py", "proxy/run.py", "proxy/__main__.py")
LAYERS = (
    ("proxy/inbound/", "proxy/outbound/"),
    ("proxy/downstream/",),
    ("proxy/runtime.py",),
    ("proxy/snapshot.py",),
    ("proxy/forwarding/",),
    ("proxy/transport/",),
    ("proxy/http1/", "proxy/http2/"),
)


def _layer(rel: str) -> tuple[int, str] | None:
    """(layer index, the folder or file it is in) for a path under proxy/, else None."""
    if rel in SHELL:
        return -1, rel
    for i, places in enumerate(LAYERS):
        for place in places:
            if rel == place or (place.endswith("/") and rel.startswith(place)):
                return i, place
    return None


def _module_path(name: str) -> str | None:
    """proxy.forwarding.forward -> proxy/forwarding/forward.py (or its package's folder)."""
    path = REPO / Path(*name.split("."))
    if path.with_suffix(".py").is_file():
        return str(path.with_suffix(".py").relative_to(REPO))
    if (path / "__init__.py").is_file():
        return str(path.relative_to(REPO)) + "/"
    return None


def test_the_request_path_imports_point_down() -> None:
    wrong = []
    for path in sorted((REPO / "proxy").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        mine = _layer(rel)
        if mine is None or mine[0] < 0:
            continue
        for line, name in _imports(path):
            target = _module_path(name) if name.startswith("proxy.") else None
            theirs = _layer(target) if target else None
            if theirs is None or theirs[1] == mine[1]:
                continue
            if theirs[0] <= mine[0]:
                wrong.append(f"{rel}:{line}: imports {name}")
    assert not wrong, "imports that run up the request path's layers:\n" + "\n".join(wrong)
