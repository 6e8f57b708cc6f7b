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
