"""ResponseParser: the upstream side, bytes from a server in, response events out.

A response's framing depends on the request it answers (RFC 9112 6.3), so the proxy calls
``expect(method, upgrade)`` once per request it sends, in order; every error is a 502 for
the proxy to answer downstream before it discards the upstream connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from proxy.http1.events import Event, Headers, Names, ProtocolError, Response, UpstreamClosed
from proxy.http1.grammar import (
    body_framing,
    native,
    parse_fields,
    status_line,
)
from proxy.http1.stream import CHUNK_SIZE, CLOSED, HEAD, LENGTH, PAUSED, UNTIL_CLOSE, StreamParser


class ResponseParser(StreamParser):
    """Parse the responses to the requests announced with ``expect``, streaming bodies."""

    _bad = 502
    _too_big = 502

    def __init__(self, max_headers: int = 100, max_head_bytes: int = 60 * 1024) -> None:
        super().__init__(max_headers, max_head_bytes)
        # A list (native in the compiled core), short: one entry per request in flight.
        self._expected: list[tuple[bytes, bytes | None]] = []

    def expect(self, method: bytes, upgrade: bytes | None = None) -> None:
        """Announce a request sent upstream: its method and its ``Request.upgrade``."""
        self._expected.append((method, upgrade))

    def whole(self, data: bytes, drop: frozenset[bytes]) -> tuple[int, bytes, bool, int] | None:
        """`data` as one whole response to the one request outstanding, taken in one C call
        (_speedups.relay_response): (status, what to send downstream with `drop` left out,
        keep-alive, body length); None for anything else, and when this parser holds
        bytes or state of its own: feed() the data then. Changes nothing: ``answered``
        commits the response once the caller takes it."""
        relay = _c_relay
        if relay is None or self._state != HEAD or self._buf or len(self._expected) != 1:
            return None
        method = self._expected[0][0]
        if method == b"HEAD" or method == b"CONNECT":
            return None
        return relay(data, self.max_headers, self.max_head_bytes, drop)

    def answered(self, keep_alive: bool) -> None:
        """The response ``whole`` took was sent on: as if it had been fed."""
        self._expected.pop(0)
        self._state = HEAD if keep_alive else CLOSED

    @property
    def outstanding(self) -> int:
        """Requests announced with expect() whose final response has not started yet."""
        return len(self._expected)

    def _before_head(self, buf: bytes, pos: int) -> int:
        if not self._expected:
            raise ProtocolError(502, "bytes from upstream with no request outstanding")
        return pos

    def _eof_in_head(self, pending: bytes) -> list[Event]:
        if pending:
            raise ProtocolError(502, "upstream closed in the middle of a response head")
        if self._expected:
            raise UpstreamClosed(502, "upstream closed before responding")
        return []

    def _head(self, buf: bytes, start: int, end: int, events: list[Event]) -> None:
        c_head = _c_response_head
        head = c_head(buf, start, end, self.max_headers) if c_head is not None else None
        if head is None:
            head = response_head_py(buf, start, end, self.max_headers)
        version, status, reason, fields, names, length, chunked, keep_alive = head

        method, upgrade = self._expected[0]
        self._state = LENGTH
        self._remaining = 0
        if status < 200:
            if status != 101:  # RFC 9110 15.2: 1xx are interim; the final response follows.
                events.append(
                    Response(
                        status, reason or b"", version, fields, None, False, False, True, names
                    )
                )
                self._state = HEAD
                return
            if upgrade is None:
                raise ProtocolError(502, "101 Switching Protocols to a request without Upgrade")
            self._then = PAUSED
            keep_alive = chunked = False
            length = None
        elif method == b"CONNECT" and status < 300:  # RFC 9110 9.3.6: a tunnel from here on.
            self._then = PAUSED
            keep_alive = chunked = False
            length = None
        elif method == b"HEAD" or status == 204 or status == 304:
            # RFC 9112 6.3 p2: no content whatever the header says; Content-Length stays as the
            # (informative) header value, and no Data follows.
            chunked = False
            self._then = HEAD if keep_alive else CLOSED
        elif chunked:
            self._state = CHUNK_SIZE
            self._then = HEAD if keep_alive else CLOSED
        elif length is not None:
            self._remaining = length
            self._then = HEAD if keep_alive else CLOSED
        else:  # RFC 9112 6.3 p8: no framing, the body runs until the server closes.
            self._state = UNTIL_CLOSE
            keep_alive = False
            self._then = CLOSED
        self._expected.pop(0)
        events.append(
            Response(
                status, reason or b"", version, fields, length, chunked, keep_alive, False, names
            )
        )


# (version, status, reason or None, fields, names, Content-Length, chunked, keep-alive):
# what a response head says on its own, before the request it answers is taken into account.
ResponseHead = tuple[bytes, int, bytes | None, Headers, Names, int | None, bool, bool]


def response_head_py(buf: bytes, start: int, end: int, max_headers: int) -> ResponseHead:
    """Parse the response head ``buf[start:end]`` (end excludes the final CRLF); raise
    ProtocolError (502). _speedups.response_head is its C twin for the usual responses (it
    answers None for the rest, and this decides)."""
    line = status_line(buf, start, end)
    if line is None:
        shown = buf[start : buf.find(b"\r\n", start)][:60]
        raise ProtocolError(502, f"malformed status line {shown!r} (RFC 9112 4)")
    version, status, reason, fields_at = line
    if version != b"1.1" and version != b"1.0":
        raise ProtocolError(502, f"upstream answered HTTP/{version.decode()}")
    if status < 100 or status > 599:
        raise ProtocolError(502, f"status {status} outside 100-599 (RFC 9110 15)")
    fields, names = parse_fields(buf, fields_at, end, max_headers, 502, 502)
    length, chunked, _, keep_alive = body_framing(fields, names, version, 502, 502)
    return version, status, reason, fields, names, length, chunked, keep_alive


_c_relay: Final[
    Callable[[bytes, int, int, frozenset[bytes]], tuple[int, bytes, bool, int] | None] | None
] = native.relay_response if native is not None else None
_c_response_head: Final[Callable[[bytes, int, int, int], ResponseHead | None] | None] = (
    native.response_head if native is not None else None
)
