"""parse_duration: Istio/protobuf durations to float seconds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.config.duration import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("1.5s", 1.5), ("30s", 30.0), ("1m", 60.0), ("1h", 3600.0),
    ("1m30s", 90.0), ("250us", 0.00025), ("0", 0.0), ("0s", 0.0), (".5s", 0.5),
])
def test_valid(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10", "-1s", "abc", "1.5.s", "", "1 s", "s", "1d", "+1s"])
def test_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.text(max_size=40))
def test_never_raises_anything_but_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert seconds >= 0


@given(st.integers(min_value=1, max_value=10**7))
def test_format_then_parse_round_trips_milliseconds(ms: int) -> None:
    assert parse_duration(format_duration(ms / 1000)) == pytest.approx(ms / 1000)
