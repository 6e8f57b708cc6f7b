"""The compose cache: only changed files are composed again, and nothing stale is served."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.config import LoadResult, load_directory, yamlsource
from tests.registry.config.conftest import replace_in


@pytest.fixture
def composed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the files composed (not served from the cache), in order."""
    names: list[str] = []
    real = yamlsource._compose

    def counting(text: str, name: str) -> object:
        names.append(name)
        return real(text, name)

    monkeypatch.setattr(yamlsource, "_compose", counting)
    yield names


def cold(directory: Path) -> LoadResult:
    """A load with nothing cached, to compare with."""
    yamlsource._COMPOSED.clear()
    return load_directory(directory)


def weights(result: LoadResult) -> list[int]:
    assert result.config is not None, [str(e) for e in result.errors]
    vs = result.config.virtual_service_for("orders")
    assert vs is not None
    return [d.weight for d in vs.http[0].route]


def same_size_same_mtime(path: Path, old: str, new: str) -> None:
    """Rewrite `path` in place, same length, and put its mtime back to the nanosecond."""
    assert len(old) == len(new)
    st = path.stat()
    replace_in(path.parent, path.name, old, new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        st.st_size, st.st_mtime_ns, st.st_ino)


def test_only_the_changed_file_is_composed_again(example_copy: Path,
                                                 composed: list[str]) -> None:
    first = cold(example_copy)
    assert sorted(composed) == ["mesh.yaml", "orders.yaml", "security.yaml", "shop-gateway.yaml"]
    composed.clear()
    again = load_directory(example_copy)
    assert composed == []
    assert again == first
    replace_in(example_copy, "orders.yaml", "weight: 90", "weight: 70")
    replace_in(example_copy, "orders.yaml", "weight: 10", "weight: 30")
    changed = load_directory(example_copy)
    assert composed == ["orders.yaml"]
    assert weights(changed) == [70, 30]
    assert changed == cold(example_copy)


def test_same_size_and_mtime_but_other_bytes_is_not_stale(example_copy: Path) -> None:
    assert weights(load_directory(example_copy)) == [90, 10]
    orders = example_copy / "orders.yaml"
    same_size_same_mtime(orders, "weight: 90", "weight: 80")
    same_size_same_mtime(orders, "weight: 10", "weight: 20")
    assert weights(load_directory(example_copy)) == [80, 20]


def test_a_cached_file_broken_in_place_reports_its_error(example_copy: Path) -> None:
    good = load_directory(example_copy)
    assert good.ok
    orders = example_copy / "orders.yaml"
    text = orders.read_text()
    same_size_same_mtime(orders, "weight: 90", "weight: [0")  # an unclosed flow sequence
    broken = [str(e) for e in load_directory(example_copy).errors]
    assert broken == ["orders.yaml:20:22: YAML syntax error: expected ',' or ']', but got ':' "
                      "(while parsing a flow sequence)"]
    assert broken == [str(e) for e in cold(example_copy).errors]
    orders.write_text(text)
    assert load_directory(example_copy) == good


def test_cross_file_errors_with_an_unchanged_file(example_copy: Path,
                                                  composed: list[str]) -> None:
    """mesh.yaml changes; orders.yaml, served from the cache, now refers to nothing."""
    assert load_directory(example_copy).ok
    composed.clear()
    mesh = example_copy / "mesh.yaml"
    mesh.write_text(mesh.read_text().replace("  orders:\n", "  ordering:\n", 1))
    result = load_directory(example_copy)
    assert composed == ["mesh.yaml"]
    assert not result.ok
    assert any(e.file == "orders.yaml" for e in result.errors), [str(e) for e in result.errors]
    assert [str(e) for e in result.errors] == [str(e) for e in cold(example_copy).errors]


def test_same_bytes_at_another_path_are_their_own_file(tmp_path: Path,
                                                       example_copy: Path) -> None:
    assert load_directory(example_copy).ok
    other = tmp_path / "other"
    other.mkdir()
    (other / "mesh.yaml").write_bytes((example_copy / "mesh.yaml").read_bytes())
    (other / "extra.yaml").write_bytes((example_copy / "orders.yaml").read_bytes())
    result = load_directory(other)
    assert result.ok and result.config is not None
    vs = result.config.virtual_service_for("orders")
    assert vs is not None and vs.source.file == "extra.yaml"


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    cache = yamlsource._ComposeCache()
    for i in range(cache.MAX_FILES + 10):
        cache.put(tmp_path / f"{i}.yaml", b"x: %d\n" % i, ())
    assert len(cache._entries) == cache.MAX_FILES
    assert cache.get(tmp_path / "0.yaml", b"x: 0\n") is None  # the oldest went first
    assert cache.get(tmp_path / f"{cache.MAX_FILES + 9}.yaml",
                     b"x: %d\n" % (cache.MAX_FILES + 9)) == ()
    big = b"#" * (cache.MAX_BYTES // 2 + 1)
    cache.put(tmp_path / "a.yaml", big, ())
    cache.put(tmp_path / "b.yaml", big, ())
    assert cache.get(tmp_path / "a.yaml", big) is None
    assert cache._bytes <= cache.MAX_BYTES
