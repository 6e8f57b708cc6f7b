"""registry.config.regex: RE2 checks and matches, and agrees with `re.fullmatch` where both apply.

The differential test generates patterns from the syntax that RE2 and Python's `re` share
(literals, classes, `.`, groups, alternation, greedy and lazy repetition, anchors, ASCII
`\\d \\w \\s \\b`) and inputs over a small alphabet with one non-ASCII letter; for every pattern
both engines accept, the RE2 matcher must answer what `re.fullmatch(pattern, text, re.ASCII)`
answers (Python's `re` on text, as RE2 runs on UTF-8: `.` is one character, not one byte).
Newline and vertical tab stay out of the inputs: there the engines differ on purpose (`$`
before a final newline, `\\s` and `\\v`), and a header value holds neither.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from registry.config.regex import MAX_PROGRAM_SIZE, check_re2, full_matcher

_ALPHABET = "ab/-.0_ é"
_ATOMS = st.sampled_from(
    ["a", "b", "/", "-", "0", "é", "\\.", ".", "[ab]", "[^/]", "[a-c0-9]", "\\d", "\\w",
     "\\s", "\\W", "[/.-]", "(?:)"]
)
_QUANT = st.sampled_from(["", "*", "+", "?", "*?", "+?", "??", "{2}", "{1,3}", "{0,2}?"])


def _pattern() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        group = st.builds(lambda p, q: f"({p}){q}", inner, _QUANT)
        ncgroup = st.builds(lambda p, q: f"(?:{p}){q}", inner, _QUANT)
        alt = st.builds(lambda a, b: f"{a}|{b}", inner, inner)
        seq = st.lists(inner, min_size=2, max_size=3).map("".join)
        return group | ncgroup | alt | seq

    base = st.builds(lambda a, q: a + q, _ATOMS, _QUANT)
    body = st.recursive(base, extend, max_leaves=6)
    anchored = st.builds(lambda s, b, e: s + b + e, st.sampled_from(["", "^"]), body,
                         st.sampled_from(["", "$", "\\b"]))
    return anchored


# Python's `re` is the reference here, and it backtracks: texts stay short (8 characters),
# so a generated `((a+)+)+` costs it at most a few thousand steps (the pattern itself as a
# text once hung a run in `re`, beyond pytest-timeout's reach).
@settings(max_examples=500, deadline=None)
@given(pattern=_pattern(), texts=st.lists(st.text(_ALPHABET, max_size=8), min_size=1,
                                          max_size=6))
def test_re2_matches_as_re_fullmatch_where_both_accept(pattern: str, texts: list[str]) -> None:
    assume(check_re2(pattern) is None)  # RE2 accepts it (and within the program size)
    try:
        py = re.compile(pattern, re.ASCII)
    except re.error:
        assume(False)
        raise
    matches = full_matcher(pattern)
    for text in [*texts, "", pattern[:8]]:
        assert matches(text.encode()) == (py.fullmatch(text) is not None), (pattern, text)


def test_a_backtracking_pattern_is_matched_in_linear_time() -> None:
    """`^/(a+)+$` on `/aaa…a!` costs Python's `re` 2^n steps (n = 40 here: hours); RE2 is
    linear. No timing asserted: with a backtracking engine this test does not end."""
    matches = full_matcher("^/(a+)+$")
    hostile = b"/" + b"a" * 38 + b"!"
    assert len(hostile) == 40
    assert matches(hostile) is False
    assert matches(b"/" + b"a" * 38) is True


def test_full_match_not_search() -> None:
    """Istio documents `regex` as a full match of the value (Envoy safe_regex)."""
    m = full_matcher("/u/[0-9]+")
    assert m(b"/u/42") and not m(b"/u/42/x") and not m(b"x/u/42")
    assert full_matcher("a|ab")(b"ab")  # the whole value, not the first alternative's match


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(a)\\1", "backreferences (\\1) are not supported by RE2, which Istio uses"),
        ("(?P<n>a)(?P=n)", "named backreferences (?P=name) are not supported by RE2"),
        ("a(?=b)", "lookahead (?= / (?! are not supported by RE2"),
        ("a(?!b)", "lookahead (?= / (?! are not supported by RE2"),
        ("(?<=a)b", "lookbehind (?<= / (?<! are not supported by RE2"),
        ("(?<!a)b", "lookbehind (?<= / (?<! are not supported by RE2"),
        ("(?>a+)b", "atomic groups (?> are not supported by RE2"),
        ("a*+", "possessive quantifiers (*+ ++ ?+) are not supported by RE2"),
        ("(a)?(?(1)b|c)", "conditionals (?(...) are not supported by RE2"),
        ("a\\Z", "\\Z (use \\z or $) are not supported by RE2"),
        ("\\q", "invalid regex (RE2 syntax, as Istio): invalid escape sequence: \\q"),
        ("a{1001}", "invalid regex (RE2 syntax, as Istio): invalid repetition size: {1001}"),
        (".{0,100}", f"regex program size 904 is over {MAX_PROGRAM_SIZE}, Envoy's limit"),
        ("a" * 1025, "regex is longer than 1024 characters"),
    ],
)
def test_what_re2_refuses(pattern: str, problem: str) -> None:
    got = check_re2(pattern)
    assert got is not None and got.startswith(problem), got
    with pytest.raises(ValueError, match=re.escape(problem[:30])):
        full_matcher(pattern)


@pytest.mark.parametrize(
    "pattern", ["\\\\1", "\\(?=", "a\\z", "(?<name>a)", "[[:alpha:]]+", "(?i)/API/.*",
                "[0-9a-f]{32}"])
def test_what_re2_accepts(pattern: str) -> None:
    """An escaped backslash before a digit, an escaped paren before `?=`: literals, not
    the constructs; RE2's own `\\z`, `(?<name>`, POSIX classes."""
    assert check_re2(pattern) is None
