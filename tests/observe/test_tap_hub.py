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


class _Proxy:
    """What proxy.admin's tap reads of a Proxy: its id, service and hub."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.proxy_id = "orders-1"
        self.opts = SimpleNamespace(service="orders")
        self.tap = TapHub(defaultdict(float))


async def test_a_relayed_tap_follows_the_hub_and_stops_with_its_reader() -> None:
    import json

    from proxy.admin import relayed_tap

    proxy = _Proxy()
    lines = relayed_tap(proxy, {"path": "/echo"})  # type: ignore[arg-type]
    assert json.loads(await anext(lines))["type"] == "tap"  # live from here
    assert proxy.tap.clients == 1
    proxy.tap.publish({**EVENT, "path": "/other"})
    proxy.tap.publish(EVENT)
    got = json.loads(await anext(lines))
    assert (got["type"], got["path"]) == ("request", "/echo?x=1")
    await lines.aclose()  # the registry ended the relay: the proxy stops at once
    assert proxy.tap.clients == 0 and not proxy.tap.active


async def test_a_relayed_tap_refused_by_the_proxy_says_why() -> None:
    import json

    from proxy.admin import TAP_MAX_CLIENTS, relayed_tap

    proxy = _Proxy()
    for _ in range(TAP_MAX_CLIENTS):
        proxy.tap.subscribe(tap_filter({}))
    got = [json.loads(line) async for line in relayed_tap(proxy, {})]  # type: ignore[arg-type]
    assert got == [{"type": "end", "proxy": "orders-1",
                    "reason": "proxy orders-1 refused the tap: too many tap clients"}]
    assert proxy.tap.clients == TAP_MAX_CLIENTS
