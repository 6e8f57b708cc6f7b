"""ProxyTracker: what an ACK, a NACK and a stream do to a proxy's state (clock injected)."""

from __future__ import annotations

from registry.server.proxies import ProxyTracker


def test_ack_nack_and_streams() -> None:
    now = [100.0]
    t = ProxyTracker(clock=lambda: now[0])
    t.stream_opened("p1", "spiffe://shop.local/ns/default/sa/orders", "orders")
    st = t.ack("p1", "spiffe://shop.local/ns/default/sa/orders", "orders", 3, ok=True,
               cert_not_after=5e9)
    assert (st.acked_version, st.nacked_version, st.cert_not_after, st.streams) == (3, 0, 5e9, 1)
    now[0] = 101.0
    st = t.ack("p1", st.identity, "orders", 4, ok=False, error="x" * 3000)
    assert (st.acked_version, st.nacked_version, len(st.nack_error)) == (3, 4, 2000)
    assert st.cert_not_after == 5e9 and st.last_seen == 101.0  # kept when not sent
    st = t.ack("p1", st.identity, "orders", 2, ok=True)  # a late ACK of an older version
    assert (st.acked_version, st.nacked_version) == (3, 4)
    assert t.connected() == 1
    t.stream_closed("p1")
    assert t.connected() == 0 and [p.proxy_id for p in t.all()] == ["p1"]
    t.ack("p0", "operator", "operator", 1, ok=True)
    assert [p.proxy_id for p in t.all()] == ["p0", "p1"]  # by service, then id
