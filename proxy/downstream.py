"""The downstream side of an HTTP/1.1 connection, shared by both stacks: read requests in
order (pipelining answered in order), bound the wait for each head (slow-loris), refuse
broken framing with 400/431 and close, and stop between requests when draining."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from meshctl.aio import spawn
from proxy.forward import Result, local_reply
from proxy.http1 import ProtocolError, Request, RequestParser
from proxy.streams import Channel, EventStream, PeerClosed

if TYPE_CHECKING:
    from proxy.main import Proxy
    from proxy.snapshot import ProxySnapshot

Handle = Callable[[Request, EventStream, Channel, "ProxySnapshot"], Awaitable[Result]]
Done = Callable[["ProxySnapshot", Result, float, Request], None]


class HeadWatch:
    """The header timeout of every connection of a proxy, kept by one sweeper task.

    A timer per request (asyncio.timeout) costs a timer handle, two lookups of the running
    loop and a cancellation per request; here a connection waiting for a head costs one dict
    entry, and one task wakes every quarter timeout (at most every second) to cut off the
    ones past their deadline (as Envoy's request_headers_timeout; the cut comes up to that
    period late). A cut connection's stream is marked, so its reader ends quietly.
    """

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.waiting: dict[EventStream, tuple[float, Channel]] = {}
        self.task: asyncio.Task[None] | None = None

    def start(self, down: EventStream, writer: Channel, now: float) -> None:
        self.waiting[down] = (now + self.proxy.opts.header_timeout_s, writer)
        if self.task is None:
            self.task = spawn(self._sweep(), name="header-timeouts")

    async def _sweep(self) -> None:
        try:
            while self.waiting:
                await asyncio.sleep(min(1.0, self.proxy.opts.header_timeout_s / 4))
                now = time.monotonic()
                expired = [(d, w) for d, (t, w) in self.waiting.items() if t <= now]
                counters = self.proxy.telemetry.counters
                for down, writer in expired:
                    del self.waiting[down]
                    down.timed_out = True
                    counters["meshctl_proxy_downstream_header_timeouts_total"] += 1
                    with contextlib.suppress(Exception):
                        writer.transport.abort()
        finally:
            self.task = None


_WATCHES: weakref.WeakKeyDictionary[Proxy, HeadWatch] = weakref.WeakKeyDictionary()


def head_watch(proxy: Proxy) -> HeadWatch:
    watch = _WATCHES.get(proxy)
    if watch is None:
        watch = _WATCHES[proxy] = HeadWatch(proxy)
    return watch


async def serve_requests(
    proxy: Proxy,
    reader: Channel,
    writer: Channel,
    handle: Handle,
    done: Done,
    initial: bytes = b"",
) -> None:
    """Serve requests until the client leaves; `initial` is what protocol detection read."""
    down = EventStream(reader, RequestParser(), initial)
    counters = proxy.telemetry.counters
    watch = head_watch(proxy)
    waiting = watch.waiting
    transport = writer.transport
    while True:
        try:
            # The whole head must arrive within the header timeout: a client sending one
            # byte a second (slow loris) is cut off instead of holding the slot forever.
            ev = down.poll()
            if ev is None:
                watch.start(down, writer, time.monotonic())
                try:
                    ev = await down.next()
                finally:
                    waiting.pop(down, None)
        except (PeerClosed, ConnectionError):
            return
        except ProtocolError as exc:
            if down.timed_out:  # cut off by the header timeout: the reader saw the abort
                return
            writer.write(local_reply(exc.status, "DPE", close=True))
            counters["meshctl_proxy_downstream_protocol_errors_total"] += 1
            return
        if down.timed_out:
            return
        assert isinstance(ev, Request)
        snap = proxy.snapshot  # read once: the request finishes on this snapshot
        assert snap is not None
        start = time.monotonic()
        proxy.inflight += 1
        try:
            result = await handle(ev, down, writer, snap)
        except ProtocolError as exc:
            writer.write(local_reply(exc.status, "DPE", close=True))
            counters["meshctl_proxy_downstream_protocol_errors_total"] += 1
            return
        except (PeerClosed, ConnectionError):
            return
        finally:
            proxy.inflight -= 1
        done(snap, result, start, ev)
        if not result.keep_alive or not ev.keep_alive or proxy.draining:
            return
        if transport.get_write_buffer_size():
            try:
                await writer.drain()
            except ConnectionError:
                return
