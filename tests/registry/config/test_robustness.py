"""The loader never raises, and hostile or broken files get a clear error each."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.config import load_directory
from tests.example import CONFIG as EXAMPLE

MESH = (EXAMPLE / "mesh.yaml").read_text()


def _errors(directory: Path) -> list[str]:
    result = load_directory(directory)
    assert result.config is None
    return [str(e) for e in result.errors]


def _dir(tmp_path: Path, **files: str | bytes) -> Path:
    d = tmp_path / "cfg"
    d.mkdir(exist_ok=True)
    (d / "mesh.yaml").write_text(MESH)
    for name, content in files.items():
        path = d / name.replace("_", ".")
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return d


def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for i in range(1, 9):
        bomb += f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]\n"
    errors = _errors(_dir(tmp_path, bomb_yaml=bomb))
    assert errors == [
        "bomb.yaml:2:8: YAML aliases (*name) are not supported: write the value out in full"]


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    errors = _errors(_dir(tmp_path, deep_yaml="[" * 5000 + "]" * 5000))
    assert errors == ["deep.yaml:1:65: nesting is deeper than 64 levels"]


def test_big_file_is_refused(tmp_path: Path) -> None:
    errors = _errors(_dir(tmp_path, big_yaml="# " + "x" * (1024 * 1024) + "\n"))
    assert errors == ["big.yaml:1:1: file is larger than 1 MiB (1048579 bytes)"]


def test_binary_garbage(tmp_path: Path) -> None:
    errors = _errors(_dir(tmp_path, bin_yaml=b"kind: x\n\xff\xfe\x00garbage"))
    assert errors == ["bin.yaml:2:1: not UTF-8 text (is this a binary file?)"]


def test_nul_byte(tmp_path: Path) -> None:
    errors = _errors(_dir(tmp_path, nul_yaml=b"kind: x\nab\x00c"))
    assert errors == ["nul.yaml:2:3: contains a NUL byte (is this a binary file?)"]


def test_symlink_loop_and_broken_link(tmp_path: Path) -> None:
    d = _dir(tmp_path)
    os.symlink("loop.yaml", d / "loop.yaml")
    os.symlink("nowhere", d / "gone.yaml")
    assert _errors(d) == [
        "gone.yaml:1:1: file disappeared while being read (or is a broken symlink)",
        "loop.yaml:1:1: symlink loop: the link points back at itself",
    ]


def test_directory_named_like_a_file(tmp_path: Path) -> None:
    d = _dir(tmp_path)
    (d / "sub.yaml").mkdir()
    assert _errors(d) == ["sub.yaml:1:1: is a directory, not a file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    d = _dir(tmp_path, secret_yaml="a: 1\n")
    (d / "secret.yaml").chmod(0)
    assert _errors(d) == [
        "secret.yaml:1:1: permission denied: the registry cannot read this file"]


def test_not_a_directory(tmp_path: Path) -> None:
    assert _errors(tmp_path / "missing") == [f"{tmp_path / 'missing'}:1:1: no such directory"]


def test_mesh_yaml_with_two_documents(tmp_path: Path) -> None:
    d = _dir(tmp_path)
    (d / "mesh.yaml").write_text(MESH + "---\nkind: VirtualService\n")
    assert _errors(d) == [
        "mesh.yaml:39:1: mesh.yaml holds one document; put Istio resources in other files"]


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_loader_never_raises_on_arbitrary_text(tmp_path: Path, text: str) -> None:
    d = _dir(tmp_path, any_yaml=text)
    (d / "mesh.yaml").write_text(text)
    result = load_directory(d)
    assert all("internal error" not in e.message for e in result.errors)
    assert all(e.line >= 1 and e.column >= 1 for e in result.errors)


YAMLISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.sampled_from(["10s", "v1", "orders", "http", "STRICT", "-1", "1.5.s"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from([
        "apiVersion", "kind", "metadata", "name", "spec", "hosts", "http", "route",
        "destination", "host", "subset", "weight", "retries", "attempts", "services",
        "ports", "port", "protocol", "x"]), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=YAMLISH)
def test_loader_never_raises_on_structured_garbage(tmp_path: Path, doc: object) -> None:
    import json

    d = _dir(tmp_path, any_yaml=json.dumps(doc))  # JSON is YAML
    result = load_directory(d)
    assert all("internal error" not in e.message for e in result.errors)
