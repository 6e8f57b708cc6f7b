"""proxy/http2: the adapter over libnghttp2, fed bytes made by the codec's own client side."""

from __future__ import annotations

import ngh2
import pytest

from proxy.http2 import (
    ENHANCE_YOUR_CALM,
    NO_ERROR,
    PROTOCOL_ERROR,
    ConnectionLost,
    Data,
    Event,
    Limits,
    RequestHead,
    ServerConnection,
    StreamReset,
    Trailers,
)

HEAD = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/pkg.Greeter/SayHello"),
        (b":authority", b"greeter:50051"), (b"content-type", b"application/grpc"),
        (b"te", b"trailers")]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def connect(limits: Limits | None = None, client_config: ngh2.Configuration | None = None,
            ) -> tuple[ngh2.Connection, ServerConnection, Clock]:
    """A client from the codec itself and our server, prefaces and SETTINGS exchanged."""
    clock = Clock()
    client = ngh2.Connection(ngh2.Role.CLIENT, client_config)
    server = ServerConnection(limits or Limits(), clock)
    client.initiate_connection()
    assert server.receive(client.data_to_send()) == []
    client.receive_data(server.data_to_send())
    assert server.receive(client.data_to_send()) == []
    client.events()
    return client, server, clock


def pump(client: ngh2.Connection, server: ServerConnection) -> list[Event]:
    events = server.receive(client.data_to_send())
    reply = server.data_to_send()
    if reply:
        client.receive_data(reply)
    return events


def client_events(client: ngh2.Connection) -> list[ngh2.Event]:
    return client.events()


def test_a_call_both_ways_with_trailers_and_flow_control() -> None:
    client, server, _ = connect()
    sid = client.send_request(HEAD)
    client.send_data(sid, b"\x00\x00\x00\x00\x02hi")
    client.send_trailers(sid, [(b"x-end", b"1")])
    events = pump(client, server)
    assert events == [
        RequestHead(sid, b"POST", b"/pkg.Greeter/SayHello", b"greeter:50051", b"http",
                    ((b"content-type", b"application/grpc"), (b"te", b"trailers")), False),
        Data(sid, b"\x00\x00\x00\x00\x02hi", False),
        Trailers(sid, ((b"x-end", b"1"),)),
    ]
    server.consumed(sid, 7)
    server.send_response(sid, 200, [(b"content-type", b"application/grpc")])
    server.send_data(sid, b"\x00\x00\x00\x00\x02ok")
    server.send_trailers(sid, [(b"grpc-status", b"0")])
    client.receive_data(server.data_to_send())
    got = client_events(client)
    kinds = [type(e).__name__ for e in got]
    assert kinds[:3] == ["ResponseReceived", "DataReceived", "TrailersReceived"], kinds
    assert got[0].headers[0] == (b":status", b"200")  # type: ignore[attr-defined]
    assert got[1].data == b"\x00\x00\x00\x00\x02ok"  # type: ignore[attr-defined]
    assert (b"grpc-status", b"0") in got[2].headers  # type: ignore[attr-defined]


def test_the_body_is_bounded_by_the_window_until_consumed() -> None:
    client, server, _ = connect(Limits(initial_window=1024))
    sid = client.send_request(HEAD)
    client.send_data(sid, b"x" * 5000)  # more than the stream's window
    events = pump(client, server)
    received = sum(len(e.data) for e in events if isinstance(e, Data))
    assert received == 1024, received  # the rest waits in the client
    server.consumed(sid, 1024)
    events = pump(client, server)
    client.receive_data(server.data_to_send())
    events += pump(client, server)
    assert sum(len(e.data) for e in events if isinstance(e, Data)) == 1024


@pytest.mark.parametrize("fields", [
    [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a")],  # no :path
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"a b"), (b":authority", b"a")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"relative"), (b":authority", b"a")],
    [(b":method", b"G T"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")],
    [*HEAD, (b"connection", b"close")],
    [*HEAD, (b"transfer-encoding", b"chunked")],
    [*HEAD[:5], (b"te", b"gzip")],
    [(b"x-first", b"1"), *HEAD],  # a field before the pseudo-headers
    [*HEAD, (b":path", b"/again")],
], ids=["no-path", "space-in-path", "relative-path", "bad-method", "connection",
        "transfer-encoding", "te-gzip", "field-first", "two-paths"])
