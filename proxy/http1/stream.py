"""The state machine both parsers share: find a head, then stream its body, then repeat.

States (one int, read per loop turn, no per-byte work):

    HEAD --head--> LENGTH --n bytes--> (end)       Content-Length body (n may be 0)
                   CHUNK_SIZE <-> CHUNK_DATA -> CHUNK_CRLF --0--> TRAILERS --> (end)
                   UNTIL_CLOSE --EOF--> (end)      response with no framing (RFC 9112 6.3 p8)
    (end) --keep-alive--> HEAD | --switch--> PAUSED | --close--> CLOSED
    any --ProtocolError--> DEAD

Subclasses parse the head (``_head``), which sets the body state and ``_then``, the state
after the message.
"""

from __future__ import annotations

from typing import Any, Final, NoReturn

from proxy.http1.events import Data, EndOfMessage, Event, Headers, ProtocolError
from proxy.http1.grammar import CHUNK_LINE, block_end, parse_fields

# Final literals: the compiled core inlines them (a tuple-unpacked global is a dict lookup
# per use, ~14 per request in _parse).
HEAD: Final = 0
LENGTH: Final = 1
CHUNK_SIZE: Final = 2
CHUNK_DATA: Final = 3
CHUNK_CRLF: Final = 4
TRAILERS: Final = 5
UNTIL_CLOSE: Final = 6
PAUSED: Final = 7
CLOSED: Final = 8
EOF: Final = 9
DEAD: Final = 10

# RFC 9112 7.1.1 puts no bound on a chunk-size line; a line with extensions longer than this
# is refused rather than buffered (h11 and llhttp bound it too).
MAX_CHUNK_LINE: Final = 4096
# RFC 9110 6.5.1: trailers must not carry message framing or routing: refused outright.
FORBIDDEN_TRAILERS: Final = frozenset((b"content-length", b"transfer-encoding", b"host"))
# The end of a message without trailers (nearly all): one shared event (nothing mutates
# an event's trailers).
_END: Final = EndOfMessage([])


