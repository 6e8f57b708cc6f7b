"""Connection budgets (one per listener, a ceiling per source) and the flood trimmer."""

from __future__ import annotations

from collections import defaultdict

import pytest

from proxy import memory
from proxy.memory import FLOOD_CONNECTIONS, Trimmer
from proxy.transport.accept import Connections


def test_ceiling_and_per_source_ceiling() -> None:
    counters: dict[str, float] = defaultdict(float)
    c = Connections(limit=4, per_source=2)
    assert c.admit("10.0.0.1", counters) and c.admit("10.0.0.1", counters)
    assert not c.admit("10.0.0.1", counters)  # the third from one source
    assert c.admit("10.0.0.2", counters) and c.admit("10.0.0.3", counters)  # others get in
    assert not c.admit("10.0.0.4", counters)  # the listener's ceiling
    assert counters["meshctl_proxy_connections_refused_total"] == 2
    assert counters["meshctl_proxy_connections_source_refused_total"] == 1
    c.release("10.0.0.1")
    assert c.admit("10.0.0.1", counters)  # a slot of its own came back
    for source in ("10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"):
        c.release(source)
    assert c.open == 0 and c.by_source == {}  # nothing kept per source once closed


def test_no_per_source_ceiling_keeps_no_per_source_state() -> None:
    counters: dict[str, float] = defaultdict(float)
    c = Connections(limit=3)
    assert all(c.admit("10.0.0.1", counters) for _ in range(3))
    assert not c.admit("10.0.0.9", counters) and c.by_source == {}


def test_trimmer_trims_once_after_a_flood(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(memory, "_libc_trim", lambda: lambda: trims.append(1))
    t = Trimmer()
    assert not t.tick(10) and not t.tick(FLOOD_CONNECTIONS)  # growing: nothing to give back
    assert not t.tick(FLOOD_CONNECTIONS - 10)  # a small drop: not a flood
    assert not t.tick(3 * FLOOD_CONNECTIONS)
    assert t.tick(FLOOD_CONNECTIONS)  # fell by 2 x FLOOD_CONNECTIONS: trim
    assert not t.tick(FLOOD_CONNECTIONS - 1) and not t.tick(1)  # the peak was reset
    assert trims == [1] and t.trims == 1
