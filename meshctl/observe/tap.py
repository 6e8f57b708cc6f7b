"""Follow the /tap streams of one or more proxies and merge their events.

One reader thread per proxy (the streams are plain HTTP/1.1 chunked NDJSON, read with the
standard library); events are merged through a queue in arrival order. `on_ready` runs once
every stream has said hello, so a caller (a test, `top`) knows the taps are live. A proxy on
another host is tapped through the registry (common.proxies.Relay): its stream may end with
an `end` line saying why (the proxy disconnected, the relay's time is up), raised here as
ObserveError.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from common.proxies import ObserveError, ProxyInfo


@dataclass(frozen=True, slots=True)
class TapFilter:
    path: str | None = None
    method: str | None = None
    status: int | None = None
    direction: str | None = None  # inbound | outbound

    def query(self, limit: int) -> str:
        q: dict[str, str] = {}
        if self.path:
            q["path"] = self.path
        if self.method:
            q["method"] = self.method.upper()
        if self.status is not None:
            q["status"] = str(self.status)
        if self.direction:
            q["direction"] = self.direction
        if limit:
            q["max"] = str(limit)
        return urllib.parse.urlencode(q)


_END = object()


def follow(
    proxies: list[ProxyInfo],
    flt: TapFilter,
    limit: int = 0,
    duration_s: float | None = None,
    on_ready: Callable[[], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Request events from every proxy, until `limit` events, `duration_s`, or all streams end."""
    q: queue.Queue[Any] = queue.Queue(10_000)
    stop = threading.Event()
    ready = threading.Semaphore(0)

    def read(p: ProxyInfo) -> None:
        try:
            with p.admin_stream(f"/tap?{flt.query(limit)}") as r:
                for raw in r:
                    if stop.is_set():
                        return
                    line = json.loads(raw)
                    if line.get("type") == "tap":
                        ready.release()
                    elif line.get("type") == "request":
                        q.put(line)
                    elif line.get("type") == "end":  # a relayed tap the registry ended
                        q.put(ObserveError(str(line.get("reason"))))
                        return
        except ObserveError as exc:
            q.put(exc)
        except (OSError, ValueError):
            pass  # the proxy went away or we stopped reading: its stream is over
        finally:
            ready.release()
            q.put(_END)

    threads = [threading.Thread(target=read, args=(p,), daemon=True) for p in proxies]
    for t in threads:
        t.start()
    deadline = time.monotonic() + duration_s if duration_s else None
    try:
        if on_ready is not None:
            for _ in proxies:
                ready.acquire(timeout=10)
            on_ready()
        ended, sent = 0, 0
        while ended < len(threads) and (not limit or sent < limit):
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return
            try:
                item = q.get(timeout=wait)
            except queue.Empty:
                return
            if item is _END:
                ended += 1
            elif isinstance(item, ObserveError):
                raise item
            else:
                sent += 1
                yield item
    finally:
        stop.set()
