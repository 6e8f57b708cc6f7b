"""Durations as Istio writes them ("500ms", "1.5s", "1m30s", "1h"), parsed to float seconds.

Istio's YAML durations are Go/protobuf durations: one or more decimal numbers, each with a
unit (ns, us, µs, ms, s, m, h), no sign, no spaces. A bare number ("10") is refused because
the unit is not obvious; Kubernetes would refuse it too.
"""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 MICRO SIGN
    "μs": 1e-6,  # U+03BC GREEK SMALL LETTER MU, as Go accepts both
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_MAX_LEN = 64


def parse_duration(text: str) -> float:
    """Return `text` as seconds; raise ValueError saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string such as 500ms or 30s, got {text!r}")
    if len(text) > _MAX_LEN:
        raise ValueError("duration is too long")
    if text == "":
        raise ValueError("empty duration: write e.g. 500ms, 1.5s, 30s, 1m or 1h")
    if text.startswith("-"):
        raise ValueError(f"duration {text!r} is negative")
    if text.startswith("+"):
        raise ValueError(f"duration {text!r} must not have a sign")
    if text == "0":
        # Go accepts a bare "0"; it is the only unit-less duration it accepts.
        return 0.0
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _PART.match(text, pos)
        if m is None:
            if re.fullmatch(r"\d+(\.\d+)?", text):
                raise ValueError(f"duration {text!r} has no unit: write e.g. {text}s or {text}ms")
            raise ValueError(
                f"invalid duration {text!r}: write a number and a unit (ns, us, ms, s, m, h),"
                " e.g. 500ms, 1.5s, 1m30s"
            )
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total


def format_duration(seconds: float) -> str:
    """The shortest readable form of `seconds` ("500ms", "30s", "1m30s", "24h")."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{_num(ms)}ms" if ms >= 1 else f"{_num(seconds * 1e6)}us"
    whole = int(seconds)
    if whole != seconds:
        return f"{_num(seconds)}s"
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s else "")
    return out


def _num(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")
