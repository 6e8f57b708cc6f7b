"""proxy/admin.py TapHub: inactive with no client, filtered fan-out, bounded per client."""

from __future__ import annotations

from collections import defaultdict

from proxy.admin import TAP_QUEUE, TapHub, tap_filter

EVENT = {"path": "/echo?x=1", "method": "GET", "status": 200, "direction": "inbound",
         "destination": "orders"}  # fmt: skip


async def test_fan_out_filters_and_bounds() -> None:
    counters: defaultdict[str, float] = defaultdict(float)
    hub = TapHub(counters)
    assert not hub.active  # Proxy.record skips the hub entirely
    everything = hub.subscribe(tap_filter({}))
    only_500 = hub.subscribe(tap_filter({"status": "500"}))
    echo_get = hub.subscribe(tap_filter({"path": "/echo", "method": "get"}))
    assert hub.active and hub.clients == 3
    for _ in range(TAP_QUEUE + 5):
        hub.publish(EVENT)
    assert everything.qsize() == TAP_QUEUE and echo_get.qsize() == TAP_QUEUE
    assert only_500.qsize() == 0
    assert counters["meshctl_proxy_tap_dropped_total"] == 10  # 5 each for two slow clients
    for q in (everything, only_500, echo_get):
        hub.unsubscribe(q)
    assert not hub.active and hub.clients == 0


def test_filter_fields() -> None:
    assert tap_filter({"direction": "inbound", "destination": "orders"})(EVENT)
    assert not tap_filter({"direction": "outbound"})(EVENT)
    assert not tap_filter({"path": "/status"})(EVENT)
