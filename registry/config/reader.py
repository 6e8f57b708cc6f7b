"""Typed reading of YAML nodes, recording every error with its position and field path.

A converter is `conv(cx, node, path) -> value | None`: it returns None after recording a
Diagnostic, so one pass over a document reports all its errors. `Obj` wraps a mapping node:
it checks unknown, unsupported and duplicate keys once, then hands out typed fields.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from registry.config.diagnostics import Diagnostic
from registry.config.duration import format_duration, parse_duration

__all__ = [
    "EMPTY",
    "Conv",
    "Cx",
    "Obj",
    "as_bool",
    "as_duration",
    "as_int",
    "as_list",
    "as_number",
    "as_str",
    "as_str_list",
    "as_str_map",
    "at",
    "int_in",
    "join",
    "mapping_items",
    "one_of",
    "scalar_text",
]

T = TypeVar("T")
# An empty default for tuple-valued fields, typed so it unifies with any tuple type.
EMPTY: tuple[Any, ...] = ()
Conv = Callable[["Cx", Node, str], T | None]

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"


class Cx:
    """The errors found so far in one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[Diagnostic] = []

    def error(self, node: Node, path: str, message: str) -> None:
        mark = node.start_mark
        self.errors.append(Diagnostic(self.file, mark.line + 1, mark.column + 1, path, message))


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def at(path: str, index: int) -> str:
    return f"{path}[{index}]"


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {
        _STR: "a string",
        _INT: "an integer",
        _FLOAT: "a number",
        _BOOL: "a boolean",
        _NULL: "null",
    }.get(node.tag, f"a value tagged {node.tag}")


def _scalar(cx: Cx, node: Node, path: str, tags: tuple[str, ...], want: str) -> object:
    """The Python value of a scalar node whose tag is in `tags`, else an error and None."""
    if not isinstance(node, ScalarNode) or node.tag not in tags:
        hint = ""
        if want == "a string" and isinstance(node, ScalarNode) and node.tag != _NULL:
            hint = f' (quote it: "{node.value}")'
        cx.error(node, path, f"expected {want}, got {describe(node)}{hint}")
        return None
    if node.tag == _STR:
        return str(node.value)
    try:
        return SafeConstructor().construct_object(node)
    except Exception:  # a resolver-matched scalar that the constructor still refuses
        cx.error(node, path, f"cannot read {node.value!r} as {want}")
        return None


def as_str(cx: Cx, node: Node, path: str) -> str | None:
    v = _scalar(cx, node, path, (_STR,), "a string")
    return v if isinstance(v, str) else None


def scalar_text(cx: Cx, node: Node, path: str) -> str | None:
    """A string or an integer, as its text (an id written either way: `1000` or "1000")."""
    if isinstance(node, ScalarNode) and node.tag == _INT:
        return str(node.value)
    return as_str(cx, node, path)


def as_bool(cx: Cx, node: Node, path: str) -> bool | None:
    v = _scalar(cx, node, path, (_BOOL,), "true or false")
    return v if isinstance(v, bool) else None


def as_int(cx: Cx, node: Node, path: str) -> int | None:
    v = _scalar(cx, node, path, (_INT,), "an integer")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def as_number(cx: Cx, node: Node, path: str) -> float | None:
    v = _scalar(cx, node, path, (_INT, _FLOAT), "a number")
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if not math.isfinite(v):
        cx.error(node, path, "expected a finite number")
        return None
    return float(v)


def int_in(lo: int, hi: int, what: str = "") -> Conv[int]:
    def conv(cx: Cx, node: Node, path: str) -> int | None:
        v = as_int(cx, node, path)
        if v is not None and not lo <= v <= hi:
            cx.error(node, path, f"{what or 'value'} {v} is outside {lo}..{hi}")
            return None
        return v

    return conv


def one_of(
    allowed: Iterable[str], unsupported: Iterable[str] = (), *, upper: bool = False
) -> Conv[str]:
    allowed_t, unsupported_t = tuple(allowed), tuple(unsupported)

    def conv(cx: Cx, node: Node, path: str) -> str | None:
        v = as_str(cx, node, path)
        if v is None:
            return None
        key = v.upper() if upper else v
        if key in allowed_t:
            return key
        if key in unsupported_t:
            cx.error(node, path, f"`{v}` is not supported yet")
        else:
            cx.error(node, path, f"unknown value `{v}`: use one of {', '.join(allowed_t)}")
        return None

    return conv


