"""ProxyTracker: what an ACK, a NACK and a stream do to a proxy's state (clock injected)."""

from __future__ import annotations

import pytest

from registry.server.proxies import GONE_TTL_FACTOR, NotYours, ProxyTracker

ORDERS = "spiffe://shop.local/ns/default/sa/orders"
FRONTEND = "spiffe://shop.local/ns/default/sa/frontend"


def test_ack_nack_and_streams() -> None:
    now = [100.0]
    t = ProxyTracker(clock=lambda: now[0])
    t.stream_opened("p1", ORDERS, "orders")
    st = t.ack("p1", ORDERS, "orders", 3, ok=True, cert_not_after=5e9)
    assert (st.acked_version, st.nacked_version, st.cert_not_after, st.streams) == (3, 0, 5e9, 1)
    now[0] = 101.0
    st = t.ack("p1", st.identity, "orders", 4, ok=False, error="x" * 3000)
    assert (st.acked_version, st.nacked_version, len(st.nack_error)) == (3, 4, 2000)
    assert st.cert_not_after == 5e9 and st.last_seen == 101.0  # kept when not sent
    st = t.ack("p1", st.identity, "orders", 2, ok=True)  # a late ACK of an older version
    assert (st.acked_version, st.nacked_version) == (3, 4)
    assert t.connected() == 1
    t.stream_closed("p1", ORDERS)
    assert t.connected() == 0 and [p.proxy_id for p in t.all()] == ["p1"]
    t.ack("p0", "operator", "operator", 1, ok=True)
    assert [p.proxy_id for p in t.all()] == ["p0", "p1"]  # by service, then id


def test_a_report_about_another_identitys_proxy_is_refused() -> None:
    t = ProxyTracker(clock=lambda: 0.0)
    t.stream_opened("orders-1", ORDERS, "orders")
    t.ack("orders-1", ORDERS, "orders", 3, ok=True, cert_not_after=5e9)
    with pytest.raises(NotYours, match="only report on itself"):
        t.ack("orders-1", FRONTEND, "frontend", 9, ok=False, error="spoofed", cert_not_after=1.0)
    t.stream_closed("orders-1", ORDERS)  # disconnected: still not frontend's to report on
    with pytest.raises(NotYours):
        t.ack("orders-1", FRONTEND, "frontend", 9, ok=False)
    (st,) = t.all()
    assert (st.identity, st.acked_version, st.nacked_version, st.cert_not_after) == (
        ORDERS, 3, 0, 5e9)


def test_a_made_up_row_gives_way_to_the_proxy_that_streams() -> None:
    t = ProxyTracker(clock=lambda: 0.0)
    t.ack("orders-9", FRONTEND, "frontend", 1, ok=False, error="squat")  # before orders-9 exists
    t.stream_opened("orders-9", ORDERS, "orders")
    assert [(p.identity, p.streams) for p in t.all()] == [(ORDERS, 1)]
    with pytest.raises(NotYours):
        t.ack("orders-9", FRONTEND, "frontend", 1, ok=False)


def test_rows_without_a_stream_are_capped_per_identity() -> None:
    now = [0.0]
    t = ProxyTracker(clock=lambda: now[0], per_identity=10)
    t.stream_opened("orders-1", ORDERS, "orders")
    for i in range(1000):
        now[0] = float(i)
        t.ack(f"fake-{i}", FRONTEND, "frontend", 1, ok=False)
    rows = {p.proxy_id for p in t.all()}
    assert len(t) == 11 and "orders-1" in rows  # the newest 10 made-up ids, and orders-1
    assert rows - {"orders-1"} == {f"fake-{i}" for i in range(990, 1000)}
    # Live streams do not count against the cap (they are bounded by connections) and are
    # never evicted: only the rows without one give way.
    t2 = ProxyTracker(clock=lambda: now[0], per_identity=2)
    for i in range(3):
        t2.stream_opened(f"f-{i}", FRONTEND, "frontend")
    for i in range(5):
        now[0] += 1
        t2.ack(f"x-{i}", FRONTEND, "frontend", 1, ok=True)
    assert sorted(p.proxy_id for p in t2.all()) == ["f-0", "f-1", "f-2", "x-3", "x-4"]


def test_rows_without_a_stream_expire() -> None:
    now = [0.0]
    t = ProxyTracker(clock=lambda: now[0])
    t.stream_opened("live", ORDERS, "orders")
    t.stream_opened("gone", ORDERS, "orders")
    t.stream_closed("gone", ORDERS)
    t.ack("made-up", FRONTEND, "frontend", 1, ok=True)
    now[0] = 30.0
    assert t.expire(30.0) == []  # not yet past the TTL
    now[0] = 31.0
    assert t.expire(30.0) == ["made-up"]  # report-only: one TTL
    now[0] = 30.0 * GONE_TTL_FACTOR + 1
    assert t.expire(30.0) == ["gone"]  # a proxy that went away: listed for longer
    assert [p.proxy_id for p in t.all()] == ["live"]  # an open stream never expires
