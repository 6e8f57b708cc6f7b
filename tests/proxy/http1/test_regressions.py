"""Parser bugs found by the integration suite (tests/integration/test_framing.py), one test each."""

from __future__ import annotations

import pytest

from proxy.http1 import Data, EndOfMessage, ProtocolError, Request, RequestParser, ResponseParser
from proxy.http1.stream import MAX_CHUNK_LINE
from tests.proxy.http1.helpers import run

CHUNKED_REQ = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_RESP = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunk_line(length: int) -> bytes:
    """A valid chunk-size line of exactly ``length`` bytes (without CRLF) for a 5-byte chunk."""
    return b"5;a=" + b"b" * (length - 4)


def _whole(data: bytes) -> list[bytes]:
    return [data]


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize("split", [_whole, _bytewise], ids=["whole", "byte-by-byte"])
def test_chunk_line_over_the_limit_is_refused_however_it_arrives(split: object) -> None:
    """Bug: a chunk line over MAX_CHUNK_LINE that arrived with its CRLF in one feed was
    accepted (the bound was only checked while the line was incomplete)."""
    assert callable(split)
    body = _chunk_line(MAX_CHUNK_LINE + 1) + b"\r\nhello\r\n0\r\n\r\n"
    assert run(RequestParser(), split(CHUNKED_REQ + body)) == 400
    resp = ResponseParser()
    resp.expect(b"GET")
    assert run(resp, split(CHUNKED_RESP + body)) == 502


@pytest.mark.parametrize("split", [_whole, _bytewise], ids=["whole", "byte-by-byte"])
def test_chunk_line_of_exactly_the_limit_is_accepted_however_it_arrives(split: object) -> None:
    """The boundary is the same whole and split: a CR waiting for its LF does not count."""
    assert callable(split)
    body = _chunk_line(MAX_CHUNK_LINE) + b"\r\nhello\r\n0\r\n\r\n"
    events = run(RequestParser(), split(CHUNKED_REQ + body))
    assert isinstance(events, list)
    assert isinstance(events[0], Request)
    assert events[1:] == [Data(b"hello"), EndOfMessage([])]


@pytest.mark.parametrize("split", [_whole, _bytewise], ids=["whole", "byte-by-byte"])
def test_long_request_line_is_414_however_it_arrives(split: object) -> None:
    """Bug: a complete head whose request-line alone was over max_head_bytes got 431 when it
    arrived in one read (the finished-block check did not look at the request-line), 414 when
    it arrived in pieces."""
    assert callable(split)
    data = b"GET /" + b"a" * 61 * 1024 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert run(RequestParser(), split(data)) == 414


@pytest.mark.parametrize("split", [_whole, _bytewise], ids=["whole", "byte-by-byte"])
def test_long_head_with_short_request_line_is_431_however_it_arrives(split: object) -> None:
    assert callable(split)
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Big: " + b"a" * 61 * 1024 + b"\r\n\r\n"
    assert run(RequestParser(), split(data)) == 431
    resp = ResponseParser()
    resp.expect(b"GET")
    assert run(resp, split(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 61 * 1024 + b"\r\n\r\n")) == 502


def test_feed_into_appends_to_the_callers_queue_and_drops_a_failed_calls_events() -> None:
    """feed_into (the proxy's path: EventStream.feed) queues as feed returns: events in
    order after what the queue held; a call that ends in a framing error leaves none of its
    own events behind (as feed returns none), and the parser is dead after it."""
    p = RequestParser()
    queue: list[object] = ["earlier"]
    p.feed_into(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", queue)
    assert queue[0] == "earlier" and type(queue[1]) is Request and type(queue[2]) is EndOfMessage
    assert len(queue) == 3
    # A valid request then a broken one in the same read: the call raises, its events go.
    with pytest.raises(ProtocolError):
        p.feed_into(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nHost: y"
                    b"\r\n\r\n", queue)
    assert len(queue) == 3
    with pytest.raises(ProtocolError, match="parser is dead"):
        p.feed_into(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", queue)
    # feed answers the same events as a list of its own.
    assert [type(e) for e in RequestParser().feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")] == [
        Request, EndOfMessage]