class StreamParser:
    """Bytes in, events out. Subclasses: RequestParser, ResponseParser."""

    # The status a malformed message gets, and the one a message over the limits gets.
    _bad = 400
    _too_big = 431

    def __init__(self, max_headers: int = 100, max_head_bytes: int = 60 * 1024) -> None:
        self.max_headers = max_headers
        self.max_head_bytes = max_head_bytes
        self._state = HEAD
        self._buf = b""
        self._scanned = 0  # bytes of an unfinished head/trailer block in _buf already checked
        self._remaining = 0  # body or chunk bytes still to come
        self._error: ProtocolError | None = None
        self._then = HEAD  # the state after the current message: set by _head

    # -- public ----------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data`` (``b""`` means EOF); return the events it completes, in order."""
        events: list[Event] = []
        self.feed_into(data, events)
        return events

    def feed_into(self, data: bytes, events: list[Any]) -> None:
        """As feed, appending the events to ``events`` (a caller's queue: no list per call).
        On a ProtocolError none of this call's events stay appended, as feed returns none."""
        if self._state >= EOF:
            if self._error is not None:
                raise ProtocolError(self._error.status, f"parser is dead: {self._error.reason}")
            if data:
                raise ProtocolError(self._bad, "data after EOF")
            return
        before = len(events)
        try:
            if data:
                self._parse(self._buf + data if self._buf else data, events)
            else:
                self._eof(events)
        except ProtocolError as error:
            self._error = error
            self._state = DEAD
            self._buf = b""
            del events[before:]
            raise

    def take_remaining(self) -> bytes:
        """Bytes buffered after the message that switched protocols, to relay raw."""
        data, self._buf = self._buf, b""
        return data

    @property
    def in_body(self) -> bool:
        """True while the current message's body (or its trailers) is still to come."""
        return LENGTH <= self._state <= TRAILERS

    @property
    def paused(self) -> bool:
        """True once an Upgrade/CONNECT exchange stopped HTTP parsing on this stream."""
        return self._state == PAUSED

    # -- subclass hooks --------------------------------------------------------------

    def _head(self, buf: bytes, start: int, end: int, events: list[Event]) -> None:
        """Parse the head ``buf[start:end]`` (end excludes the final CRLF), set the body state."""
        raise NotImplementedError

    def _before_head(self, buf: bytes, pos: int) -> int:
        """Hook run when a head may start at ``pos``: return where it really starts."""
        return pos

    def _eof_in_head(self, pending: bytes) -> list[Event]:
        raise ProtocolError(self._bad, "connection closed in the middle of a head")

    # -- the loop --------------------------------------------------------------------

    def _end(self, events: list[Event], trailers: Headers) -> None:
        events.append(EndOfMessage(trailers) if trailers else _END)
        self._state = self._then

    def _parse(self, buf: bytes, events: list[Event]) -> None:
        pos = 0
        size = len(buf)
        while pos < size:
            state = self._state
            if state == HEAD:
                start = self._before_head(buf, pos)
                if start != pos:
                    self._scanned = 0
                    pos = start
                end = self._find_block(buf, pos, size)
                if end < 0:
                    break
                self._head(buf, pos, end, events)
                pos = end + 2
                if self._state == LENGTH:
                    remaining = self._remaining
                    if remaining and remaining <= size - pos:  # the whole body came too
                        events.append(Data(buf[pos : pos + remaining]))
                        pos += remaining
                        self._remaining = remaining = 0
                    if not remaining:
                        events.append(_END)  # _end, inlined
                        self._state = self._then
            elif state in (LENGTH, CHUNK_DATA):
                take = min(size - pos, self._remaining)
                events.append(Data(buf if take == size else buf[pos : pos + take]))
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    if state == LENGTH:
                        events.append(_END)  # _end, inlined
                        self._state = self._then
                    else:
                        self._state = CHUNK_CRLF
            elif state == CHUNK_SIZE:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    # The bound counts the line without its CRLF, so a CR that is waiting
                    # for its LF does not tip a line of exactly MAX_CHUNK_LINE over it.
                    pending = size - pos - (buf[-1] == 13)
                    if pending > MAX_CHUNK_LINE or b"\n" in buf[pos:]:
                        raise ProtocolError(self._bad, "malformed chunk-size line (RFC 9112 7.1)")
                    break
                if end - pos > MAX_CHUNK_LINE:
                    # Checked here too: a whole line arriving in one feed never took the
                    # branch above (found by tests/integration/test_framing.py).
                    raise ProtocolError(
                        self._bad, f"chunk line over {MAX_CHUNK_LINE} bytes (RFC 9112 7.1.1)"
                    )
                match = CHUNK_LINE.fullmatch(buf, pos, end)
                if match is None:
                    line = buf[pos:end][:40]
                    reason = f"invalid chunk-size line {line!r} (RFC 9112 7.1)"
                    raise ProtocolError(self._bad, reason)
                self._remaining = int(match[1], 16)
                self._state = CHUNK_DATA if self._remaining else TRAILERS
                pos = end + 2
            elif state == CHUNK_CRLF:
                if buf.startswith(b"\r\n", pos):
                    pos += 2
                    self._state = CHUNK_SIZE
                elif size - pos == 1 and buf[pos] == 13:
                    break
                else:
                    raise ProtocolError(self._bad, "chunk data not followed by CRLF (RFC 9112 7.1)")
            elif state == TRAILERS:
                if buf.startswith(b"\r\n", pos):
                    pos += 2
                    self._end(events, [])
                    continue
                end = self._find_block(buf, pos, size)
                if end < 0:
                    break
                trailers, names = parse_fields(
                    buf, pos, end, self.max_headers, self._bad, self._too_big
                )
                for (name, _), lowered in zip(trailers, names, strict=True):
                    if lowered in FORBIDDEN_TRAILERS:
                        raise ProtocolError(
                            self._bad, f"{name.decode()} in trailers (RFC 9110 6.5.1)"
                        )
                pos = end + 2
                self._end(events, trailers)
            elif state == UNTIL_CLOSE:
                events.append(Data(buf if pos == 0 else buf[pos:]))
                pos = size
            elif state == CLOSED:
                # RFC 9112 9.6: after "close", nothing further on the connection is processed.
                pos = size
            else:  # PAUSED: keep everything for take_remaining()
                break
        self._buf = buf[pos:] if pos < size else b""

    def _find_block(self, buf: bytes, pos: int, size: int) -> int:
        """Where the CRLF CRLF ending the block at ``pos`` starts (+2), or -1 if not yet.

        An unfinished block is checked as it grows, from where the last feed stopped (no
        rescans: fed one byte at a time a head still costs O(n)): it must stay under
        max_head_bytes, and a bare LF is refused at once (RFC 9112 2.2: we take the strict
        reading, since a hop that accepts bare LF and one that does not split differently).
        """
        scanned = self._scanned
        if not scanned:  # the usual case: a whole head in one read
            found = block_end(buf, pos)
            if found >= 0 and found + 4 - pos <= self.max_head_bytes:
                return found + 2
        found = buf.find(b"\r\n\r\n", max(pos, pos + scanned - 3))
        if found >= 0:
            self._scanned = 0
            if found + 4 - pos > self.max_head_bytes:
                self._too_long(buf, pos)  # the same 414-or-431 as while the head grows
            return found + 2
        start = pos + scanned
        if buf.count(b"\n", start) != buf.count(b"\r\n", max(start - 1, pos)):
            raise ProtocolError(self._bad, "bare LF in head: lines end with CRLF (RFC 9112 2.2)")
        if size - pos > self.max_head_bytes:
            self._too_long(buf, pos)
        self._scanned = size - pos
        return -1

    def _too_long(self, buf: bytes, pos: int) -> NoReturn:
        raise ProtocolError(self._too_big, f"head over {self.max_head_bytes} bytes")

    def _eof(self, events: list[Event]) -> None:
        state = self._state
        if state == UNTIL_CLOSE:
            events.append(EndOfMessage([]))
        elif state == HEAD:
            events.extend(self._eof_in_head(self._buf))
        elif state not in (PAUSED, CLOSED):
            raise ProtocolError(self._bad, "connection closed in the middle of a body")
        if state != PAUSED:
            self._buf = b""
        self._state = EOF
