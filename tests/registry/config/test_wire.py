"""MeshConfig.to_wire / from_wire round-trip any snapshot (strategies derived from the model)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Union

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.config import MeshConfig

_LEAVES: dict[Any, st.SearchStrategy[Any]] = {
    str: st.text(max_size=6),
    int: st.integers(min_value=-(2**40), max_value=2**40),
    float: st.floats(allow_nan=False, allow_infinity=False),
    bool: st.booleans(),
}


def strategy(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for any type the model uses, built from its type hints."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return st.one_of(*(strategy(a) for a in typing.get_args(tp)))
    if tp is type(None):
        return st.none()
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy(args[0]), max_size=2).map(tuple)
        return st.tuples(*(strategy(a) for a in args))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = {f.name: strategy(hints[f.name]) for f in dataclasses.fields(tp)}
        return st.builds(tp, **fields)
    return _LEAVES[tp]


@settings(max_examples=60, deadline=None)
@given(strategy(MeshConfig))
def test_round_trip(config: MeshConfig) -> None:
    wire = json.loads(json.dumps(config.to_wire()))
    assert MeshConfig.from_wire(wire) == config


def test_a_field_the_sender_predates_takes_its_default() -> None:
    """A proxy newer than its registry: a defaulted field missing on the wire is its default;
    a field without a default is still an error."""
    from registry.config.model import Workload
    from registry.config.wire import from_wire, to_wire

    w = Workload("v1", ("app",), None, (), 1, (("app", "orders"),))
    old = {k: v for k, v in to_wire(w).items() if k != "readiness"}
    assert from_wire(Workload, old) == w
    del old["replicas"]
    try:
        from_wire(Workload, old)
    except ValueError as exc:
        assert "replicas: missing" in str(exc)
    else:
        raise AssertionError("a missing field without a default was accepted")
