"""The server side of one HTTP/2 connection, sans-IO, over libnghttp2 (ngh2).

bytes in (`receive`) -> events out (proxy/http2/events.py); `send_*` -> bytes out
(`data_to_send`). The codec (HPACK, frames, flow control, RFC 9113's checks of a request's
pseudo-headers, connection-specific fields and content-length) is libnghttp2's: this
module only chooses its limits, adds the per-window cap on peer resets nghttp2 does not
have at this grain, and turns its events into the forwarding core's. docs/http2.md says why
this codec and which bound answers which attack. Not wired into the proxy yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import ngh2

from proxy.http2.events import (
    ConnectionLost,
    Data,
    Event,
    Fields,
    RequestHead,
    StreamReset,
    Trailers,
)

NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
ENHANCE_YOUR_CALM: Final = 0xB
_SLICE: Final = 4096


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection bounds against hostile peers (docs/http2.md, "Hostile input")."""

    max_concurrent_streams: int = 100
    initial_window: int = 65_535
    # Decoded header list, RFC 9113's 32 bytes per field counted: an HPACK bomb stops here.
    max_header_list_size: int = 65_536
    max_header_fields: int = 256
    max_continuations: int = 8
    # Rapid reset (CVE-2023-44487): streams the peer resets, at most this many per window.
    max_peer_resets: int = 100
    reset_window_s: float = 1.0
    # SETTINGS / PING floods: ACKs queued unread by the peer.
    max_queued_acks: int = 100
    # Empty DATA, PRIORITY and other cheap-to-send frames: nghttp2's "glitch" bucket.
    glitch_burst: int = 1_000
    glitch_rate: int = 100


