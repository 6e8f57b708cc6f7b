"""The header timeout of every downstream connection of a proxy, kept by one sweeper task.

A timer per request (asyncio.timeout) costs a timer handle, two lookups of the running
loop and a cancellation per request; here a connection waiting for a head costs one dict
entry, and one task wakes every quarter timeout (at most every second) to cut off the
ones past their deadline (as Envoy's request_headers_timeout; the cut comes up to that
period late). A cut connection's stream is marked, so its reader ends quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from common.aio import spawn
from proxy.transport.streams import Channel, EventStream


class HeadWatch:
    def __init__(self, timeout_s: float, counters: dict[str, float]) -> None:
        self.timeout_s = timeout_s
        self.counters = counters
        self.waiting: dict[EventStream, tuple[float, Channel]] = {}
        self.task: asyncio.Task[None] | None = None  # the sweeper, while anyone waits

    def start(self, down: EventStream, writer: Channel, now: float) -> None:
        self.waiting[down] = (now + self.timeout_s, writer)
        if self.task is None:
            self.task = spawn(self._sweep(), name="header-timeouts")

    async def _sweep(self) -> None:
        try:
            while self.waiting:
                await asyncio.sleep(min(1.0, self.timeout_s / 4))
                now = time.monotonic()
                expired = [(d, w) for d, (t, w) in self.waiting.items() if t <= now]
                counters = self.counters
                for down, writer in expired:
                    del self.waiting[down]
                    down.timed_out = True
                    counters["meshctl_proxy_downstream_header_timeouts_total"] += 1
                    with contextlib.suppress(Exception):
                        writer.transport.abort()
        finally:
            self.task = None
