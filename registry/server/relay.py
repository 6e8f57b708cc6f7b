"""The operator's reads of a proxy's admin pages, relayed over the proxy's config stream.

A proxy's admin listener is on its own loopback (or in its namespace, on another host): an
operator elsewhere cannot reach it, and it has no credential check. The registry already
holds a stream open to every proxy: `GET /v1/proxies/{id}/admin?path=/config_dump`
(the operator only) writes an `admin` line on that stream; the proxy reads the page from
itself and answers with `POST /v1/admin-reply`, over mTLS with its SVID. The reply is
taken only from the identity that holds the stream the request went out on. Only the
read-only pages are relayed (never /tap, a stream, nor anything that changes state).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

RELAYED = frozenset({"/config_dump", "/stats", "/certs", "/server_info", "/ready", "/metrics"})
REPLY_TIMEOUT_S = 10.0


@dataclass
class AdminRelay:
    streams: dict[str, tuple[web.StreamResponse, str]] = field(default_factory=dict)
    pending: dict[int, tuple[str, str, asyncio.Future[tuple[int, str]]]] = field(
        default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def opened(self, proxy_id: str, resp: web.StreamResponse, identity: str) -> None:
        self.streams[proxy_id] = (resp, identity)

    def closed(self, proxy_id: str, resp: web.StreamResponse) -> None:
        if self.streams.get(proxy_id, (None, ""))[0] is resp:
            del self.streams[proxy_id]

    async def ask(self, proxy_id: str, path: str) -> tuple[int, str]:
        """(status, body) of `path` on proxy `proxy_id`; web.HTTPException if it cannot be."""
        if path not in RELAYED:
            raise web.HTTPBadRequest(
                text=f"path {path!r} is not relayed; one of {', '.join(sorted(RELAYED))}\n")
        held = self.streams.get(proxy_id)
        if held is None:
            raise web.HTTPNotFound(
                text=f"proxy {proxy_id!r} has no open stream to this registry "
                "(`meshctl status` lists the connected proxies)\n")
        resp, identity = held
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