def as_duration(min_s: float = 0.0) -> Conv[float]:
    """Istio requires >= 1ms for most durations: pass min_s=0.001 there."""

    def conv(cx: Cx, node: Node, path: str) -> float | None:
        if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT):
            cx.error(node, path, f"duration {node.value} has no unit: write e.g. {node.value}s")
            return None
        text = as_str(cx, node, path)
        if text is None:
            return None
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            cx.error(node, path, str(exc))
            return None
        if seconds < min_s:
            least = format_duration(min_s)
            cx.error(node, path, f"duration {text} is too short: it must be at least {least}")
            return None
        return seconds

    return conv


def as_list(cx: Cx, node: Node, path: str) -> list[tuple[Node, str]] | None:
    if is_null(node):
        return []
    if not isinstance(node, SequenceNode):
        cx.error(node, path, f"expected a list, got {describe(node)}")
        return None
    return [(item, at(path, i)) for i, item in enumerate(node.value)]


def as_str_list(cx: Cx, node: Node, path: str) -> tuple[str, ...] | None:
    items = as_list(cx, node, path)
    if items is None:
        return None
    out = [as_str(cx, n, p) for n, p in items]
    return tuple(s for s in out if s is not None) if None not in out else None


def mapping_items(cx: Cx, node: Node, path: str) -> list[tuple[str, Node, Node]] | None:
    """(key, key node, value node) of a mapping; duplicate and non-string keys reported."""
    if is_null(node):
        return []
    if not isinstance(node, MappingNode):
        cx.error(node, path, f"expected a mapping, got {describe(node)}")
        return None
    seen: dict[str, Node] = {}
    out: list[tuple[str, Node, Node]] = []
    for knode, vnode in node.value:
        if not isinstance(knode, ScalarNode) or knode.tag not in (_STR, _INT):
            cx.error(knode, path, f"mapping keys must be strings, got {describe(knode)}")
            continue
        key = str(knode.value)
        if key in seen:
            first = seen[key].start_mark.line + 1
            msg = f"duplicate key `{key}` (first defined on line {first})"
            cx.error(knode, join(path, key), msg)
            continue
        seen[key] = knode
        out.append((key, knode, vnode))
    return out


def as_str_map(cx: Cx, node: Node, path: str) -> tuple[tuple[str, str], ...] | None:
    items = mapping_items(cx, node, path)
    if items is None:
        return None
    out: list[tuple[str, str]] = []
    ok = True
    for key, _k, vnode in items:
        v = as_str(cx, vnode, join(path, key))
        if v is None:
            ok = False
        else:
            out.append((key, v))
    return tuple(sorted(out)) if ok else None


class Obj:
    """A mapping node with a known set of fields."""

    def __init__(
        self,
        cx: Cx,
        node: Node,
        path: str,
        fields: Iterable[str],
        unsupported: Iterable[str] = (),
    ) -> None:
        self.cx, self.node, self.path = cx, node, path
        self.fields: dict[str, tuple[Node, Node]] = {}
        self.ok = True
        items = mapping_items(cx, node, path)
        if items is None:
            self.ok = False
            return
        known = tuple(fields)
        unsupported_t = tuple(unsupported)
        for key, knode, vnode in items:
            if key in unsupported_t:
                cx.error(knode, join(path, key), f"`{key}` is not supported yet")
                self.ok = False
            elif key not in known:
                close = difflib.get_close_matches(key, known + unsupported_t, n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                cx.error(knode, join(path, key), f"unknown field `{key}`{hint}")
                self.ok = False
            elif not is_null(vnode):
                self.fields[key] = (knode, vnode)

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def value_node(self, key: str) -> Node:
        return self.fields[key][1]

    def key_node(self, key: str) -> Node:
        return self.fields[key][0]

    def sub(self, key: str) -> str:
        return join(self.path, key)

    def get(self, key: str, conv: Conv[T], default: T | None = None) -> T | None:
        if key not in self.fields:
            return default
        return conv(self.cx, self.fields[key][1], self.sub(key))

    def require(self, key: str, conv: Conv[T]) -> T | None:
        if key not in self.fields:
            self.missing(key)
            return None
        return conv(self.cx, self.fields[key][1], self.sub(key))

    def missing(self, key: str) -> None:
        self.cx.error(self.node, self.sub(key), f"missing required field `{key}`")

    def obj(self, key: str, fields: Iterable[str], unsupported: Iterable[str] = ()) -> Obj | None:
        if key not in self.fields:
            return None
        return Obj(self.cx, self.fields[key][1], self.sub(key), fields, unsupported)

    def items(self, key: str) -> list[tuple[Node, str]]:
        """The elements of a list field (empty when absent or wrong)."""
        if key not in self.fields:
            return []
        return as_list(self.cx, self.fields[key][1], self.sub(key)) or []
