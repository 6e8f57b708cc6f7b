"""The fast path: a complete, plain keep-alive request served from the channels' callbacks,
with no coroutine step at all.

Why: on this machine a coroutine resumed per arrival of bytes (downstream request, upstream
response: two per request and hop) costs more CPU than everything else the proxy does for a
small request (docs/http1.md, BENCHMARKS.md). So when a whole request is parsed while the
connection's coroutine waits for a head, `FastConn.on_events` takes it right there: the
stack's `prepare` (the same synchronous decisions the coroutine path makes), an idle pooled
upstream connection, the request written; the upstream channel then calls `on_upstream`,
which writes a complete, final, not-to-be-retried response downstream and finishes the
request (telemetry included) in that same callback.

Everything else is handed over to the coroutine path, which carries on from where the fast
path stopped (`forward.Started`): no idle connection, a response to retry or to stream, an
upstream failure, a local step that waits (a fault delay), a route with a timeout or a
perTryTimeout (this path keeps no timers), Upgrade, 100-continue, bodies not
complete or over the replay buffer, HTTP/1.0, `Connection: close`. The coroutine path alone
serves every request when the fast path is off (MESH_FASTPATH=0), which is how the bench
compares the two.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from proxy.forwarding.forward import (
    RESPONSE_DROP,
    Prep,
    Result,
    Started,
    request_head,
    response_head,
)
from proxy.http1 import (
    LAST_CHUNK,
    Data,
    EndOfMessage,
    Event,
    ProtocolError,
    Request,
    Response,
    UpstreamClosed,
)
from proxy.policy.retry import Outcome, should_retry
from proxy.tracing import Hop
from proxy.transport.headwatch import HeadWatch
from proxy.transport.streams import Channel, Conn, EventStream, Marker

if TYPE_CHECKING:
    from proxy.runtime import DataPlane
    from proxy.snapshot import ProxySnapshot

log = logging.getLogger("meshctl.proxy.fastpath")

ENABLED: Final = os.environ.get("MESH_FASTPATH", "1") != "0"
_now: Final = time.monotonic
_NO_EXCLUDE: Final[frozenset[str]] = frozenset()

Prepare = Callable[[Request, "ProxySnapshot"], Prep]
# (snapshot, result, start, request, hop, end): start and end are time.monotonic() readings.
Done = Callable[["ProxySnapshot", Result, float, Request, Hop | None, float], None]


class Handover(Marker):
    """Queued for the connection's coroutine: finish this request (`resume`)."""

    __slots__ = ("prep", "req", "resume", "snap", "start")

    def __init__(
        self,
        req: Request,
        snap: ProxySnapshot,
        start: float,
        prep: Prep,
        resume: Callable[[], Awaitable[Result]],
    ) -> None:
        self.req, self.snap, self.start, self.prep, self.resume = req, snap, start, prep, resume


class Close(Marker):
    """Queued for the connection's coroutine: the connection is done (close it)."""

    __slots__ = ()


CLOSE: Final = Close()


def _whole(pending: list[Event | Marker]) -> tuple[int, int]:
    """(index of the EndOfMessage of the head at pending[0], 0 if not there yet; the body
    bytes queued after the head)."""
    size = 0
    for i in range(1, len(pending)):
        ev = pending[i]
        if type(ev) is EndOfMessage:
            return i, size
        if isinstance(ev, Data):
            size += len(ev.data)
    return 0, size


def _noop() -> None:
    """The downstream listener while a request is in flight: bytes stay queued, in order."""


_NOOP: Final = _noop  # a static: a module function used as a value is a dict lookup


