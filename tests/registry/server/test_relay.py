"""AdminRelay: a relayed page is answered only by the identity holding that proxy's stream."""

from __future__ import annotations

import asyncio

import pytest

from common.aio import spawn
from registry.server.relay import AdminRelay

ORDERS = "spiffe://shop.local/ns/default/sa/orders"
FRONTEND = "spiffe://shop.local/ns/default/sa/frontend"


class _Stream:
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.lines.append(data)


def test_only_the_stream_holder_answers() -> None:
    async def scenario() -> None:
        relay = AdminRelay()
        stream = _Stream()
        relay.opened("orders-1", stream, ORDERS)  # type: ignore[arg-type]
        asked = spawn(relay.ask("orders-1", "/stats"))
        await asyncio.sleep(0)
        assert stream.lines and b'"path": "/stats"' in stream.lines[0]
        [n] = relay.pending
        forged = {"proxy_id": "orders-1", "request": n, "status": 200, "body": "forged"}
        assert "not to this caller" in str(relay.answer(FRONTEND, forged))
        wrong_id = {**forged, "proxy_id": "frontend-1"}
        assert "not to this caller" in str(relay.answer(ORDERS, wrong_id))
        assert relay.answer(ORDERS, {**forged, "body": "real"}) is None
        assert await asked == (200, "real")
        assert not relay.pending

    asyncio.run(scenario())


def test_closed_stream_is_forgotten_only_if_it_is_the_current_one() -> None:
    relay = AdminRelay()
    old, new = _Stream(), _Stream()
    relay.opened("p", old, ORDERS)  # type: ignore[arg-type]
    relay.opened("p", new, ORDERS)  # type: ignore[arg-type]  # a reconnect
    relay.closed("p", old)  # type: ignore[arg-type]
    assert relay.streams["p"][0] is new


def _tap_lines(relay: AdminRelay, stream: _Stream) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in stream.lines if b'"type": "tap"' in line]


def test_relayed_taps_are_bounded_per_proxy_and_answered_only_by_the_holder() -> None:
    from aiohttp import web

    from registry.server import relay as mod

    async def scenario() -> None:
        relay = AdminRelay()
        stream = _Stream()
        relay.opened("orders-1", stream, ORDERS)  # type: ignore[arg-type]
        taps = [await relay.open_tap("orders-1", {"path": "/x", "max": "3", "evil": "1"})
                for _ in range(mod.TAP_PER_PROXY)]
        try:
            await relay.open_tap("orders-1", {})
            raise AssertionError("a tap over the per-proxy limit was opened")
        except web.HTTPTooManyRequests as exc:
            assert "too many taps" in str(exc.text)
        asked = _tap_lines(relay, stream)
        assert len(asked) == mod.TAP_PER_PROXY
        assert asked[0]["query"] == {"path": "/x"}  # /tap's filters only
        n = taps[0].request
        assert "not to this caller" in str(relay.tap_for(FRONTEND, "orders-1", n))
        assert "not to this caller" in str(relay.tap_for(ORDERS, "frontend-1", n))
        assert relay.tap_for(ORDERS, "orders-1", n) is taps[0]
        assert "answered already" in str(relay.tap_for(ORDERS, "orders-1", n))
        relay.close_tap(taps[1])  # the operator left: a place is free again
        await relay.open_tap("orders-1", {})

    asyncio.run(scenario())


def test_a_slow_operator_loses_lines_not_memory_and_is_told() -> None:
    from registry.server import relay as mod

    async def scenario() -> None:
        relay = AdminRelay()
        relay.opened("orders-1", _Stream(), ORDERS)  # type: ignore[arg-type]
        tap = await relay.open_tap("orders-1", {})
        relay.tap_for(ORDERS, "orders-1", tap.request)
        for i in range(mod.TAP_QUEUE + 50):
            tap.offer(b'{"type":"request","n":%d}' % i)
        assert len(tap.queue) == mod.TAP_QUEUE and tap.dropped == 50
        relay.closed("orders-1", relay.streams["orders-1"][0])  # the proxy went away
        got = [line async for line in tap.lines()]
        assert len(got) == mod.TAP_QUEUE + 2
        assert b'"type": "dropped", "count": 50' in got[-2]
        assert b"disconnected from the registry" in got[-1] and b'"type": "end"' in got[-1]

    asyncio.run(scenario())


def test_a_relayed_tap_ends_at_its_time_limit_and_when_the_proxy_never_answers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.server import relay as mod

    async def scenario() -> None:
        relay = AdminRelay(tap_max_s=0.2)
        relay.opened("orders-1", _Stream(), ORDERS)  # type: ignore[arg-type]
        tap = await relay.open_tap("orders-1", {})
        relay.tap_for(ORDERS, "orders-1", tap.request)
        async with asyncio.timeout(5):
            got = [line async for line in tap.lines()]
        assert len(got) == 1 and b"lasts 0 s at most: run it again" in got[0], got
        assert tap.done.is_set()  # the proxy's side is answered to its end too
        mute = await relay.open_tap("orders-1", {})  # a proxy that never posts its reply
        monkeypatch.setattr(mod, "REPLY_TIMEOUT_S", 0.1)
        async with asyncio.timeout(5):
            got = [line async for line in mute.lines()]
        assert len(got) == 1 and b"did not start the tap within" in got[0], got

    asyncio.run(scenario())
