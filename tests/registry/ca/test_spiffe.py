"""SpiffeId: every rule of SPIFFE-ID.md, one row each, and a Hypothesis round-trip."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.ca.spiffe import SpiffeId

VALID = [
    ("spiffe://shop.local/ns/default/sa/orders", "shop.local", "/ns/default/sa/orders"),
    ("spiffe://example.org", "example.org", ""),
    ("spiffe://a_b-c.9/x", "a_b-c.9", "/x"),
    ("spiffe://td/Upper/Case.Path_ok-1", "td", "/Upper/Case.Path_ok-1"),
    ("spiffe://td/..a/.b./...", "td", "/..a/.b./..."),  # only exactly '.' and '..' are banned
    ("spiffe://td/" + "a" * (2048 - len("spiffe://td/")), "td", "/" + "a" * 2036),
]


@pytest.mark.parametrize(("text", "td", "path"), VALID)
def test_valid(text: str, td: str, path: str) -> None:
    sid = SpiffeId.parse(text)
    assert (sid.trust_domain, sid.path) == (td, path)
    assert str(sid) == text


INVALID = [
    ("", "is empty"),
    ("http://td/x", "must start with 'spiffe://'"),
    ("td/x", "must start with 'spiffe://'"),
    ("SPIFFE://td/x", "scheme must be lowercase"),
    ("spiffe:/td/x", "must start with 'spiffe://'"),
    ("spiffe://", "no trust domain"),
    ("spiffe:///x", "no trust domain"),
    ("spiffe://Shop.local/x", "trust domains are lowercase"),
    ("spiffe://sh op/x", "invalid character ' '"),
    ("spiffe://shöp/x", "invalid character 'ö'"),
    ("spiffe://td%41/x", "percent-encoded"),
    ("spiffe://td:8443/x", "port"),
    ("spiffe://user@td/x", "userinfo"),
    ("spiffe://user:pw@td/x", "userinfo"),
    ("spiffe://td/x?a=b", "query"),
    ("spiffe://td/x#frag", "fragment"),
    ("spiffe://td/", "must not end with '/'"),
    ("spiffe://td/x/", "must not end with '/'"),
    ("spiffe://td//x", "empty segment"),
    ("spiffe://td/a//b", "empty segment"),
    ("spiffe://td/./x", "'.' segment"),
    ("spiffe://td/a/../b", "'..' segment"),
    ("spiffe://td/a b", "invalid character ' '"),
    ("spiffe://td/a%20b", "percent-encoded"),
    ("spiffe://td/a*b", "invalid character '*'"),
    ("spiffe://td/" + "a" * (2049 - len("spiffe://td/")), "longer than 2048 bytes"),
    ("spiffe://" + "a" * 256 + "/x", "longer than 255 bytes"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_names_the_rule(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        SpiffeId.parse(text)
    assert message in str(err.value)


def test_constructor_validates_too() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        SpiffeId("TD", "/x")
    with pytest.raises(ValueError, match="start with '/'"):
        SpiffeId("td", "x")


def test_for_service_and_istio_parts() -> None:
    sid = SpiffeId.for_service("shop.local", "default", "orders")
    assert str(sid) == "spiffe://shop.local/ns/default/sa/orders"
    assert sid.principal == "shop.local/ns/default/sa/orders"
    assert (sid.namespace, sid.service_account) == ("default", "orders")
    assert sid.is_workload
    with pytest.raises(ValueError, match="one non-empty path segment"):
        SpiffeId.for_service("shop.local", "default", "orders/../admin")
    with pytest.raises(ValueError, match="namespace 'a/sa/b' must be one"):
        SpiffeId.for_service("shop.local", "a/sa/b", "c")
    with pytest.raises(ValueError, match="service '' must be one"):
        SpiffeId.for_service("shop.local", "default", "")
    with pytest.raises(ValueError, match=re.escape("'..' segment")):
        SpiffeId.for_service("shop.local", "..", "orders")


@pytest.mark.parametrize(
    "text",
    ["spiffe://td", "spiffe://td/payments/web", "spiffe://td/ns/a/sa", "spiffe://td/x/a/sa/b"],
)
def test_not_istio_shaped(text: str) -> None:
    sid = SpiffeId.parse(text)
    assert sid.namespace is None
    assert sid.service_account is None


def test_trust_domain_id_is_not_a_workload() -> None:
    assert not SpiffeId.for_trust_domain("td").is_workload
    assert str(SpiffeId.for_trust_domain("td")) == "spiffe://td"


def test_frozen_and_hashable() -> None:
    sid = SpiffeId.parse("spiffe://td/a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sid.path = "/b"  # type: ignore[misc]
    assert {sid, SpiffeId.parse("spiffe://td/a")} == {sid}


_td = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_", min_size=1, max_size=40)
_segment = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_",
    min_size=1,
    max_size=20,
).filter(lambda s: s not in (".", ".."))


@given(_td, st.lists(_segment, max_size=8))
def test_round_trip(td: str, segments: list[str]) -> None:
    text = "spiffe://" + td + "".join("/" + s for s in segments)
    sid = SpiffeId.parse(text)
    assert str(sid) == text
    assert SpiffeId.parse(str(sid)) == sid
    assert sid.principal == text.removeprefix("spiffe://")


@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_value_error(text: str) -> None:
    try:
        sid = SpiffeId.parse(text)
    except ValueError:
        return
    assert str(sid) == text


@given(st.text(max_size=30).map(lambda s: "spiffe://td/" + s))
def test_accepted_paths_respect_the_charset(text: str) -> None:
    try:
        sid = SpiffeId.parse(text)
    except ValueError:
        return
    for seg in sid.path.split("/")[1:]:
        assert seg not in ("", ".", "..")
        assert all(c.isascii() and (c.isalnum() or c in ".-_") for c in seg)