def test_a_malformed_head_is_a_stream_error_and_nothing_is_handed_over(
        fields: list[tuple[bytes, bytes]]) -> None:
    client, server, _ = connect()
    sid = client.send_request(fields, end_stream=True)
    assert pump(client, server) == []
    resets = [e for e in client_events(client) if isinstance(e, ngh2.StreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [(sid, PROTOCOL_ERROR)]
    assert not server.closed  # the connection carries on
    sid2 = client.send_request(HEAD, end_stream=True)
    assert [type(e) for e in pump(client, server)] == [RequestHead], sid2


def test_a_content_length_the_data_does_not_match_resets_the_stream() -> None:
    client, server, _ = connect()
    sid = client.send_request([*HEAD, (b"content-length", b"10")])
    client.send_data(sid, b"abc", end_stream=True)
    events = pump(client, server)
    assert isinstance(events[0], RequestHead)
    assert not any(isinstance(e, Data) and e.end_stream for e in events), events
    assert events[-1] == StreamReset(sid, PROTOCOL_ERROR, by_peer=False)


def reset_pairs(client: ngh2.Connection, n: int) -> bytes:
    """`n` HEADERS + RST_STREAM(CANCEL) pairs on the wire (the codec drops the HEADERS of a
    stream reset before they were taken, so each is taken first)."""
    wire = b""
    for _ in range(n):
        sid = client.send_request(HEAD)
        wire += client.data_to_send()
        client.reset_stream(sid, 8)
        wire += client.data_to_send()
    return wire


def test_rapid_reset_is_capped_per_window_with_goaway_enhance_your_calm() -> None:
    client, server, _ = connect(Limits(max_peer_resets=50))  # one read, one instant
    wire = reset_pairs(client, 200)
    events = server.receive(wire)
    assert isinstance(events[-1], ConnectionLost), events[-3:]
    assert events[-1].error_code == ENHANCE_YOUR_CALM
    assert sum(isinstance(e, RequestHead) for e in events) <= 51
    assert server.closed and server.receive(wire) == []
    client.receive_data(server.data_to_send())
    goaways = [e for e in client.events() if isinstance(e, ngh2.GoAwayReceived)]
    assert [g.error_code for g in goaways] == [ENHANCE_YOUR_CALM]


def test_resets_spread_over_windows_are_not_an_attack() -> None:
    client, server, clock = connect(Limits(max_peer_resets=50))
    for _ in range(4):  # 4 x 40 resets, a window apart each: 160 in all, over the cap
        events = server.receive(reset_pairs(client, 40))
        assert not any(isinstance(e, ConnectionLost) for e in events)
        assert sum(isinstance(e, StreamReset) and e.by_peer for e in events) == 40
        clock.now += 1.5
    assert not server.closed


def test_an_hpack_bomb_stops_at_the_header_list_size() -> None:
    # One 1 KB field indexed once, then referenced: ~1 byte on the wire, 1 KB decoded each.
    big = ngh2.Configuration(max_send_header_block_length=10**6)
    client, server, _ = connect(client_config=big)
    bomb = [*HEAD, *[(b"x-bomb", b"a" * 1000)] * 200]
    client.send_request(bomb, end_stream=True)
    wire = client.data_to_send()
    assert 0 < len(wire) < 2000, len(wire)  # 200 KB decoded from this
    events = server.receive(wire)
    assert events == [ConnectionLost(ENHANCE_YOUR_CALM, events[0].reason)], events  # type: ignore[union-attr]
    assert "header list" in events[0].reason  # type: ignore[union-attr]


def test_a_continuation_flood_is_cut_at_the_frame_count() -> None:
    big = ngh2.Configuration(max_send_header_block_length=10**6)
    client, server, _ = connect(Limits(max_header_list_size=10**6, max_header_fields=10_000),
                                client_config=big)
    # distinct fields, never indexed: a header block of ~20 frames of 16 KiB
    client.send_request([*HEAD, *[(b"x-%d" % i, b"v" * 3000) for i in range(100)]])
    events = server.receive(client.data_to_send())
    assert [type(e) for e in events] == [ConnectionLost], events
    assert events[0].error_code == ENHANCE_YOUR_CALM  # type: ignore[union-attr]


@pytest.mark.parametrize("flood", ["ping", "settings", "empty-data"])
def test_control_frame_floods_close_the_connection(flood: str) -> None:
    client, server, _ = connect()
    sid = client.send_request(HEAD)
    for _ in range(3000 if flood != "empty-data" else 0):
        if flood == "ping":
            client.ping(b"12345678")
        elif flood == "settings":
            client.update_settings({ngh2.Setting.INITIAL_WINDOW_SIZE: 65_535})
    wire = client.data_to_send()
    if flood == "empty-data":  # the codec's client never sends one: 9 bytes each by hand
        wire += (b"\x00\x00\x00\x00\x00" + sid.to_bytes(4, "big")) * 3000
    events = server.receive(wire)
    assert [type(e) for e in events][-1] is ConnectionLost, events[-3:]
    assert events[-1].error_code == ENHANCE_YOUR_CALM  # type: ignore[union-attr]


def test_a_few_pings_are_answered_inside() -> None:
    client, server, _ = connect()
    for _ in range(5):
        client.ping(b"abcdefgh")
    assert pump(client, server) == []
    acks = [e for e in client.events() if isinstance(e, ngh2.PingAcknowledged)]
    assert len(acks) == 5


def test_drain_sends_goaway_naming_the_last_stream_and_it_still_finishes() -> None:
    client, server, _ = connect()
    sid = client.send_request(HEAD, end_stream=True)
    pump(client, server)
    server.drain()
    server.send_response(sid, 200, [], end_stream=True)
    client.receive_data(server.data_to_send())
    got = client.events()
    goaway = [e for e in got if isinstance(e, ngh2.GoAwayReceived)]
    assert len(goaway) == 1 and goaway[0].error_code == NO_ERROR
    assert goaway[0].last_stream_id == sid
    assert any(isinstance(e, ngh2.ResponseReceived) and e.stream_id == sid for e in got)
