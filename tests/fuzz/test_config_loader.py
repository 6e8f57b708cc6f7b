"""The config loader on byte-level mutations of a real, valid config directory.

tests/registry/config/test_robustness.py feeds random text and structured garbage. Here the
starting point is examples/compose/mesh (every kind of resource, valid), edited the way a
hand or a broken write edits files: truncated, bytes flipped, lines duplicated or dropped,
indentation shifted. load_directory must never report an internal error, every diagnostic
must carry a position, and a config it accepts must survive the wire round trip the
registry pushes to proxies.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.config import load_directory
from registry.config.model import MeshConfig
from tests.example import CONFIG as EXAMPLE
from tests.example import copy_config

FILES = sorted(p.name for p in EXAMPLE.glob("*.yaml"))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(FILES))
    data = bytearray((EXAMPLE / name).read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "dup_line", "drop_line", "indent",
                                   "insert"]))
        lines = bytes(data).split(b"\n")
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if op == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif op == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(
                st.sampled_from(b":-[]{}&*!|>'\"%@`#,? \t\n\x00\xff0aZ"))
        elif op == "dup_line":
            lines.insert(i, lines[i])
            data = bytearray(b"\n".join(lines))
        elif op == "drop_line" and lines:
            del lines[i]
            data = bytearray(b"\n".join(lines))
        elif op == "indent":
            lines[i] = draw(st.sampled_from([b"  ", b"\t", b" "])) + lines[i]
            data = bytearray(b"\n".join(lines))
        else:
            data[i:i] = draw(st.sampled_from([
                b"&a x", b"*a", b"<<: *a", b"!!python/object:os.system", b"{", b"- ",
                b"weight: -1", b"~", b"\xef\xbb\xbf"]))
    return name, bytes(data)


@settings(max_examples=300)
@given(mutated())
def test_mutated_config_is_loaded_or_refused_with_positions(case: tuple[str, bytes]) -> None:
    import tempfile

    name, data = case
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "mesh"
        copy_config(d)
        (d / name).write_bytes(data)
        result = load_directory(d)
    assert all("internal error" not in e.message for e in result.errors), result.errors
    assert all(e.line >= 1 and e.column >= 1 for e in result.errors)
    if result.config is not None:
        assert MeshConfig.from_wire(result.config.to_wire()) == result.config
    else:
        assert result.errors
