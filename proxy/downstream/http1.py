"""The downstream side of an HTTP/1.1 connection, shared by both stacks: read requests in
order (pipelining answered in order), bound the wait for each head (slow-loris) and for
each piece of a body (408), refuse broken framing with 400/431 and close, and stop between
requests when draining."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Final

from common.aio import spawn
from proxy.downstream import fastpath
from proxy.downstream.fastpath import Close, Done, FastConn, Handover, Prepare
from proxy.forwarding.forward import Prep, Result, Started, complete, local_reply
from proxy.http1 import ProtocolError, Request, RequestParser
from proxy.telemetry import SeriesMemo
from proxy.transport.streams import Channel, EventStream, PeerClosed

_now: Final = time.monotonic  # a static in the compiled core, not time's attribute per call

if TYPE_CHECKING:
    from proxy.main import Proxy
    from proxy.snapshot import ProxySnapshot
    from proxy.tracing import Hop
    from registry.ca import SpiffeId



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


def head_watch(proxy: Proxy) -> HeadWatch:
    watch = proxy.head_watch
    if watch is None:
        watch = proxy.head_watch = HeadWatch(proxy)
    return watch


DELAYED_CLOSE_S: Final = 1.0  # Envoy's delayed_close_timeout default


async def delayed_close(down: EventStream, writer: Channel) -> None:
    """Answered while the client was still sending a body (a 408, an app's early 413): drop
    what still arrives for up to a second (Envoy's delayed_close_timeout; RFC 9112 9.6's
    lingering close) before the connection is closed. Closed at once with those bytes
    unread, it would send a TCP reset, which can destroy the answer before the client (or
    the peer proxy relaying it) has read it."""
    down.channel.detach()  # no more parsing: the rest of the body is dropped unread
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()  # plain TCP: the client sees the end of the answer now
        async with asyncio.timeout(DELAYED_CLOSE_S):
            while await down.channel.read(65536):
                pass


def recorder(proxy: Proxy, reporter: str, service: str | None, peer: SpiffeId | None) -> Done:
    """The `done` of serve_requests: each finished request recorded (Proxy.record) as
    `reporter` ("source" or "destination") sees it, for `service` (None: this proxy's own
    service in the request's snapshot), from `peer` (the caller's verified identity)."""
    memo = SeriesMemo()  # one per connection: its label set repeats from request to request

    def done(
        snap: ProxySnapshot,
        result: Result,
        start: float,
        req: Request,
        hop: Hop | None,
        end: float,
    ) -> None:
        name = service if service is not None else (snap.me.name if snap.me else "")
        proxy.record(
            snap, reporter, name, result, start, req, peer=peer, hop=hop, end=end, memo=memo
        )

    return done


async def serve_requests(
    proxy: Proxy,
    reader: Channel,
    writer: Channel,
    prepare: Prepare,
    done: Done,
    initial: bytes = b"",
) -> None:
    """Serve requests until the client leaves; `initial` is what protocol detection read.

    `prepare` makes a request's synchronous decisions (proxy.forwarding.forward.Prep); the
    request is then carried by proxy.downstream.fastpath from the channels' callbacks when it
    can be, else here.
    """
    down = EventStream(reader, RequestParser(), initial)
    counters = proxy.telemetry.counters
    watch = head_watch(proxy)
    waiting = watch.waiting
    transport = writer.transport
    down.body_idle_s = proxy.opts.body_idle_timeout_s
    request_s = proxy.opts.request_timeout_s

    async def resume(req: Request, prep: Prep, started: Started) -> Result:
        return await complete(req, down, writer, prep, started)

    fast = FastConn(proxy, down, writer, prepare, done, resume, watch) if fastpath.ENABLED else None
    while True:
        try:
            # The whole head must arrive within the header timeout: a client sending one
            # byte a second (slow loris) is cut off instead of holding the slot forever.
            # With the fast path on, even an already parsed request (the first one of a new
            # connection usually is, pipelined ones too) is offered to it first.
            ev = down.poll() if fast is None else None
            if ev is None:
                watch.start(down, writer, _now())
                if fast is not None:
                    down.listener = fast.on_events
                    if down.pending or down.eof or down.error is not None:
                        fast.on_events()  # already parsed (pipelined, or with the detection)
                try:
                    ev = await down.next()
                finally:
                    down.listener = None
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
        if type(ev) is Close:
            return
        if type(ev) is Handover:  # the fast path began it (and counted it in flight)
            assert isinstance(ev, Handover)
            req, snap, start, prep = ev.req, ev.snap, ev.start, ev.prep
            job = ev.resume()
        else:
            assert isinstance(ev, Request)
            req = ev
            current = proxy.snapshot  # read once: the request finishes on this snapshot
            assert current is not None
            snap = current
            start = _now()
            prep = prepare(req, snap)
            proxy.inflight += 1
            job = complete(req, down, writer, prep, None)
        # The request timeout runs from the head's arrival to the body's end (next_body).
        down.body_deadline = start + request_s if request_s > 0 else 0.0
        try:
            result = await job
        except ProtocolError as exc:
            writer.write(local_reply(exc.status, "DPE", close=True))
            counters["meshctl_proxy_downstream_protocol_errors_total"] += 1
            return
        except (PeerClosed, ConnectionError):
            return
        finally:
            proxy.inflight -= 1
        done(snap, result, start, req, prep.hop, _now())
        if not result.keep_alive or not req.keep_alive or proxy.draining:
            if down.parser.in_body:
                await delayed_close(down, writer)
            return
        if transport.get_write_buffer_size():
            try:
                await writer.drain()
            except ConnectionError:
                return