class ServerConnection:
    """One downstream HTTP/2 connection (h2c from an app, or `h2` over the mTLS hop)."""

    __slots__ = (
        "_clock",
        "_closed",
        "_conn",
        "_heads",
        "_last_sid",
        "_limits",
        "_out",
        "_reset_times",
    )

    def __init__(self, limits: Limits, clock: Callable[[], float]) -> None:
        self._limits = limits
        self._clock = clock
        self._conn = ngh2.Connection(
            ngh2.Role.SERVER,
            ngh2.Configuration(
                auto_window_update=False,
                max_inbound_header_list_size=limits.max_header_list_size,
                max_inbound_header_count=limits.max_header_fields,
                max_continuations=limits.max_continuations,
                max_outbound_ack=limits.max_queued_acks,
                glitch_rate_limit=(limits.glitch_burst, limits.glitch_rate),
                # nghttp2's own bucket (real time) is the backstop; ours, per window on the
                # injected clock, is the one a peer meets first (reads are fed in slices).
                stream_reset_rate_limit=(limits.max_peer_resets * 10,
                                         limits.max_peer_resets * 10),
            ),
        )
        self._conn.initiate_connection({
            ngh2.Setting.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            ngh2.Setting.INITIAL_WINDOW_SIZE: limits.initial_window,
            ngh2.Setting.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            ngh2.Setting.ENABLE_PUSH: 0,
        })
        self._out = bytearray(self._conn.data_to_send())
        self._heads: set[int] = set()  # streams handed over and not yet closed
        self._reset_times: list[float] = []
        self._last_sid = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes read from the socket; the events they complete, in order."""
        out: list[Event] = []
        view = memoryview(data)
        # In slices, so that our caps act between them: a read of 64 KiB of HEADERS and
        # RST_STREAM pairs stops at the cap, not after the whole read was decoded.
        for start in range(0, max(len(view), 1), _SLICE):
            if self._closed:
                break
            try:
                self._conn.receive_data(view[start:start + _SLICE])
                raw = self._conn.events()
                # Stream errors nghttp2 found (a content-length mismatch) are closed as
                # their RST_STREAM is queued: collect it now so it comes with this read.
                self._out += self._conn.data_to_send()
                raw += self._conn.events()
            except ngh2.DenialOfServiceError as e:
                out += self._abandon(ENHANCE_YOUR_CALM, f"HTTP/2 peer over a limit: {e}")
                break
            except ngh2.NGH2Error as e:
                out += self._abandon(PROTOCOL_ERROR, f"HTTP/2 protocol error from peer: {e}")
                break
            out += self._translate(raw)
        return out

    def _translate(self, raw: list[ngh2.Event]) -> list[Event]:
        out: list[Event] = []
        for ev in raw:
            if isinstance(ev, ngh2.RequestReceived):
                self._last_sid = max(self._last_sid, ev.stream_id)
                head = _head(ev.stream_id, ev.headers, ev.end_stream)
                if head is None:
                    self._conn.reset_stream(ev.stream_id, PROTOCOL_ERROR)
                    continue
                self._heads.add(ev.stream_id)
                out.append(head)
            elif isinstance(ev, ngh2.DataReceived):
                if ev.stream_id in self._heads:
                    out.append(Data(ev.stream_id, ev.data, ev.end_stream))
            elif isinstance(ev, ngh2.TrailersReceived):
                if ev.stream_id in self._heads:
                    out.append(Trailers(ev.stream_id, _fields(ev.headers)))
            elif isinstance(ev, ngh2.StreamReset):
                if self._peer_reset():
                    self._conn.terminate_connection(ENHANCE_YOUR_CALM,
                                                    last_stream_id=self._last_sid)
                    self._out += self._conn.data_to_send()
                    out.extend(self._abandon(ENHANCE_YOUR_CALM,
                                             "HTTP/2 peer reset too many streams (rapid reset)"))
                    return out
                if ev.stream_id in self._heads:
                    self._heads.discard(ev.stream_id)
                    out.append(StreamReset(ev.stream_id, ev.error_code, by_peer=True))
            elif isinstance(ev, ngh2.StreamClosed):
                if ev.stream_id in self._heads:
                    self._heads.discard(ev.stream_id)
                    if ev.error_code != NO_ERROR:
                        out.append(StreamReset(ev.stream_id, ev.error_code, by_peer=False))
            elif isinstance(ev, ngh2.ConnectionClosed):
                # nghttp2 ended it (its GOAWAY, if any, is already queued): a flood of
                # empty DATA or other "glitches" ends here with ENHANCE_YOUR_CALM.
                self._out += self._conn.data_to_send()
                out.extend(self._abandon(ev.error_code, "HTTP/2 connection closed by the "
                                         f"codec (error code {ev.error_code})"))
                return out
        return out

    def _peer_reset(self) -> bool:
        """Count one reset by the peer; True once the window holds more than the cap."""
        now = self._clock()
        horizon = now - self._limits.reset_window_s
        times = self._reset_times
        while times and times[0] <= horizon:
            times.pop(0)
        times.append(now)
        return len(times) > self._limits.max_peer_resets

    def _abandon(self, code: int, reason: str) -> list[Event]:
        # After a DenialOfServiceError nghttp2 writes nothing more: the driver closes.
        self._closed = True
        self._heads.clear()
        return [ConnectionLost(code, reason)]

    # -- what the forwarding core sends back ------------------------------------------

    def send_response(self, stream_id: int, status: int, fields: Iterable[tuple[bytes, bytes]],
                      end_stream: bool = False) -> None:
        self._conn.send_response(
            stream_id, [(b":status", str(status).encode()), *fields], end_stream=end_stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self._conn.send_data(stream_id, data, end_stream=end_stream)

    def send_trailers(self, stream_id: int, fields: Iterable[tuple[bytes, bytes]]) -> None:
        self._conn.send_trailers(stream_id, list(fields))

    def reset(self, stream_id: int, error_code: int) -> None:
        self._heads.discard(stream_id)
        self._conn.reset_stream(stream_id, error_code)

    def consumed(self, stream_id: int, amount: int) -> None:
        """`amount` bytes of the stream's body went upstream: open the windows by as much.
        Until then the peer can send at most the initial window per stream."""
        self._conn.acknowledge_received_data(amount, stream_id)

    def drain(self) -> None:
        """GOAWAY NO_ERROR naming the last stream accepted: those finish, no new ones."""
        self._conn.send_goaway(NO_ERROR, last_stream_id=self._last_sid)

    def data_to_send(self) -> bytes:
        if self._closed and not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        if not self._closed:
            out += self._conn.data_to_send()
        return out


def _fields(headers: Iterable[tuple[bytes, bytes]]) -> Fields:
    return tuple((bytes(n), bytes(v)) for n, v in headers)


def _head(stream_id: int, headers: Iterable[tuple[bytes, bytes]],
          end_stream: bool) -> RequestHead | None:
    """The pseudo-headers pulled out. nghttp2 has checked RFC 9113's rules already (one
    of each, before the fields, no connection-specific field, `te` only `trailers`);
    this refuses what a proxy cannot route: no :path (CONNECT) or one not from the root."""
    method = path = authority = scheme = b""
    host = b""
    fields: list[tuple[bytes, bytes]] = []
    for n, v in headers:
        if n == b":method":
            method = v
        elif n == b":path":
            path = v
        elif n == b":authority":
            authority = v
        elif n == b":scheme":
            scheme = v
        else:
            if n == b"host":
                host = v
            fields.append((n, v))
    if not path.startswith(b"/") and not (method == b"OPTIONS" and path == b"*"):
        return None
    return RequestHead(stream_id, method, path, authority or host, scheme, tuple(fields),
                       end_stream)
