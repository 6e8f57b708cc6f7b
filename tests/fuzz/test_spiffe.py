"""SPIFFE ID parsing (registry/ca/spiffe.py) against the spec's grammar, on near-valid text.

tests/registry/ca/test_spiffe.py round-trips valid IDs and checks arbitrary text only
raises ValueError. Here the text is built from the pieces that matter (scheme case,
'/', '.', '..', '%', '@', ':', '?', '#', upper case, non-ASCII, CR/LF) so most inputs sit
on a rule's edge, and the verdict must equal a reference written from SPIFFE-ID.md 2.1-2.3.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.ca.spiffe import SpiffeId

_PIECES = ["spiffe://", "SPIFFE://", "spiffe:/", "/", "//", ".", "..", "a", "Z", "0", "-",
           "_", "%2e", "@", ":", "?", "#", "\r\n", "é", " ", "td", "ns", "sa", "x" * 250]
_TD = re.compile(r"[a-z0-9._-]+")
_SEG = re.compile(r"[A-Za-z0-9._-]+")


def reference(s: str) -> bool:
    """SPIFFE-ID.md: spiffe:// + trust domain [a-z0-9._-], 1..255 bytes, + optional path of
    segments [A-Za-z0-9._-]+ other than . and .., no trailing '/'; 2048 bytes at most."""
    if len(s.encode()) > 2048 or not s.startswith("spiffe://"):
        return False
    td, slash, path = s[len("spiffe://"):].partition("/")
    if not _TD.fullmatch(td) or len(td) > 255:
        return False
    if not slash:
        return True
    segs = path.split("/")
    return all(_SEG.fullmatch(x) and x not in (".", "..") for x in segs)


@settings(max_examples=2000)
@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
def test_parse_agrees_with_the_spec_grammar(s: str) -> None:
    try:
        sid = SpiffeId.parse(s)
    except ValueError:
        assert not reference(s), s
        return
    assert reference(s), s
    assert str(sid) == s
    assert "\r" not in s and "\n" not in s


@settings(max_examples=300)
@given(st.sampled_from(["default", "a", "ns-1", "A_b"]), st.sampled_from(["orders", "x.y", "z"]))
def test_for_service_builds_the_istio_shape(ns: str, svc: str) -> None:
    sid = SpiffeId.for_service("shop.local", ns, svc)
    assert sid.namespace == ns and sid.service_account == svc
    assert SpiffeId.parse(str(sid)) == sid
    assert sid.principal == f"shop.local/ns/{ns}/sa/{svc}"
