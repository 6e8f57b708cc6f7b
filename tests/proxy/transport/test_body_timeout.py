"""proxy.transport.streams.body_wait_s: how long a wait for a piece of request body may last."""

from __future__ import annotations

import pytest

from proxy.transport.streams import body_wait_s


@pytest.mark.parametrize(
    ("idle", "deadline", "now", "want"),
    [
        (30.0, 0.0, 100.0, 30.0),  # idle timeout alone
        (0.0, 0.0, 100.0, None),  # both off: no bound
        (0.0, 160.0, 100.0, 60.0),  # request timeout alone: what is left of it
        (30.0, 110.0, 100.0, 10.0),  # the request deadline comes first
        (30.0, 200.0, 100.0, 30.0),  # the idle timeout comes first
        (30.0, 100.0, 100.0, 0.0),  # deadline now: over
        (30.0, 90.0, 100.0, -10.0),  # deadline past: over (next_body raises at once)
    ],
)
def test_body_wait(idle: float, deadline: float, now: float, want: float | None) -> None:
    assert body_wait_s(idle, deadline, now) == want
