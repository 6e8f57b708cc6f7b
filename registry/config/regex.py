"""Regexes as Istio takes them: RE2 syntax (Envoy's safe_regex), compiled here with `re`.

RE2 guarantees linear time, so it has no backreferences and no lookaround; Python's `re`
has both. A pattern using them would be accepted by `re` and rejected by Istio, so we refuse
it too. Istio matches the whole value (`fullmatch`), not a substring.
"""

from __future__ import annotations

import re

__all__ = ["check_re2"]

_ESCAPE_SEQUENCES = (
    (re.compile(r"\\[1-9]"), "backreferences (\\1)"),
    (re.compile(r"\\[ZG]"), "\\Z and \\G (use $ and ^)"),
)
_UNSUPPORTED = (
    (re.compile(r"\(\?P="), "named backreferences (?P=name)"),
    (re.compile(r"\(\?=|\(\?!"), "lookahead (?= / (?!"),
    (re.compile(r"\(\?<[=!]"), "lookbehind (?<= / (?<!"),
    (re.compile(r"\(\?>"), "atomic groups (?>"),
    (re.compile(r"\(\?\("), "conditionals (?(...)"),
    (re.compile(r"[*+?}]\+"), "possessive quantifiers (*+ ++ ?+)"),
)
_ESCAPED = re.compile(r"\\\\")
_ANY_ESCAPE = re.compile(r"\\.")


def check_re2(pattern: str) -> str | None:
    """None when `pattern` is a regex RE2 accepts, else what is wrong with it."""
    if len(pattern) > 1024:
        return "regex is longer than 1024 characters"
    # Drop escaped backslashes first so `\\1` (a literal backslash, then 1) is not flagged.
    probe = _ESCAPED.sub("", pattern)
    for construct, name in _ESCAPE_SEQUENCES:
        if construct.search(probe):
            return f"{name} are not supported by RE2, which Istio uses"
    # Then drop every escape so `\(?=` (an optional literal paren, then `=`) is not flagged.
    probe = _ANY_ESCAPE.sub("", probe)
    for construct, name in _UNSUPPORTED:
        if construct.search(probe):
            return f"{name} are not supported by RE2, which Istio uses"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regex: {exc}"
    return None
