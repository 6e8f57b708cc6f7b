"""The downstream side of an HTTP/1.1 connection, shared by both stacks: read requests in
order (pipelining answered in order), bound the wait for each head (slow-loris) and for
each piece of a body (408), refuse broken framing with 400/431 and close, and stop between
requests when draining."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Final

from proxy.downstream import fastpath
from proxy.downstream.fastpath import Close, Done, FastConn, Handover, Prepare
from proxy.forwarding.forward import Prep, Result, Started, complete, local_reply
from proxy.http1 import ProtocolError, Request, RequestParser
from proxy.telemetry import SeriesMemo
from proxy.transport.streams import Channel, EventStream, PeerClosed

_now: Final = time.monotonic  # a static in the compiled core, not time's attribute per call

if TYPE_CHECKING:
    from proxy.runtime import DataPlane
    from proxy.snapshot import ProxySnapshot
    from proxy.tracing import Hop
    from registry.ca import SpiffeId


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


def recorder(plane: DataPlane, reporter: str, service: str | None, peer: SpiffeId | None) -> Done:
    """The `done` of serve_requests: each finished request recorded (DataPlane.record) as
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
        plane.record(
            snap, reporter, name, result, start, req, peer=peer, hop=hop, end=end, memo=memo
        )

    return done


async def serve_requests(
    plane: DataPlane,
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
    counters = plane.telemetry.counters
    watch = plane.head_watch
    waiting = watch.waiting
    transport = writer.transport
    down.body_idle_s = plane.settings.body_idle_timeout_s
    request_s = plane.settings.request_timeout_s

    async def resume(req: Request, prep: Prep, started: Started) -> Result:
        return await complete(req, down, writer, prep, started)

    fast = FastConn(plane, down, writer, prepare, done, resume, watch) if fastpath.ENABLED else None
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
            current = plane.snapshot  # read once: the request finishes on this snapshot
            assert current is not None
            snap = current
            start = _now()
            prep = prepare(req, snap)
            plane.inflight += 1
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
            plane.inflight -= 1
        done(snap, result, start, req, prep.hop, _now())
        if not result.keep_alive or not req.keep_alive or plane.draining:
            if down.parser.in_body:
                await delayed_close(down, writer)
            return
        if transport.get_write_buffer_size():
            try:
                await writer.drain()
            except ConnectionError:
                return
