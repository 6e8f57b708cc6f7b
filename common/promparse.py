"""A parser for the Prometheus text exposition format (0.0.4), enough for our own proxies."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def _labels(raw: str) -> dict[str, str]:
    """`a="x",b="y\\"z"` -> {"a": "x", "b": 'y"z'}: escapes \\\\, \\" and \\n."""
    out: dict[str, str] = {}
    i, n = 0, len(raw)
    while i < n:
        eq = raw.index("=", i)
        key = raw[i:eq].strip().lstrip(",").strip()
        j = raw.index('"', eq) + 1
        buf: list[str] = []
        while raw[j] != '"':
            if raw[j] == "\\":
                nxt = raw[j + 1]
                buf.append("\n" if nxt == "n" else nxt)
                j += 2
            else:
                buf.append(raw[j])
                j += 1
        out[key] = "".join(buf)
        i = j + 1
        while i < n and raw[i] in ", ":
            i += 1
    return out


def parse(text: str) -> Iterator[Sample]:
    for raw in text.split("\n"):  # only LF ends a line: a label value may hold a CR
        line = raw.strip(" \t")
        if not line.strip() or line.startswith("#"):
            continue
        if "{" in line:
            name, _, rest = line.partition("{")
            labels_raw, _, value = rest.rpartition("}")
            labels = _labels(labels_raw)
        else:
            name, _, value = line.partition(" ")
            labels = {}
        parts = value.split()
        if not parts:
            continue
        try:
            v = float(parts[0])
        except ValueError:
            continue
        yield Sample(name.strip(), labels, v)
