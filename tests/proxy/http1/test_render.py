"""Rendering heads and chunks, and the hop-by-hop filter; rendered bytes parse back."""

from __future__ import annotations

import pytest

from proxy.http1 import (
    LAST_CHUNK,
    Data,
    EndOfMessage,
    Request,
    RequestParser,
    Response,
    ResponseParser,
    encode_chunk,
    render_request_head,
    render_response_head,
    strip_hop_by_hop,
)


def test_render_request_head_round_trips() -> None:
    headers = [(b"Host", b"a"), (b"X-A", b"b")]
    head = render_request_head(b"GET", b"/x", headers)
    assert head == b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n"
    request = RequestParser().feed(head)[0]
    assert isinstance(request, Request) and request.headers == headers


def test_render_response_head_and_chunks_round_trip() -> None:
    head = render_response_head(200, b"OK", [(b"Transfer-Encoding", b"chunked")])
    assert head == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = encode_chunk(b"x" * 26) + encode_chunk(b"") + LAST_CHUNK
    assert body.startswith(b"1a\r\n")
    parser = ResponseParser()
    parser.expect(b"GET")
    events = parser.feed(head + body)
    assert isinstance(events[0], Response)
    assert events[1:] == [Data(b"x" * 26), EndOfMessage([])]


@pytest.mark.parametrize(
    "headers",
    [[(b"X", b"a\r\nInjected: 1")], [(b"X", b"a\nb")], [(b"X", b"a\rb")], [(b"X", b"a\x00")]],
)
def test_render_refuses_header_injection(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(ValueError):
        render_request_head(b"GET", b"/", headers)
    with pytest.raises(ValueError):
        render_response_head(200, b"OK", headers)


def test_render_refuses_target_injection() -> None:
    with pytest.raises(ValueError):
        render_request_head(b"GET", b"/ HTTP/1.1\r\nHost: evil\r\n\r\nGET /", [])


def test_strip_hop_by_hop() -> None:
    headers = [
        (b"Host", b"a"),
        (b"Connection", b"keep-alive, X-Secret"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-T"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"websocket"),
        (b"x-secret", b"1"),
        (b"X-Kept", b"2"),
    ]
    assert strip_hop_by_hop(headers) == [(b"Host", b"a"), (b"X-Kept", b"2")]


def test_strip_hop_by_hop_with_parsed_names_and_a_drop_set() -> None:
    # What the proxy does per request: the parser's lowered names, a drop set built once.
    head = (
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret\r\nx-secret: 1\r\n"
        b"X-Route-Removed: 2\r\nX-Kept: 3\r\n\r\n"
    )
    req = RequestParser().feed(head)[0]
    assert isinstance(req, Request) and req.names is not None
    drop = frozenset({b"x-route-removed"}) | frozenset(
        (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
         b"transfer-encoding", b"upgrade")
    )
    kept = strip_hop_by_hop(req.headers, req.names, drop)
    assert kept == [(b"Host", b"a"), (b"X-Kept", b"3")]
    # The same answer without the names (computed) and with the default set.
    assert strip_hop_by_hop(req.headers) == [(b"Host", b"a"), (b"X-Route-Removed", b"2"),
                                             (b"X-Kept", b"3")]
    # A new list every time, never the parsed one (callers append to it).
    plain = RequestParser().feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")[0]
    assert isinstance(plain, Request)
    out = strip_hop_by_hop(plain.headers, plain.names)
    assert out == plain.headers and out is not plain.headers


def test_connection_listing_an_absent_field_drops_nothing_more() -> None:
    headers = [(b"Host", b"a"), (b"Connection", b"close"), (b"Close", b"x"), (b"X", b"1")]
    # "close" names a field here: it is dropped; with no such field nothing else goes.
    assert strip_hop_by_hop(headers) == [(b"Host", b"a"), (b"X", b"1")]
    assert strip_hop_by_hop([(b"Connection", b"close"), (b"X", b"1")]) == [(b"X", b"1")]
