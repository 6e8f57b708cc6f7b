"""AdminRelay: a relayed page is answered only by the identity holding that proxy's stream."""

from __future__ import annotations

import asyncio

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
