"""Regexes as Istio takes them: RE2 (Envoy's safe_regex), checked and matched by one engine.

RE2 runs in time linear in the input whatever the pattern: a header value cannot make a
route backtrack (`^/(a+)+$` against `/aaa…a!` costs microseconds, where Python's `re`
doubles its work per byte and froze a proxy). The config check compiles each pattern with
the same binding and options the proxy matches with (`full_matcher`), so a pattern the
registry accepts is one the proxy runs, and one RE2 refuses (backreferences, lookaround,
atomic groups, possessive quantifiers, conditionals, `\\Z`) is a config error.

As Envoy: matched against the whole value (RE2 ANCHOR_BOTH: Istio documents `regex` as a
full match), UTF-8, and a program size over 100 is refused (Envoy's default
`re2.max_program_size.error_level`), which also bounds each pattern's memory.

The binding is google-re2's extension (`re2._re2`: RE2 itself, through pybind11). Its
Python wrapper (`re2.compile(...).fullmatch`) makes a generator and a match object per
call, ~1.8 µs; calling `RE2.Match` directly costs ~0.5 µs (`re`: ~0.2 µs). It is loaded
on the first pattern compiled (`_engine`), so a proxy with no `regex` route never maps it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from re2 import _re2

__all__ = ["MAX_LENGTH", "MAX_PROGRAM_SIZE", "RegexError", "check_re2", "full_matcher"]

MAX_LENGTH: Final = 1024
MAX_PROGRAM_SIZE: Final = 100  # Envoy's re2.max_program_size.error_level default

_NO_MATCH: Final = (-1, -1)

# RE2's own message for what Python's `re` has and RE2 lacks, first words -> a plain name.
_HINTS: Final = (
    ("invalid escape sequence: \\Z", "\\Z (use \\z or $)"),
    ("invalid escape sequence: \\", "backreferences (\\1)"),  # \1..\9; others keep RE2's words
    ("invalid perl operator: (?=", "lookahead (?= / (?!"),
    ("invalid perl operator: (?!", "lookahead (?= / (?!"),
    ("invalid perl operator: (?<=", "lookbehind (?<= / (?<!"),
    ("invalid perl operator: (?<!", "lookbehind (?<= / (?<!"),
    ("invalid perl operator: (?>", "atomic groups (?>"),
    ("invalid perl operator: (?(", "conditionals (?(...)"),
    ("invalid perl operator: (?P", "named backreferences (?P=name)"),  # RE2 stops at P
    ("bad repetition operator: *+", "possessive quantifiers (*+ ++ ?+)"),
    ("bad repetition operator: ++", "possessive quantifiers (*+ ++ ?+)"),
    ("bad repetition operator: ?+", "possessive quantifiers (*+ ++ ?+)"),
)


@functools.cache
def _engine() -> tuple[type[_re2.RE2], _re2.RE2.Options, _re2.RE2.Anchor]:
    """RE2, loaded on the first pattern: the extension adds ~2.6 MiB to a process's RSS,
    which a proxy whose routes have no `regex` never pays."""
    from re2 import _re2

    opts = _re2.RE2.Options()
    opts.log_errors = False  # the error is returned to the config check, not printed
    opts.never_capture = True  # a full match needs no groups: less work per match
    return _re2.RE2, opts, _re2.RE2.Anchor.ANCHOR_BOTH


class RegexError(ValueError):
    """A pattern RE2 (as Envoy runs it) refuses; the message says why."""


def _compile(pattern: str) -> _re2.RE2:
    if len(pattern) > MAX_LENGTH:
        raise RegexError(f"regex is longer than {MAX_LENGTH} characters")
    re2, options, _ = _engine()
    rx = re2(pattern.encode(), options)
    if not rx.ok():
        why = rx.error().decode(errors="replace")
        for start, name in _HINTS:
            if why.startswith(start) and (start[-1] != "\\" or why[len(start):][:1].isdigit()):
                raise RegexError(f"{name} are not supported by RE2, which Istio uses")
        raise RegexError(f"invalid regex (RE2 syntax, as Istio): {why}")
    size = rx.ProgramSize()
    if size > MAX_PROGRAM_SIZE:
        raise RegexError(
            f"regex program size {size} is over {MAX_PROGRAM_SIZE}, Envoy's limit "
            "(re2.max_program_size): simplify it (e.g. `.*` rather than `.{0,100}`)"
        )
    return rx


def check_re2(pattern: str) -> str | None:
    """None when `pattern` is a regex the proxy will run, else what is wrong with it."""
    try:
        _compile(pattern)
    except RegexError as exc:
        return str(exc)
    return None


def full_matcher(pattern: str) -> Callable[[bytes], bool]:
    """A predicate: does the whole value match `pattern` (compiled once, here; RegexError
    for a pattern check_re2 refuses)."""
    match = _compile(pattern).Match
    both = _engine()[2]

    def matches(value: bytes) -> bool:
        return match(both, value, 0, len(value))[0] != _NO_MATCH

    return matches
