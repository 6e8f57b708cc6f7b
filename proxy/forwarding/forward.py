"""One HTTP/1.1 request forwarded upstream: body replay buffer, attempts, response streaming.

Shared by the outbound stack (app -> peer proxy over mTLS) and the inbound one (peer proxy
-> app on localhost); each passes how to pick and dial an upstream. Bodies are streamed:
only a request body up to REPLAY_LIMIT is held, so that it can be sent again on a retry.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from common.aio import spawn
from proxy.http1 import (
    HOP_BY_HOP,
    LAST_CHUNK,
    Data,
    EndOfMessage,
    ProtocolError,
    Request,
    RequestParser,
    Response,
    UpstreamClosed,
    encode_chunk,
    render_request_head,
    render_response_head,
    strip_hop_by_hop,
)
from proxy.http1.render import forward_request_head, forward_response_head
from proxy.policy.retry import Outcome, RetryParams, backoff, should_retry
from proxy.tracing import Hop
from proxy.transport.streams import (
    BodyTimeout,
    Channel,
    Conn,
    Connector,
    ConnLimiter,
    EventStream,
    PeerClosed,
    Pool,
    PoolOverflow,
    next_body,
)
from proxy.transport.tcp import relay

log = logging.getLogger("meshctl.proxy.forward")
# Linkerd never retries a request whose body is over 64 KiB; we keep at most that much.
REPLAY_LIMIT: Final = 64 * 1024
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_RNG: Final = random.Random()

Headers = list[tuple[bytes, bytes]]

LOCAL_TEXT: Final = {
    "UH": b"no healthy upstream",
    "UF": b"upstream connect error or disconnect/reset before headers. "
    b"reset reason: connection failure",
    "UC": b"upstream connect error or disconnect/reset before headers. "
    b"reset reason: connection termination",
    "UT": b"upstream request timeout",
    "UO": b"upstream overflow",
    "NR": b"no route",
    "URX": b"upstream retry limit exceeded",
    "FI": b"fault filter abort",
    "UPE": b"upstream protocol error",
    "RL": b"local_rate_limited",
    "RBAC": b"RBAC: access denied",
    "SI": b"stream timeout",  # Envoy's words for its stream idle timeout
}


def local_reply(
    status: int, flag: str, *, close: bool = False, extra: Headers | None = None
) -> bytes:
    body = LOCAL_TEXT.get(flag, b"")
    headers: Headers = [
        (b"content-type", b"text/plain"),
        (b"content-length", b"%d" % len(body)),
        (b"server", b"meshctl"),
    ]
    if extra:
        headers.extend(extra)
    if close:
        headers.append((b"connection", b"close"))
    return render_response_head(status, _REASONS.get(status, b""), headers) + body


_REASONS: Final = {
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


@dataclass(slots=True)
class Target:
    """Where one attempt goes: a pool key and how to dial it, and whom to tell how it went."""

    key: str
    connect: Connector
    connect_timeout_s: float
    max_requests: int = 0  # DestinationRule http.maxRequestsPerConnection (0: unlimited)
    limiter: ConnLimiter | None = None
    idle_timeout_s: float | None = None
    # (status or None, local-origin failure, latency): feeds outlier detection and EWMA.
    report: Callable[[int | None, bool, float], None] | None = None
    # The endpoint's identity (proxy.forwarding.cluster.endpoint_key, "ip:port"): what the
    # balancer picks and a retry excludes. Not `key`, which names a pool of connections.
    endpoint: str = ""


# Result, Plan, Prep and Started are built once per request: each writes its __init__ out
# (init=False), which mypyc compiles to C; the one @dataclass generates stays interpreted
# even in the compiled core (proxy/compiled, docs/performance.md).


@dataclass(slots=True, init=False)
class Result:
    status: int
    flags: str
    req_bytes: int
    resp_bytes: int
    upstream: str
    attempts: int
    keep_alive: bool  # the downstream connection may carry another request

    def __init__(
        self,
        status: int,
        flags: str,
        req_bytes: int,
        resp_bytes: int,
        upstream: str,
        attempts: int,
        keep_alive: bool,
    ) -> None:
        self.status = status
        self.flags = flags
        self.req_bytes = req_bytes
        self.resp_bytes = resp_bytes
        self.upstream = upstream
        self.attempts = attempts
        self.keep_alive = keep_alive


class Admission:
    """What a request was admitted on, asked by both paths (the coroutine path and
    proxy.downstream.fastpath): the target of each attempt (`pick`, with the endpoints already tried
    in `exclude`), whether a retry may go (`may_retry`: budgets and gauges), an attempt cut
    by its per-try timeout (`per_try_timed_out`), and `release`, called once when the
    request ends. Plans and Preps hold the object and call its
    methods: a bound method or a partial made per request costs ~600 instructions each.
    This base is a single fixed target with nothing to hold (the inbound app)."""

    __slots__ = ("target",)

    def __init__(self, target: Target | None = None) -> None:
        self.target = target

    def pick(self, exclude: frozenset[str]) -> Target | None:
        return self.target

    def may_retry(self) -> bool:
        return True

    def per_try_timed_out(self) -> None:
        """An attempt ran out of its per-try timeout (Envoy's upstream_rq_per_try_timeout)."""
        return None

    def release(self) -> None:
        return None


@dataclass(slots=True, init=False)
class Plan:
    """Per-request decisions made by the stack before forwarding (from the route)."""

    admission: Admission  # the target of each attempt; may a retry go
    add_request_headers: Headers
    remove_request_headers: frozenset[bytes]  # what an Upgrade request drops (route only)
    drop_request_headers: frozenset[bytes]  # what any other drops (proxy.http1.request_drop)
    retry: RetryParams | None
    timeout_s: float | None
    response_headers: Callable[[Headers], Headers] | None = None
    # Called once with the whole body when it fit the replay buffer (traffic mirroring).
    mirror: Callable[[Request, bytes], None] | None = None

    def __init__(
        self,
        admission: Admission,
        add_request_headers: Headers,
        remove_request_headers: frozenset[bytes],
        drop_request_headers: frozenset[bytes],
        retry: RetryParams | None,
        timeout_s: float | None,
        response_headers: Callable[[Headers], Headers] | None = None,
        mirror: Callable[[Request, bytes], None] | None = None,
    ) -> None:
        self.admission = admission
        self.add_request_headers = add_request_headers
        self.remove_request_headers = remove_request_headers
        self.drop_request_headers = drop_request_headers
        self.retry = retry
        self.timeout_s = timeout_s
        self.response_headers = response_headers
        self.mirror = mirror


@dataclass(slots=True, init=False)
class Prep:
    """A request's decisions, made synchronously before any I/O by the stack's `prepare`
    (shared by the coroutine path and proxy.downstream.fastpath): the plan to forward it by, or the
    local reply it gets. `later` is an asynchronous step still to run first (a fault's
    delay), giving the final Prep; its `admission` is released once when the request ends."""

    hop: Hop | None
    plan: Plan | None = None
    pool: Pool | None = None
    reply: bytes = b""
    result: Result | None = None
    admission: Admission | None = None  # released once when the request ends
    later: Callable[[Channel], Awaitable[Prep]] | None = None

    def __init__(
        self,
        hop: Hop | None,
        plan: Plan | None = None,
        pool: Pool | None = None,
        reply: bytes = b"",
        result: Result | None = None,
        admission: Admission | None = None,
        later: Callable[[Channel], Awaitable[Prep]] | None = None,
    ) -> None:
        self.hop = hop
        self.plan = plan
        self.pool = pool
        self.reply = reply
        self.result = result
        self.admission = admission
        self.later = later


def local_prep(
    hop: Hop | None,
    status: int,
    flag: str,
    *,
    result_flag: str | None = None,
    close: bool = False,
    extra: Headers | None = None,
) -> Prep:
    """A Prep whose answer is a local reply (no upstream)."""
    return Prep(
        hop,
        reply=local_reply(status, flag, close=close, extra=extra),
        result=Result(status, result_flag or flag, 0, 0, "", 0, not close),
    )


@dataclass(slots=True, init=False)
class Started:
    """What the fast path (proxy.downstream.fastpath) already did with a request it hands over: the
    whole body read, maybe a target picked for attempt 1, maybe that attempt's outcome
    (already reported to the balancer)."""

    body: bytes
    target: Target | None = None
    attempt: tuple[Outcome, Conn | None, Response | None] | None = None

    def __init__(
        self,
        body: bytes,
        target: Target | None = None,
        attempt: tuple[Outcome, Conn | None, Response | None] | None = None,
    ) -> None:
        self.body = body
        self.target = target
        self.attempt = attempt


async def complete(
    req: Request, down: EventStream, writer: Channel, prep: Prep, started: Started | None
) -> Result:
    """Carry a prepared request to its end on the coroutine path."""
    admission = prep.admission
    try:
        if prep.later is not None:  # a Prep with a later step holds nothing to release yet
            prep = await prep.later(writer)
            admission = prep.admission
        if prep.plan is None or prep.pool is None:
            assert prep.result is not None
            if prep.reply:
                writer.write(prep.reply)
            if started is None:
                try:
                    await discard_body(down)
                except BodyTimeout:  # answered already: only closing is left
                    r = prep.result
                    return Result(r.status, r.flags, 0, 0, "", 0, False)
            return prep.result
        return await forward(req, down, writer, prep.pool, prep.plan, started)
    except BodyTimeout:
        # The client stopped sending its body before the response began: 408 and close (an
        # upstream that had part of it saw its connection closed: _attempt).
        writer.write(local_reply(408, "SI", close=True))
        return Result(408, "SI", 0, 0, "", 0, False)
    finally:
        if admission is not None:
            admission.release()


async def discard_body(down: EventStream) -> None:
    """Read the rest of a request answered locally, so the next one can be parsed."""
    while True:
        ev = await next_body(down)
        if type(ev) is EndOfMessage:
            return


class _Overflow(Outcome):
    """Marker outcome: the connection pool overflowed (no attempt was made)."""


_OVERFLOW: Final = _Overflow()


# Never passed on from a response: the hop-by-hop fields; Content-Length is re-rendered.
RESPONSE_DROP: Final = HOP_BY_HOP | {b"content-length"}


def request_head(req: Request, plan: Plan, body_len: int | None, chunked: bool) -> bytes:
    if req.upgrade is None:
        # The kept fields, the framing, then the plan's additions: stripped and rendered in
        # one pass (forward_request_head).
        extra = plan.add_request_headers
        if body_len is not None:
            extra = [(b"content-length", b"%d" % body_len), *extra]
        elif chunked:
            extra = [(b"transfer-encoding", b"chunked"), *extra]
        return forward_request_head(req, plan.drop_request_headers, extra)
    names = req.lowered()
    remove = plan.remove_request_headers
    headers = (
        list(req.headers)
        if remove.isdisjoint(names)
        else [f for f, n in zip(req.headers, names, strict=True) if n not in remove]
    )
    headers.extend(plan.add_request_headers)
    return render_request_head(req.method, req.target, headers, req.version)


async def _read_body(down: EventStream, limit: int) -> tuple[list[bytes], bool, bool]:
    """Read request body pieces up to `limit` bytes: (pieces, complete, trailers_seen)."""
    pieces: list[bytes] = []
    size = 0
    while True:
        ev = await next_body(down)
        if isinstance(ev, EndOfMessage):
            return pieces, True, bool(ev.trailers)
        assert isinstance(ev, Data)
        pieces.append(ev.data)
        size += len(ev.data)
        if size > limit:
            return pieces, False, False


async def forward(
    req: Request,
    down: EventStream,
    dwriter: Channel,
    pool: Pool,
    plan: Plan,
    started: Started | None = None,
) -> Result:
    """Forward `req` (its head already parsed from `down`) and stream the response back;
    `started`: what the fast path already did (the body is then read already)."""
    start = time.monotonic()
    deadline = start + plan.timeout_s if plan.timeout_s else None
    has_body = req.chunked or (req.content_length or 0) > 0
    if started is not None:
        pieces, complete = [started.body], True
    else:
        if req.expect_continue:
            # Envoy answers 100-continue itself and does not pass Expect upstream: the body
            # is then read here (into the replay buffer) before an upstream is even chosen.
            dwriter.write(CONTINUE)
        pieces, complete, _ = (
            await _read_body(down, REPLAY_LIMIT) if has_body else ([], True, False)
        )
        if not has_body and down.poll() is None:
            await down.next()  # the EndOfMessage of a body-less request
    body = b"".join(pieces)
    replayable = complete
    if plan.mirror is not None and complete:
        plan.mirror(req, body)
    retry = plan.retry
    attempts_allowed = 1 + (retry.attempts if retry is not None else 0)
    exclude: frozenset[str] = frozenset()
    attempt = 0
    last_flag, last_status = "UH", 503
    conn: Conn | None = None
    resp: Response | None = None
    target: Target | None = None
    while attempt < attempts_allowed:
        if attempt:
            if not plan.admission.may_retry():
                break  # retry budget or maxRetries exhausted: the last failure stands
            delay = (
                backoff(attempt - 1, _RNG, retry.base_interval_s, retry.max_interval_s)
                if retry
                else 0.0
            )
            if deadline is not None and time.monotonic() + delay >= deadline:
                break
            await asyncio.sleep(delay)
        attempt += 1
        reported = False
        if attempt == 1 and started is not None and started.target is not None:
            target = started.target  # picked by the fast path (its balancer slot is taken)
        else:
            target = plan.admission.pick(exclude)
        if target is None:
            last_flag, last_status = "UH", 503
            break
        t0 = time.monotonic()
        if attempt == 1 and started is not None and started.attempt is not None:
            outcome, conn, resp = started.attempt
            reported = True
        else:
            per_try = retry.per_try_timeout_s if retry else None
            budget = _remaining(deadline)
            try_timeout = (
                min(x for x in (per_try, budget) if x is not None) if (per_try or budget) else None
            )
            outcome, conn, resp = await _attempt(
                req, plan, pool, target, body, complete, replayable, down, try_timeout, has_body
            )
            if outcome.timed_out and per_try is not None and try_timeout == per_try:
                plan.admission.per_try_timed_out()  # (else the route's timeout ran out)
        if outcome is _OVERFLOW:
            last_flag, last_status = "UO", 503
            break
        if target.report is not None and not reported:
            # The latency sample the balancer learns from starts when the request was sent:
            # a new connection's TCP and TLS set-up is not the endpoint's load, and counting
            # it would keep a fresh endpoint from ever being chosen by peak EWMA.
            sent = conn.sent_at if conn is not None else t0
            target.report(
                outcome.status,
                outcome.connect_failure or outcome.reset or outcome.timed_out,
                time.monotonic() - sent,
            )
        if resp is not None and (
            retry is None
            or attempt >= attempts_allowed
            or not should_retry(retry, outcome, req.method, replayable)
        ):
            break
        if resp is not None:
            assert conn is not None
            conn.close()
            last_flag, last_status = "URX", resp.status
            resp = None
        elif outcome.status == 502:
            last_flag, last_status = "UPE", 502  # upstream broke HTTP/1.1 framing
        else:
            last_flag = "UT" if outcome.timed_out else ("UF" if outcome.connect_failure else "UC")
            last_status = 504 if outcome.timed_out else 503
            if retry is None or not should_retry(retry, outcome, req.method, replayable):
                break
        # Istio's previous_hosts retry predicate: the next attempt goes to an endpoint not
        # tried yet, when there is one (the balancer's identity, not the pool key).
        exclude = exclude | {target.endpoint}
        if deadline is not None and time.monotonic() >= deadline:
            last_flag, last_status = "UT", 504
            break
    if resp is None or conn is None or target is None:
        if deadline is not None and time.monotonic() >= deadline:
            last_flag, last_status = "UT", 504
        if last_flag == "URX":
            # Retries used up on an upstream error status: Envoy passes the last response;
            # we answer it as a local reply with the flag.
            pass
        dwriter.write(local_reply(last_status, last_flag, close=not complete))
        return Result(last_status, last_flag, len(body), 0, "", attempt, complete)
    return await _relay_response(
        req,
        resp,
        conn,
        down,
        dwriter,
        pool,
        target_key=conn.key,
        req_bytes=len(body),
        attempts=attempt,
        deadline=deadline,
        plan=plan,
        complete=complete,
        max_requests=target.max_requests,
    )


async def _copy_body(
    conn: Conn, dwriter: Channel, chunk_out: bool, head: bytes
) -> int:
    """Stream the response body downstream; `head` goes out with the first piece.

    What the upstream sent in one read (a small response is head and body in one segment)
    leaves in one write: one syscall and, on a TLS hop, one record, not a head and a body
    that wake the next hop twice.
    """
    size = 0
    events = conn.events
    pending = events.pending
    transport = dwriter.transport
    out = [head]
    while True:
        while pending:
            ev = pending.pop(0)
            if type(ev) is EndOfMessage:
                if chunk_out:
                    out.append(LAST_CHUNK)
                if out:
                    dwriter.write(b"".join(out) if len(out) > 1 else out[0])
                return size
            if type(ev) is Data and ev.data:
                size += len(ev.data)
                out.append(encode_chunk(ev.data) if chunk_out else ev.data)
        if out:
            dwriter.write(b"".join(out) if len(out) > 1 else out[0])
            out = []
            if transport.get_write_buffer_size() > 262144:
                await dwriter.drain()
        pending.insert(0, await events.next())  # next() took it from the front


def _loop_deadline(deadline: float | None) -> float | None:
    """A time.monotonic() deadline on the event loop's clock (asyncio.timeout_at)."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.001, deadline - time.monotonic())


async def _attempt(
    req: Request,
    plan: Plan,
    pool: Pool,
    target: Target,
    body: bytes,
    complete: bool,
    replayable: bool,
    down: EventStream,
    timeout: float | None,
    has_body: bool,
) -> tuple[Outcome, Conn | None, Response | None]:
    # `timeout` (the per-try timeout, or what is left of the route's) bounds the whole
    # attempt: connecting and the TLS handshake too, so an endpoint that accepts TCP and
    # never answers costs one per-try timeout, not the connect timeout (DEVIATION from
    # Envoy, which starts the per-try timer once connected: docs/policies.md).
    loop = asyncio.get_running_loop()
    ends = None if timeout is None else loop.time() + timeout
    connect_timeout, cut = target.connect_timeout_s, False
    if timeout is not None and timeout < connect_timeout:
        connect_timeout, cut = timeout, True
    try:
        conn, _reused = await pool.get(
            target.key,
            target.connect,
            connect_timeout,
            target.limiter,
            target.idle_timeout_s,
        )
    except PoolOverflow:
        return _OVERFLOW, None, None
    except TimeoutError:
        # Nothing was sent (so even a POST may go elsewhere); cut by the attempt's timeout,
        # it is a timeout (UT, 504), else a connect failure (UF).
        return Outcome(connect_failure=True, timed_out=cut), None, None
    except (OSError, ConnectionError):
        return Outcome(connect_failure=True), None, None
    conn.sent_at = time.monotonic()
    # Announced before the first byte leaves: the channel parses what the upstream sends as
    # it arrives, and an early answer (a 413 while the body still streams) is expected.
    conn.parser.expect(req.method, req.upgrade)
    try:
        w = conn.writer
        if complete:
            head = request_head(req, plan, len(body) if has_body else None, False)
            w.write(head + body if body else head)
        elif req.content_length is not None:
            # Longer than the replay buffer: stream the rest, keeping Content-Length (apps
            # that cannot read chunked requests still work).
            w.write(request_head(req, plan, req.content_length, False) + body)
            await _stream_body(down, conn, chunked=False)
        else:
            w.write(request_head(req, plan, None, True) + encode_chunk(body))
            await _stream_body(down, conn, chunked=True)
        if timeout is None:
            resp = await _response_head(conn)
        else:
            if not complete or ends is None:  # a streamed body: timed once it is sent (Envoy)
                ends = loop.time() + timeout
            async with asyncio.timeout_at(ends):
                resp = await _response_head(conn)
        return Outcome(status=resp.status, bytes_sent_upstream=True), conn, resp
    except DownstreamError as down_err:
        conn.close()  # the upstream saw a partial request: that connection is done
        raise down_err.error from None
    except BodyTimeout:
        conn.close()  # likewise: a partial request, then the connection closed
        raise
    except TimeoutError:
        conn.close()
        return Outcome(timed_out=True, bytes_sent_upstream=True), None, None
    except (PeerClosed, ConnectionError, OSError, UpstreamClosed) as exc:
        log.debug("upstream %s reset: %r", target.key, exc)
        conn.close()
        return Outcome(reset=True, bytes_sent_upstream=True), None, None
    except ProtocolError as perr:
        log.info("upstream %s protocol error: %s", target.key, perr)
        conn.close()
        return Outcome(status=502, reset=True, bytes_sent_upstream=True), None, None


class DownstreamError(Exception):
    """The client's body broke framing after the head was forwarded: answer the client's
    ProtocolError (400), not an upstream error."""

    def __init__(self, error: ProtocolError) -> None:
        super().__init__(str(error))
        self.error = error


def _answered(conn: Conn) -> bool:
    """The upstream sent a final response head (or closed, or broke framing)."""
    events = conn.events
    if events.eof or events.error is not None:
        return True
    return any(type(e) is Response and not e.informational for e in events.pending)


async def _upstream_answered(conn: Conn) -> None:
    while not _answered(conn):
        await conn.events.channel.wait()


async def _stream_body(down: EventStream, conn: Conn, *, chunked: bool) -> None:
    """Send the rest of a body past the replay buffer while watching the upstream. One that
    answers before the body ends (an app's size limit: 413, as Envoy relays it) stops the
    pump, and that answer is what the client gets, not a 503 for the write that failed; the
    rest of the body is never read (the client's connection is closed after the response:
    the request was not `complete`)."""
    pump = spawn(_pump_body(down, conn.writer, chunked=chunked), name="request-body")
    watch = spawn(_upstream_answered(conn), name="early-response")
    try:
        await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not pump.done():
            pump.cancel()  # it ends at its next await; the rest of the body stays unread
    if not pump.done() or pump.cancelled():
        conn.cut = True
        return  # the upstream answered (or closed) first: _response_head reads which
    exc = pump.exception()
    if exc is None:
        return  # the whole body went
    if isinstance(exc, (ConnectionError, OSError)) and _answered(conn):
        conn.cut = True
        return  # the write failed because the upstream answered and closed
    raise exc


async def _pump_body(down: EventStream, w: Channel, *, chunked: bool) -> None:
    while True:
        try:
            ev = await next_body(down)
        except ProtocolError as exc:
            raise DownstreamError(exc) from exc
        if isinstance(ev, EndOfMessage):
            if chunked:
                w.write(LAST_CHUNK)
            return
        assert isinstance(ev, Data)
        if ev.data:
            w.write(encode_chunk(ev.data) if chunked else ev.data)
            await w.drain()


async def _response_head(conn: Conn) -> Response:
    while True:
        ev = await conn.events.next()
        if isinstance(ev, Response) and not ev.informational:
            return ev


async def _relay_response(
    req: Request,
    resp: Response,
    conn: Conn,
    down: EventStream,
    dwriter: Channel,
    pool: Pool,
    *,
    target_key: str,
    req_bytes: int,
    attempts: int,
    deadline: float | None,
    plan: Plan,
    complete: bool,
    max_requests: int = 0,
) -> Result:
    if resp.status == 101 and req.upgrade is not None:
        dwriter.write(render_response_head(101, resp.reason, resp.headers))
        await _splice(down, dwriter, conn)
        return Result(101, "-", req_bytes, 0, target_key, attempts, False)
    refused_upgrade = req.upgrade is not None
    if refused_upgrade:
        # The upstream refused the switch: HTTP goes on on the client's connection (RFC 9110
        # 7.8). The upstream connection is not reused: whether the server's own parser went
        # back to HTTP is not ours to know.
        parser = down.parser
        if isinstance(parser, RequestParser) and parser.paused:
            down.pending.extend(parser.resume())
    head, chunk_out, keep, until_close = response_head(req, resp, plan, complete)
    size = 0
    try:
        if deadline is None:
            size = await _copy_body(conn, dwriter, chunk_out, head)
        else:
            # The route timeout covers the whole response (Envoy's route timeout): one
            # timer for the body, not one per piece.
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                size = await _copy_body(conn, dwriter, chunk_out, head)
    except (TimeoutError, PeerClosed, ProtocolError, ConnectionError, OSError):
        # Headers are gone already: the only honest signal left is to cut the connection.
        conn.close()
        return Result(resp.status, "UC", req_bytes, size, target_key, attempts, False)
    if resp.keep_alive and not until_close and not refused_upgrade:
        pool.put(conn, max_requests)
    else:
        conn.close()
    return Result(resp.status, "-", req_bytes, size, target_key, attempts, keep)


def response_head(
    req: Request, resp: Response, plan: Plan, complete: bool, body: bytes = b""
) -> tuple[bytes, bool, bool, bool]:
    """The head to send downstream for `resp`, re-framed: (head, chunk the body out,
    downstream keep-alive, body runs until the upstream closes). `body`: a whole
    Content-Length body, returned after the head in the same bytes (one buffer, one
    write)."""
    no_body = req.method == b"HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
    client_11 = req.version == b"1.1"
    until_close = not no_body and resp.content_length is None and not resp.chunked
    framing: list[tuple[bytes, bytes]] = []  # after the kept (and transformed) fields
    if resp.content_length is not None:
        framing.append((b"content-length", b"%d" % resp.content_length))
        chunk_out = False
    elif resp.chunked and not no_body:
        chunk_out = client_11
    else:
        chunk_out = until_close and client_11
    if chunk_out:
        framing.append((b"transfer-encoding", b"chunked"))
    keep = complete and req.keep_alive and (not until_close or chunk_out)
    if not keep:
        framing.append((b"connection", b"close"))
    elif req.version == b"1.0":
        framing.append((b"connection", b"keep-alive"))  # RFC 9112 9.3: 1.0 must be told
    if plan.response_headers is None:  # stripped and rendered in one pass
        head = forward_response_head(resp, RESPONSE_DROP, framing, body)
    else:
        headers = plan.response_headers(
            strip_hop_by_hop(resp.headers, resp.lowered(), RESPONSE_DROP)
        )
        headers.extend(framing)
        head = render_response_head(resp.status, resp.reason, headers) + body
    return head, chunk_out, keep, until_close


async def _splice(down: EventStream, dwriter: Channel, conn: Conn) -> None:
    """After a 101: relay raw bytes both ways (WebSocket), with what the parsers held first."""
    dparser = down.parser
    early_down = dparser.take_remaining() if hasattr(dparser, "take_remaining") else b""
    early_up = conn.parser.take_remaining() if hasattr(conn.parser, "take_remaining") else b""
    # No more parsing on either channel: what arrives from now on is raw, for the relay.
    down.channel.detach()
    conn.events.channel.detach()
    if early_up:
        dwriter.write(early_up)
    if early_down:
        conn.writer.write(early_down)
    await relay(down.reader, dwriter, conn.reader, conn.writer)
    conn.close()
