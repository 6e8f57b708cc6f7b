"""The downstream side of an HTTP/1.1 connection, shared by both stacks: read requests in
order (pipelining answered in order), bound the wait for each head (slow-loris), refuse
broken framing with 400/431 and close, and stop between requests when draining."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from proxy.forward import Result, local_reply
from proxy.http1 import ProtocolError, Request, RequestParser
from proxy.streams import EventStream, PeerClosed

if TYPE_CHECKING:
    from proxy.main import Proxy
    from proxy.snapshot import ProxySnapshot

Handle = Callable[[Request, EventStream, asyncio.StreamWriter, "ProxySnapshot"], Awaitable[Result]]
Done = Callable[["ProxySnapshot", Result, float, Request], None]


async def serve_requests(
    proxy: Proxy,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handle: Handle,
    done: Done,
    initial: bytes = b"",
) -> None:
    """Serve requests until the client leaves; `initial` is what protocol detection read."""
    down = EventStream(reader, RequestParser())
    counters = proxy.telemetry.counters
    if initial:
        try:
            down.pending.extend(down.parser.feed(initial))
        except ProtocolError as exc:
            writer.write(local_reply(exc.status, "DPE", close=True))
            counters["meshctl_proxy_downstream_protocol_errors_total"] += 1
            return
    while True:
        try:
            # The whole head must arrive within the header timeout: a client sending one
            # byte a second (slow loris) is cut off instead of holding the slot forever.
            # asyncio.timeout arms one timer; wait_for would also create a task per request.
            if down.pending:
                ev = await down.next()
            else:
                async with asyncio.timeout(proxy.opts.header_timeout_s):
                    ev = await down.next()
        except TimeoutError:
            counters["meshctl_proxy_downstream_header_timeouts_total"] += 1
            return
        except (PeerClosed, ConnectionError):
            return
        except ProtocolError as exc:
            writer.write(local_reply(exc.status, "DPE", close=True))
            counters["meshctl_proxy_downstream_protocol_errors_total"] += 1
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
        try:
            await writer.drain()
        except ConnectionError:
            return
