"""The operator's reads of a proxy's admin pages, relayed over the proxy's config stream.

A proxy's admin listener is on its own loopback (or in its namespace, on another host): an
operator elsewhere cannot reach it, and it has no credential check. The registry already
holds a stream open to every proxy: `GET /v1/proxies/{id}/admin?path=/config_dump`
(the operator only) writes an `admin` line on that stream; the proxy reads the page from
itself and answers with `POST /v1/admin-reply`, over mTLS with its SVID. The reply is
taken only from the identity that holds the stream the request went out on. Only the
read-only pages are relayed (nothing that changes state).

A tap (`GET /v1/proxies/{id}/tap?path=...`, the operator only) is relayed the same way, as
a stream: a `tap` line on the proxy's stream, and the proxy sends its own /tap lines as the
body of `POST /v1/tap-reply` (mTLS, the stream holder only) until the registry ends that
request's answer. Bounded: TAP_PER_PROXY taps per proxy and TAP_TOTAL in all, TAP_MAX_S
each; a slow operator loses lines (TAP_QUEUE kept, the rest dropped and counted, told in a
`dropped` line), the registry never buffers more. The tap ends with an `end` line saying
why when the proxy disconnects, the time is up or the proxy refuses; when the operator
leaves, the proxy's request is answered to its end and the proxy stops sending.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

RELAYED = frozenset({"/config_dump", "/stats", "/certs", "/server_info", "/ready", "/metrics"})
REPLY_TIMEOUT_S = 10.0
TAP_PER_PROXY = 4  # relayed taps open at once on one proxy (its own /tap takes 16)
TAP_TOTAL = 32  # relayed taps open at once through this registry
TAP_MAX_S = 1800.0  # a relayed tap ends after this long: run it again
TAP_QUEUE = 1000  # lines kept for an operator who reads slower than the proxy sends
TAP_LINE_MAX = 64 * 1024  # one tap line (a request's path and authority included)
TAP_PING_S = 10.0  # a ping line to the operator when nothing else came
# /tap's filters; not `max`: the operator's side counts, and its leaving ends the tap
TAP_QUERY = ("path", "method", "status", "direction", "destination")


@dataclass(eq=False)
class TapSession:
    """One relayed tap: the operator reads `lines()`, the proxy's reply `offer`s lines."""

    request: int
    proxy_id: str
    identity: str
    max_s: float
    queue: deque[bytes] = field(default_factory=deque)
    dropped: int = 0
    told: int = 0  # drops already told to the operator
    answered: bool = False  # the proxy's reply arrived
    reason: str | None = None  # why it ended; "" for a plain end (the proxy's /tap ended)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # a line, or the end
    done: asyncio.Event = field(default_factory=asyncio.Event)  # the end

    def offer(self, line: bytes) -> None:
        """A line from the proxy: kept, or dropped when TAP_QUEUE lines wait already."""
        if len(self.queue) >= TAP_QUEUE:
            self.dropped += 1
        else:
            self.queue.append(line if line.endswith(b"\n") else line + b"\n")
        self.wake.set()

    def end(self, reason: str) -> None:
        """End the tap (the first reason stays); both sides notice at once."""
        if self.reason is None:
            self.reason = reason
        self.wake.set()
        self.done.set()

    async def lines(self) -> AsyncIterator[bytes]:
        """What the operator gets: the proxy's lines, `dropped` and `ping` lines, and an
        `end` line with the reason unless the proxy's own tap ended normally."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            while self.queue:
                yield self.queue.popleft()
            if self.dropped > self.told:
                yield _line({"type": "dropped", "count": self.dropped - self.told,
                             "proxy": self.proxy_id})
                self.told = self.dropped
            if self.reason is not None:
                if self.reason:
                    yield _line({"type": "end", "proxy": self.proxy_id, "reason": self.reason})
                return
            self.wake.clear()
            now = loop.time()
            if now - start >= self.max_s:
                self.end(f"a tap relayed by the registry lasts {self.max_s:.0f} s at most: "
                         "run it again")
                continue
            if not self.answered and now - start >= REPLY_TIMEOUT_S:
                self.end(f"proxy {self.proxy_id} did not start the tap within "
                         f"{REPLY_TIMEOUT_S:.0f} s (a proxy older than the registry?)")
                continue
            wait = min(TAP_PING_S, self.max_s - (now - start),
                       TAP_PING_S if self.answered else REPLY_TIMEOUT_S - (now - start))
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    await self.wake.wait()
            except TimeoutError:
                if self.answered and loop.time() - start < self.max_s:
                    yield b'{"type":"ping"}\n'  # finds an operator who left


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


@dataclass
class AdminRelay:
    streams: dict[str, tuple[web.StreamResponse, str]] = field(default_factory=dict)
    pending: dict[int, tuple[str, str, asyncio.Future[tuple[int, str]]]] = field(
        default_factory=dict)
    taps: dict[int, TapSession] = field(default_factory=dict)
    tap_max_s: float = TAP_MAX_S
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def opened(self, proxy_id: str, resp: web.StreamResponse, identity: str) -> None:
        self.streams[proxy_id] = (resp, identity)

    def closed(self, proxy_id: str, resp: web.StreamResponse) -> None:
        if self.streams.get(proxy_id, (None, ""))[0] is resp:
            del self.streams[proxy_id]
            for t in list(self.taps.values()):
                if t.proxy_id == proxy_id:
                    t.end(f"proxy {proxy_id} disconnected from the registry: its tap ends")

    def _held(self, proxy_id: str) -> tuple[web.StreamResponse, str]:
        held = self.streams.get(proxy_id)
        if held is None:
            raise web.HTTPNotFound(
                text=f"proxy {proxy_id!r} has no open stream to this registry "
                "(`meshctl status` lists the connected proxies)\n")
        return held

    async def ask(self, proxy_id: str, path: str) -> tuple[int, str]:
        """(status, body) of `path` on proxy `proxy_id`; web.HTTPException if it cannot be."""
        if path not in RELAYED:
            raise web.HTTPBadRequest(
                text=f"path {path!r} is not relayed; one of {', '.join(sorted(RELAYED))}\n")
        resp, identity = self._held(proxy_id)
        n = next(self._ids)
        fut: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.pending[n] = (proxy_id, identity, fut)
        try:
            line = {"type": "admin", "request": n, "path": path}
            await resp.write(json.dumps(line).encode() + b"\n")
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                return await fut
        except TimeoutError:
            raise web.HTTPGatewayTimeout(
                text=f"proxy {proxy_id!r} did not answer within {REPLY_TIMEOUT_S:.0f}s\n"
            ) from None
        except (ConnectionResetError, OSError):
            raise web.HTTPBadGateway(text=f"the stream of proxy {proxy_id!r} closed\n") from None
        finally:
            self.pending.pop(n, None)

    def answer(self, identity: str, body: dict[str, Any]) -> str | None:
        """A proxy's reply; None, or why it is refused."""
        n, status, text = body.get("request"), body.get("status"), body.get("body")
        if not isinstance(n, int) or not isinstance(status, int) or not isinstance(text, str):
            return "expected {\"request\": int, \"status\": int, \"body\": str}"
        held = self.pending.get(n)
        if held is None:
            return f"no request {n} is waiting (timed out?)"
        proxy_id, holder, fut = held
        if identity != holder or body.get("proxy_id") != proxy_id:
            return f"request {n} went to proxy {proxy_id!r}, not to this caller"
        if not fut.done():
            fut.set_result((status, text))
        return None

    # -- taps ------------------------------------------------------------------------------

    async def open_tap(self, proxy_id: str, query: dict[str, str]) -> TapSession:
        """Ask proxy `proxy_id` for a tap (its /tap filters from `query`); web.HTTPException
        when it has no stream or the limits are reached."""
        resp, identity = self._held(proxy_id)
        mine = sum(1 for t in self.taps.values() if t.proxy_id == proxy_id)
        if mine >= TAP_PER_PROXY or len(self.taps) >= TAP_TOTAL:
            which = (f"{mine} on proxy {proxy_id!r}" if mine >= TAP_PER_PROXY
                     else f"{len(self.taps)} in all")
            raise web.HTTPTooManyRequests(
                text=f"too many taps relayed at once ({which}; at most {TAP_PER_PROXY} per "
                f"proxy and {TAP_TOTAL} in all): end one, or tap on the proxy's host\n")
        n = next(self._ids)
        session = TapSession(n, proxy_id, identity, self.tap_max_s)
        self.taps[n] = session
        wanted = {k: query[k] for k in TAP_QUERY if query.get(k)}
        try:
            await resp.write(_line({"type": "tap", "request": n, "query": wanted}))
        except BaseException as exc:  # the operator's request cancelled too: no place kept
            self.taps.pop(n, None)
            if isinstance(exc, OSError):
                raise web.HTTPBadGateway(
                    text=f"the stream of proxy {proxy_id!r} closed\n") from None
            raise
        return session

    def close_tap(self, session: TapSession) -> None:
        """The operator's side is done (left, or read the end): the proxy's side stops."""
        session.end("")
        self.taps.pop(session.request, None)

    def tap_for(self, identity: str, proxy_id: str, n: int) -> TapSession | str:
        """The tap a proxy's POST /v1/tap-reply feeds, or why it may not."""
        session = self.taps.get(n)
        if session is None:
            return f"no tap {n} is waiting (ended, or timed out?)"
        if identity != session.identity or proxy_id != session.proxy_id:
            return f"tap {n} went to proxy {session.proxy_id!r}, not to this caller"
        if session.answered:
            return f"tap {n} is answered already"
        session.answered = True
        session.wake.set()
        return session
