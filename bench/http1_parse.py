"""µs per typical request head: proxy.http1 against httptools (llhttp), same input, same run.

python -m bench.http1_parse            # prints one JSON object
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable

import httptools

from proxy.http1 import Request, RequestParser, render_request_head, strip_hop_by_hop

# ~370 bytes, 8 header fields: what a browser or an SDK sends to an internal API.
HEAD = (
    b"GET /api/v1/users/12345?include=profile&limit=20 HTTP/1.1\r\n"
    b"Host: users.internal.example.com:8080\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) curl/8.5.0\r\n"
    b"Accept: application/json, text/plain, */*\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"X-Request-Id: 3f2c9a1e-7b4d-4e8a-9c1f-2d6b8e0a4c7f\r\n"
    b"Cookie: session=abc123def456\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)


class _Collect:
    """httptools callbacks gathering what a Request carries (a fair like-for-like)."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))


def _best_us(fn: Callable[[], object], number: int) -> float:
    """Best of 7 runs, in µs per call (the minimum is the least disturbed by the machine)."""
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


_TRASH = bytearray(8 * 1024 * 1024)


def _cold_us(fn: Callable[[], object], number: int = 400) -> float:
    """Median µs per call with the CPU caches evicted before each (8 MiB touched): what a
    proxy at 1000 requests/s pays, its code and data pushed out by the other processes
    between two requests. Warm (best-of) figures understate that several-fold."""
    times = []
    for _ in range(number):
        _TRASH[::64] = b"\x01" * (len(_TRASH) // 64)
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main() -> None:
    number = 50_000
    ours = RequestParser()
    ours.feed(HEAD)  # keep-alive: one parser per connection, many requests

    collect = _Collect()
    llhttp = httptools.HttpRequestParser(collect)

    def theirs() -> tuple[bytes, bytes, str, bool]:
        collect.headers = []
        llhttp.feed_data(HEAD)
        return (
            collect.url,
            llhttp.get_method(),
            llhttp.get_http_version(),
            llhttp.should_keep_alive(),
        )

    request = ours.feed(HEAD)[0]
    assert isinstance(request, Request)
    forwarded = strip_hop_by_hop(request.headers)

    parse_us = _best_us(lambda: ours.feed(HEAD), number)
    fresh_us = _best_us(lambda: RequestParser().feed(HEAD), number)
    httptools_us = _best_us(theirs, number)
    render_us = _best_us(
        lambda: render_request_head(request.method, request.target, forwarded), number
    )
    strip_us = _best_us(lambda: strip_hop_by_hop(request.headers), number)
    cold_us = _cold_us(lambda: ours.feed(HEAD))
    httptools_cold_us = _cold_us(theirs)
    print(
        json.dumps(
            {
                "command": "python -m bench.http1_parse",
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "head_bytes": len(HEAD),
                "header_fields": len(request.headers),
                "parse_us": round(parse_us, 3),
                "parse_new_parser_us": round(fresh_us, 3),
                "httptools_parse_us": round(httptools_us, 3),
                "parse_ratio_to_httptools": round(parse_us / httptools_us, 2),
                "parse_cold_us": round(cold_us, 3),
                "httptools_parse_cold_us": round(httptools_cold_us, 3),
                "parse_cold_ratio_to_httptools": round(cold_us / httptools_cold_us, 2),
                "render_request_head_us": round(render_us, 3),
                "strip_hop_by_hop_us": round(strip_us, 3),
                "httptools_version": httptools.__version__,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
