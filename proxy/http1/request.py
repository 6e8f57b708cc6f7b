"""RequestParser: the downstream side, bytes from a client in, request events out."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, NoReturn

from proxy.http1.events import Event, Headers, Names, ProtocolError, Request
from proxy.http1.grammar import (
    ABSOLUTE_FORM,
    AUTHORITY_FORM,
    TOKEN,
    body_framing,
    index_of,
    native,
    parse_fields,
    request_line,
    valid_host,
    values_of,
)
from proxy.http1.stream import CHUNK_SIZE, CLOSED, HEAD, LENGTH, PAUSED, StreamParser

# The header fields whose meaning the parser itself must read besides Host; the rest
# pass through.
_FRAMING: Final = frozenset((b"content-length", b"transfer-encoding", b"connection", b"expect"))
_VERSION: Final = re.compile(rb"HTTP/[0-9]\.[0-9]")


class RequestParser(StreamParser):
    """Parse requests, pipelined or not, streaming their bodies.

    After a request that asks to switch protocols (CONNECT, or ``Connection: upgrade`` with
    ``Upgrade``) and its EndOfMessage, the parser pauses: ``take_remaining()`` returns the
    bytes that followed, to relay raw; if the upstream refuses the switch, ``resume()``
    goes back to parsing HTTP from those bytes.
    """

    _bad = 400
    _too_big = 431

    def __init__(self, max_headers: int = 100, max_head_bytes: int = 60 * 1024) -> None:
        super().__init__(max_headers, max_head_bytes)
        self._keep = HEAD  # where resume() goes: HEAD, or CLOSED if the request said close

    def resume(self) -> list[Event]:
        """The upstream refused the Upgrade/CONNECT: parse what followed it as HTTP."""
        if self._state != PAUSED:
            raise RuntimeError("resume() is only for a parser paused by Upgrade or CONNECT")
        self._state = self._keep
        data, self._buf = self._buf, b""
        return self.feed(data) if data else []

    def _before_head(self, buf: bytes, pos: int) -> int:
        # RFC 9112 2.2: a server SHOULD ignore at least one empty line before a request-line.
        size = len(buf)
        while pos + 1 < size and buf[pos] == 13 and buf[pos + 1] == 10:  # CRLF, no call
            pos += 2
        return pos

    def _too_long(self, buf: bytes, pos: int) -> NoReturn:
        if buf.find(b"\r\n", pos, pos + self.max_head_bytes) < 0:
            raise ProtocolError(414, f"request line over {self.max_head_bytes} bytes")
        raise ProtocolError(431, f"request head over {self.max_head_bytes} bytes")

    def _eof_in_head(self, pending: bytes) -> list[Event]:
        if pending.strip(b"\r\n"):
            raise ProtocolError(400, "connection closed in the middle of a request head")
        return []

    def _head(self, buf: bytes, start: int, end: int, events: list[Event]) -> None:
        c_head = _c_request_head
        head = c_head(buf, start, end, self.max_headers) if c_head is not None else None
        if head is None:
            head = request_head_py(buf, start, end, self.max_headers)
        (method, target, version, fields, names, length, chunked, keep_alive, upgrade,
         expect_continue, host) = head
        events.append(
            Request(
                method,
                target,
                version,
                fields,
                length,
                chunked,
                keep_alive,
                upgrade,
                expect_continue,
                host,
                names,
            )
        )
        self._keep = HEAD if keep_alive else CLOSED
        switches = upgrade is not None or method == b"CONNECT"
        self._then = PAUSED if switches else self._keep
        if chunked:
            self._state = CHUNK_SIZE
        else:
            self._state = LENGTH
            self._remaining = length or 0


# (method, target, version, fields, names, Content-Length, chunked, keep-alive, upgrade,
# 100-continue, Host): what a request head says, before it becomes a Request.
RequestHead = tuple[
    bytes, bytes, bytes, Headers, Names, int | None, bool, bool, bytes | None, bool, bytes | None
]


def request_head_py(buf: bytes, start: int, end: int, max_headers: int) -> RequestHead:
    """Parse the request head ``buf[start:end]`` (end excludes the final CRLF); raise
    ProtocolError with the status to answer. _speedups.request_head is its C twin for the
    usual requests (it answers None for the rest, and this decides)."""
    line = request_line(buf, start, end)
    if line is None:
        raise ProtocolError(400, _diagnose_request_line(buf[start : buf.find(b"\r\n", start)]))
    method, target, version, fields_at = line
    if version != b"1.1" and version != b"1.0":
        raise ProtocolError(505, f"HTTP/{version.decode()} is not supported, only 1.0 and 1.1")
    fields, names = parse_fields(buf, fields_at, end, max_headers, 400, 431)
    framing = not _FRAMING.isdisjoint(names)  # usually only Host among the special ones
    connect = method == b"CONNECT"
    if target[0] != 47 or connect:  # not origin-form "/...": RFC 9112 3.2
        _check_target(method, target)

    # RFC 9112 3.2: 400 for HTTP/1.1 without Host, for two Host lines, for a bad Host.
    at = index_of(names, b"host")
    host = None
    if at >= 0:
        if index_of(names, b"host", at + 1) >= 0:
            raise ProtocolError(400, "more than one Host header (RFC 9112 3.2)")
        host = fields[at][1]
        if not valid_host(host):
            raise ProtocolError(400, f"invalid Host {host[:40]!r} (RFC 9112 3.2)")
    elif version == b"1.1":
        raise ProtocolError(400, "HTTP/1.1 request without Host (RFC 9112 3.2)")

    if framing:
        length, chunked, keep_alive, upgrade, expect_continue = _framing(
            fields, names, version, connect
        )
    else:  # no body, no Connection, no Expect: the usual GET
        length, chunked, upgrade, expect_continue = None, False, None, False
        keep_alive = version == b"1.1"  # RFC 9112 9.3: HTTP/1.0 only with "keep-alive"
    return (method, target, version, fields, names, length, chunked, keep_alive, upgrade,
            expect_continue, host)


_c_request_head: Final[Callable[[bytes, int, int, int], RequestHead | None] | None] = (
    native.request_head if native is not None else None
)


def _framing(
    fields: Headers, names: list[bytes], version: bytes, connect: bool
) -> tuple[int | None, bool, bool, bytes | None, bool]:
    """(Content-Length, chunked, keep-alive, upgrade, 100-continue) of a request that has
    any of Content-Length, Transfer-Encoding, Connection or Expect."""
    length, chunked, tokens, keep_alive = body_framing(fields, names, version, 400, 501)
    if connect and (chunked or length):
        raise ProtocolError(400, "CONNECT with content (RFC 9110 9.3.6)")
    upgrade = None
    # RFC 9110 7.8: Upgrade only counts when listed in Connection; ignored in HTTP/1.0.
    if b"upgrade" in tokens and b"upgrade" in names and version == b"1.1":
        upgrade = b", ".join(values_of(fields, names, b"upgrade") or ())
    # RFC 9110 10.1.1: 100-continue is ignored in an HTTP/1.0 request.
    expect = values_of(fields, names, b"expect")
    expect_continue = (
        expect is not None
        and version == b"1.1"
        and any(v.lower() == b"100-continue" for v in expect)
    )
    return length, chunked, keep_alive, upgrade, expect_continue


def _check_target(method: bytes, target: bytes) -> None:
    """The three request-target forms other than origin-form (RFC 9112 3.2.2-3.2.4)."""
    if method == b"CONNECT":
        if not AUTHORITY_FORM.fullmatch(target):
            shown = target[:40]
            raise ProtocolError(400, f"CONNECT needs host:port, got {shown!r} (RFC 9112 3.2.3)")
    elif target == b"*":
        if method != b"OPTIONS":
            raise ProtocolError(400, "asterisk-form is for OPTIONS only (RFC 9112 3.2.4)")
    elif not ABSOLUTE_FORM.match(target):
        raise ProtocolError(400, f"invalid request-target {target[:40]!r} (RFC 9112 3.2)")


def _diagnose_request_line(line: bytes) -> str:
    """Say what is wrong with a refused request-line (slow path: errors only)."""
    shown = f"request line {line[:60]!r}"
    parts = line.split(b" ")
    if len(parts) != 3:
        return f"{shown} is not method SP target SP version, or the target has SP (RFC 9112 3)"
    method, _target, version = parts
    if not TOKEN.fullmatch(method):
        return f"invalid method in {shown} (RFC 9110 9.1)"
    if not _VERSION.fullmatch(version):
        return f"invalid HTTP version in {shown} (RFC 9112 2.3)"
    return f"request-target has CTL, non-ASCII or is empty in {shown} (RFC 9112 3.2)"