class FastConn:
    """The fast path of one downstream connection (see the module docstring)."""

    __slots__ = (
        "body",
        "conn",
        "done",
        "down",
        "on_events_cb",
        "on_raw_cb",
        "on_upstream_cb",
        "plane",
        "prep",
        "prepare",
        "req",
        "resume",
        "snap",
        "start",
        "target",
        "telemetry",
        "watch",
        "writer",
    )

    def __init__(
        self,
        plane: DataPlane,
        down: EventStream,
        writer: Channel,
        prepare: Prepare,
        done: Done,
        resume: Callable[[Request, Prep, Started], Awaitable[Result]],
        watch: HeadWatch,
    ) -> None:
        self.plane = plane
        self.down = down
        self.writer = writer
        self.prepare = prepare
        self.done = done
        self.resume = resume  # the coroutine path, from a Started request
        self.watch = watch
        self.conn: Conn | None = None
        self.telemetry = plane.telemetry
        # The listeners, bound once: a bound method made per request costs ~600 instructions
        # (a cycle with self, collected with the connection).
        self.on_events_cb: Callable[[], None] = self.on_events
        self.on_upstream_cb: Callable[[], None] = self.on_upstream
        self.on_raw_cb: Callable[[bytes], bool] = self.on_raw

    # -- downstream ----------------------------------------------------------------------

    def on_events(self) -> None:
        """The downstream listener while the coroutine waits for a head."""
        try:
            self._on_events()
        except Exception:  # a bug here must not kill the event loop's callback
            log.exception("fast path failed; the connection is closed")
            self._close()

    def _on_events(self) -> None:
        down = self.down
        pending = down.pending
        if down.error is not None or down.eof or down.timed_out:
            self._wake()  # the coroutine answers the error or sees the end
            return
        if not pending:
            return  # the head is not complete yet
        req = pending[0]
        plane = self.plane
        if (
            type(req) is not Request
            or req.upgrade is not None
            or req.expect_continue
            or not req.keep_alive
            or req.version != b"1.1"
            or plane.draining
        ):
            self._wake()
            return
        if len(pending) == 2 and type(pending[1]) is EndOfMessage:  # no body: the usual
            pending.clear()
            body = b""
        else:
            end, _ = _whole(pending)
            if not end:
                # A body still arriving (or not begun): the coroutine reads it under the body
                # timeouts (proxy.transport.streams.next_body: a stall or a trickle is answered 408,
                # where waiting here only the header timeout would end it, silently), and
                # streams it past the replay buffer. Clients and proxies write a small
                # request's head and body at once, so the usual request never comes here.
                self._wake()
                return
            pending.pop(0)
            pieces = [pending.pop(0) for _ in range(end - 1)]
            body = b"".join([ev.data for ev in pieces if type(ev) is Data]) if pieces else b""
            pending.pop(0)  # EndOfMessage (trailers of a complete body are not forwarded)
        snap = plane.snapshot
        assert snap is not None
        waiting = self.watch.waiting
        if down in waiting:  # a dict's pop with a default is a generic call in compiled code
            del waiting[down]
        down.listener = _NOOP
        down.busy = True
        plane.inflight += 1
        # One clock reading for this callback: the request's start, the pool's idle check
        # and the time it is sent upstream are the same moment to within microseconds.
        now = _now()
        self.req, self.snap, self.start, self.body = req, snap, now, body
        prep = self.prep = self.prepare(req, snap)
        plan = prep.plan
        if plan is None or prep.pool is None or prep.later is not None:
            if prep.later is not None:
                self._handover(Started(body))
                return
            assert prep.result is not None
            if prep.reply:
                self.writer.write(prep.reply)
            self._finish(prep.result, _now())
            return
        retry = plan.retry
        if (
            plan.mirror is not None
            or plan.timeout_s is not None
            or (retry is not None and retry.per_try_timeout_s is not None)
        ):
            # This path keeps no timer: a route timeout or a perTryTimeout (which bounds each
            # whole attempt, connecting included) is for the coroutine path to enforce.
            self._handover(Started(body))
            return
        target = plan.admission.pick(_NO_EXCLUDE)
        if target is None:
            self._handover(Started(body))  # the coroutine answers 503 UH
            return
        conn = prep.pool.take_idle(target.key, target.idle_timeout_s, now)
        if conn is None:
            self._handover(Started(body, target))  # it connects (with its timeout)
            return
        self.target = target
        self.conn = conn
        conn.sent_at = now
        conn.parser.expect(req.method, None)
        has_body = req.chunked or (req.content_length or 0) > 0
        conn.writer.write(request_head(req, plan, len(body) if has_body else None, False) + body)
        events = conn.events
        events.listener = self.on_upstream_cb
        if plan.response_headers is None:  # a whole response can go on as it came
            events.raw = self.on_raw_cb

    # -- upstream: a whole response in one read ------------------------------------------

    def on_raw(self, data: bytes) -> bool:
        """Offered the upstream's bytes before its parser (`EventStream.raw`): True when
        they were one whole, plain response (ResponseParser.whole) and it went downstream
        here, with no event made; False leaves them to the parser and `on_upstream`."""
        try:
            return self._on_raw(data)
        except Exception:
            log.exception("fast path failed; the connection is closed")
            if self.conn is not None:
                self.conn.close()
            self._close()
            return True

    def _on_raw(self, data: bytes) -> bool:
        conn = self.conn
        assert conn is not None
        events = conn.events
        if events.pending or events.error is not None or events.eof:
            return False
        parser = conn.parser
        whole = parser.whole(data, RESPONSE_DROP)
        if whole is None:
            return False
        status, out, keep_alive, size = whole
        plan = self.prep.plan
        assert plan is not None
        retry = plan.retry
        if (
            retry is not None
            and status >= retry.status_floor
            and retry.attempts
            and should_retry(retry, Outcome(status=status), self.req.method, True)
        ):
            return False  # on_upstream decides, from the events
        parser.answered(keep_alive)
        events.listener = events.raw = None
        self.conn = None
        now = _now()
        target = self.target
        if target.report is not None:
            target.report(status, False, now - conn.sent_at)
        self.telemetry.fast_path_whole_responses += 1
        self._sent(conn, status, out, keep_alive, size, True, now)
        return True

    # -- upstream ------------------------------------------------------------------------

    def on_upstream(self) -> None:
        """The upstream listener while this connection's request waits for its response."""
        try:
            self._on_upstream()
        except Exception:
            log.exception("fast path failed; the connection is closed")
            if self.conn is not None:
                self.conn.close()
            self._close()

    def _on_upstream(self) -> None:
        conn = self.conn
        assert conn is not None
        events = conn.events
        pending = events.pending
        while pending and type(first := pending[0]) is Response and first.informational:
            pending.pop(0)  # 1xx before the final response (as _response_head skips them)
        target = self.target
        if not pending:
            if events.error is None and not events.eof:
                return  # more to come
            # The upstream broke framing (502) or went away before answering.
            events.listener = events.raw = None
            conn.close()
            outcome = (
                Outcome(status=502, reset=True, bytes_sent_upstream=True)
                if isinstance(events.error, ProtocolError)
                and not isinstance(events.error, UpstreamClosed)
                else Outcome(reset=True, bytes_sent_upstream=True)
            )
            if target.report is not None:
                target.report(outcome.status, True, time.monotonic() - conn.sent_at)
            self.conn = None
            self._handover(Started(self.body, target, (outcome, None, None)))
            return
        resp = pending[0]
        assert type(resp) is Response
        n = len(pending)
        if n == 3 and type(pending[2]) is EndOfMessage and type(ev := pending[1]) is Data:
            end, size = 2, len(ev.data)  # the usual: a small body in the same read
        elif n == 2 and type(pending[1]) is EndOfMessage:
            end, size = 1, 0
        else:
            end, size = _whole(pending)
        if not end and size < 65536 and events.error is None and not events.eof:
            return  # a small body still arriving: wait for it here
        pending.pop(0)
        events.listener = events.raw = None
        self.conn = None
        req = self.req
        # One clock reading for this callback: the response is complete here; writing it
        # downstream is microseconds, so it also ends the request (its duration) and the
        # connection's use (the pool's idle clock).
        now = _now()
        if target.report is not None:
            target.report(resp.status, False, now - conn.sent_at)
        plan = self.prep.plan
        assert plan is not None
        retry = plan.retry
        status = resp.status
        if (
            not end
            or status == 101
            or (
                retry is not None
                and status >= retry.status_floor  # a 2xx never gets this far
                and retry.attempts
                and should_retry(retry, Outcome(status=status), req.method, True)
            )
        ):
            # To retry, to stream, or a switch: the coroutine path from here.
            outcome = Outcome(status=status, bytes_sent_upstream=True)
            self._handover(Started(self.body, target, (outcome, conn, resp)))
            return
        body = b""
        if end == 2 and len(pending) == 2 and resp.content_length is not None:
            piece = pending[0]  # the usual: the whole body, sent as it came
            assert type(piece) is Data
            body = piece.data  # rendered after the head into one buffer (no concatenation)
        head, chunk_out, keep, until_close = response_head(req, resp, plan, True, body)
        if end == len(pending) and not chunk_out and end <= 2:
            # The usual: [Data, EndOfMessage] or [EndOfMessage] left, nothing after them.
            if end == 2 and not body:
                piece = pending[0]
                assert type(piece) is Data
                head += piece.data
            pending.clear()
        else:
            out = [head]
            for _ in range(end - 1):
                data = pending.pop(0).data  # type: ignore[union-attr]
                if data:
                    out.append(b"%x\r\n%s\r\n" % (len(data), data) if chunk_out else data)
            pending.pop(0)  # EndOfMessage
            if chunk_out:
                out.append(LAST_CHUNK)
            head = b"".join(out)
        self._sent(conn, status, head, resp.keep_alive and not until_close, size, keep, now)

    def _sent(
        self, conn: Conn, status: int, out: bytes, reuse: bool, size: int, keep: bool, now: float
    ) -> None:
        """The response (`out`: all of it) goes downstream and the request ends: the
        upstream connection (reported, detached) back to the pool (`reuse`) or closed."""
        target = self.target
        self.writer.write(out)
        self.telemetry.fast_path_requests += 1
        if reuse:
            pool = self.prep.pool
            assert pool is not None  # the fast path took the connection from it
            pool.put(conn, target.max_requests, now)
        else:
            conn.close()
        self._finish(Result(status, "-", len(self.body), size, conn.key, 1, keep), now)

    # -- endings -------------------------------------------------------------------------

    def _finish(self, result: Result, now: float) -> None:
        prep = self.prep
        plane = self.plane
        self.down.busy = False
        try:
            if prep.admission is not None:
                prep.admission.release()
        finally:
            plane.inflight -= 1
        self.done(self.snap, result, self.start, self.req, prep.hop, now)
        down = self.down
        if not result.keep_alive or plane.draining:
            self._close()
            return
        if down.pending or down.error is not None or down.eof:
            down.listener = self.on_events_cb
            self._on_events()  # pipelined, or arrived meanwhile
            return
        self.watch.start(down, self.writer, now)
        down.listener = self.on_events_cb
        down.channel.resume()

    def _handover(self, started: Started) -> None:
        req, prep = self.req, self.prep
        self.telemetry.counters["meshctl_proxy_fast_path_handovers_total"] += 1

        async def resume() -> Result:
            return await self.resume(req, prep, started)

        self.down.pending.insert(0, Handover(req, self.snap, self.start, prep, resume))
        self._wake()

    def _close(self) -> None:
        self.down.pending.insert(0, CLOSE)
        self._wake()

    def _wake(self) -> None:
        """Give the connection (the request at the head of the queue) to the coroutine."""
        self.down.busy = False
        self.down.listener = None
        self.down.channel.wake()
