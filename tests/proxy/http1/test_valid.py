"""Valid messages: the events they give, whole and split at every byte boundary."""

from __future__ import annotations

import dataclasses

import pytest

from proxy.http1 import (
    Data,
    EndOfMessage,
    Request,
    RequestParser,
    Response,
    ResponseParser,
)
from tests.proxy.http1.helpers import merged, run

H = b"Host: a\r\n"


def _one(data: bytes) -> Request:
    events = RequestParser().feed(data)
    assert isinstance(events[0], Request)
    return events[0]


def test_simple_get_keep_alive() -> None:
    events = RequestParser().feed(b"GET /p?q=1 HTTP/1.1\r\nHost: a:80\r\nX-A:  b c \r\n\r\n")
    assert events == [
        Request(
            b"GET",
            b"/p?q=1",
            b"1.1",
            [(b"Host", b"a:80"), (b"X-A", b"b c")],
            None,
            False,
            True,
            None,
            False,
            b"a:80",
            [b"host", b"x-a"],  # the names lowered once, for lookups and filters
        ),
        EndOfMessage([]),
    ]
    request = events[0]
    assert isinstance(request, Request)
    assert request.get(b"x-a") == b"b c"
    assert request.get(b"missing") is None


@pytest.mark.parametrize(
    ("connection", "version", "keep_alive"),
    [
        (b"", b"1.1", True),
        (b"Connection: close\r\n", b"1.1", False),
        (b"Connection: Keep-Alive, Close\r\n", b"1.1", False),
        (b"", b"1.0", False),
        (b"Connection: keep-alive\r\n", b"1.0", True),
        (b"Connection: Keep-Alive\r\n", b"1.0", True),
        (b"Connection: foo, keep-alive\r\n", b"1.0", True),
    ],
)
def test_keep_alive(connection: bytes, version: bytes, keep_alive: bool) -> None:
    request = _one(b"GET / HTTP/" + version + b"\r\n" + H + connection + b"\r\n")
    assert request.keep_alive is keep_alive


def test_http10_without_host_and_close_ignores_what_follows() -> None:
    events = RequestParser().feed(b"GET / HTTP/1.0\r\n\r\nGET /next HTTP/1.0\r\n\r\n")
    assert [type(e) for e in events] == [Request, EndOfMessage]  # RFC 9112 9.6


def test_content_length_body() -> None:
    events = RequestParser().feed(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello")
    assert events[1:] == [Data(b"hello"), EndOfMessage([])]
    request = events[0]
    assert isinstance(request, Request)
    assert request.content_length == 5


def test_body_streams_as_bytes_arrive() -> None:
    parser = RequestParser()
    assert [
        type(e) for e in parser.feed(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 6\r\n\r\nab")
    ] == [
        Request,
        Data,
    ]
    assert parser.feed(b"cd") == [Data(b"cd")]
    assert parser.feed(b"efGET") == [Data(b"ef"), EndOfMessage([])]


@pytest.mark.parametrize(
    ("head", "parts", "in_body"),
    [
        (b"Content-Length: 6", [b"", b"abc", b"def"], [True, True, False]),
        (b"Transfer-Encoding: chunked", [b"", b"3\r\nabc", b"\r\n0\r\n", b"\r\n"],
         [True, True, True, False]),
        (b"Content-Length: 0", [b""], [False]),
    ],
)
def test_in_body_while_a_body_is_still_to_come(
    head: bytes, parts: list[bytes], in_body: list[bool]
) -> None:
    """What proxy.downstream.http1 asks before closing: is the client still sending a body?"""
    parser = RequestParser()
    assert not parser.in_body
    first = b"POST / HTTP/1.1\r\n" + H + head + b"\r\n\r\n"
    got = []
    for i, part in enumerate(parts):
        parser.feed((first if i == 0 else b"") + part)
        got.append(parser.in_body)
    assert got == in_body


CHUNKED_REQUEST = (
    b"POST /up HTTP/1.1\r\n" + H + b"Transfer-Encoding: Chunked\r\n\r\n"
    b'5;name=value;quoted="a \\" b"\r\nhello\r\n'
    b"6 ; ext\r\n world\r\n"
    b"0\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n"
)


def test_chunked_with_extensions_and_trailers() -> None:
    events = merged(RequestParser().feed(CHUNKED_REQUEST))
    request = events[0]
    assert isinstance(request, Request)
    assert request.chunked and request.content_length is None
    assert events[1:] == [
        Data(b"hello world"),
        EndOfMessage([(b"X-Checksum", b"abc"), (b"X-Other", b"d")]),
    ]


PIPELINED = (
    b"\r\nGET /1 HTTP/1.1\r\n" + H + b"\r\n"
    b"POST /2 HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc"
    b"POST /3 HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n"
    b"GET /4 HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"
)


def test_pipelined_requests_in_order() -> None:
    events = merged(RequestParser().feed(PIPELINED))
    targets = [e.target for e in events if isinstance(e, Request)]
    assert targets == [b"/1", b"/2", b"/3", b"/4"]
    assert [e for e in events if isinstance(e, Data)] == [Data(b"abc"), Data(b"xy")]
    assert sum(isinstance(e, EndOfMessage) for e in events) == 4


@pytest.mark.parametrize(
    ("header", "version", "flag"),
    [
        (b"Expect: 100-continue\r\n", b"1.1", True),
        (b"Expect: 100-Continue\r\n", b"1.1", True),
        (b"Expect: 100-continue\r\n", b"1.0", False),  # RFC 9110 10.1.1
        (b"", b"1.1", False),
    ],
)
def test_expect_continue(header: bytes, version: bytes, flag: bool) -> None:
    request = _one(b"PUT / HTTP/" + version + b"\r\n" + H + header + b"Content-Length: 1\r\n\r\n")
    assert request.expect_continue is flag


WEBSOCKET = (
    b"GET /chat HTTP/1.1\r\n" + H + b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_upgrade_websocket_pauses_and_hands_back_bytes() -> None:
    parser = RequestParser()
    events = parser.feed(WEBSOCKET + b"\x81\x05hello")
    assert [type(e) for e in events] == [Request, EndOfMessage]
    request = events[0]
    assert isinstance(request, Request)
    assert request.upgrade == b"websocket"
    assert parser.paused
    assert parser.feed(b"more") == []
    assert parser.take_remaining() == b"\x81\x05hellomore"
    assert parser.take_remaining() == b""


def test_upgrade_refused_resumes_http() -> None:
    parser = RequestParser()
    parser.feed(WEBSOCKET + b"GET /next HTTP/1.1\r\n" + H + b"\r\n")
    events = parser.resume()
    assert [e.target for e in events if isinstance(e, Request)] == [b"/next"]


def test_upgrade_header_without_connection_token_is_ignored() -> None:
    request = _one(b"GET / HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\n\r\n")
    assert request.upgrade is None


def test_connect_pauses() -> None:
    parser = RequestParser()
    events = parser.feed(
        b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n\x00\x01"
    )
    assert [type(e) for e in events] == [Request, EndOfMessage]
    assert parser.take_remaining() == b"\x00\x01"


@pytest.mark.parametrize(
    "line",
    [
        b"OPTIONS * HTTP/1.1",
        b"GET http://a/b?c HTTP/1.1",
        b"PATCH /x HTTP/1.1",
        b"M-SEARCH / HTTP/1.1",
    ],
)
def test_other_request_target_forms(line: bytes) -> None:
    assert _one(line + b"\r\n" + H + b"\r\n").method == line.split(b" ")[0]


def test_eof_between_requests_is_clean() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
    assert parser.feed(b"") == []


# -- responses -------------------------------------------------------------------------


def _responses(data: bytes, *expect: tuple[bytes, bytes | None], eof: bool = False) -> list[object]:
    parser = ResponseParser()
    for method, upgrade in expect:
        parser.expect(method, upgrade=upgrade)
    result = run(parser, [data], eof=eof)
    assert isinstance(result, list), result
    return list(result)


def test_response_content_length() -> None:
    events = _responses(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", (b"GET", None))
    assert events == [
        Response(
            200, b"OK", b"1.1", [(b"Content-Length", b"2")], 2, False, True, False,
            [b"content-length"],
        ),
        Data(b"hi"),
        EndOfMessage([]),
    ]


def test_head_response_has_no_body() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    events = _responses(data, (b"HEAD", None), (b"GET", None))
    assert [type(e) for e in events] == [Response, EndOfMessage, Response, EndOfMessage]
    assert [e.status for e in events if isinstance(e, Response)] == [200, 204]


def test_204_and_304_have_no_body() -> None:
    data = (
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
        b'HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: "x"\r\n\r\n'
    )
    events = _responses(data, (b"DELETE", None), (b"GET", None))
    assert [type(e) for e in events] == [Response, EndOfMessage, Response, EndOfMessage]


def test_informational_then_final() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    )
    events = _responses(data, (b"PUT", None))
    assert [(type(e), getattr(e, "informational", None)) for e in events] == [
        (Response, True),
        (Response, True),
        (Response, False),
        (EndOfMessage, None),
    ]


def test_101_switches() -> None:
    parser = ResponseParser()
    parser.expect(b"GET", upgrade=b"websocket")
    events = parser.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00")
    assert [type(e) for e in events] == [Response, EndOfMessage]
    assert parser.paused
    assert parser.take_remaining() == b"\x81\x00"


def test_upgrade_answered_with_200_is_a_normal_response() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    )
    events = _responses(data, (b"GET", b"websocket"), (b"GET", None))
    assert [type(e) for e in events] == [Response, Data, EndOfMessage, Response, EndOfMessage]


def test_connect_2xx_switches_and_4xx_does_not() -> None:
    parser = ResponseParser()
    parser.expect(b"CONNECT")
    assert [type(e) for e in parser.feed(b"HTTP/1.1 200 OK\r\n\r\ntunnel")] == [
        Response,
        EndOfMessage,
    ]
    assert parser.take_remaining() == b"tunnel"
    events = _responses(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 1\r\n\r\nx", (b"CONNECT", None))
    assert [type(e) for e in events] == [Response, Data, EndOfMessage]


def test_body_until_close() -> None:
    events = _responses(b"HTTP/1.0 200 OK\r\n\r\nall of it", (b"GET", None), eof=True)
    response = events[0]
    assert isinstance(response, Response) and not response.keep_alive
    assert events[1:] == [Data(b"all of it"), EndOfMessage([])]


def test_response_chunked_with_trailers_and_no_reason() -> None:
    data = (
        b"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nGrpc-Status: 0\r\n\r\n"
    )
    events = _responses(data, (b"POST", None))
    assert events[1:] == [Data(b"abc"), EndOfMessage([(b"Grpc-Status", b"0")])]


# -- the result does not depend on how the bytes are cut -------------------------------

SPLIT_CASES = [CHUNKED_REQUEST, PIPELINED, WEBSOCKET]


@pytest.mark.parametrize("data", SPLIT_CASES, ids=["chunked", "pipelined", "websocket"])
def test_every_split_point_gives_same_events(data: bytes) -> None:
    whole = run(RequestParser(), [data], eof=True)
    assert isinstance(whole, list)
    for cut in range(1, len(data)):
        assert run(RequestParser(), [data[:cut], data[cut:]], eof=True) == whole, cut
    assert run(RequestParser(), [data[i : i + 1] for i in range(len(data))], eof=True) == whole


def test_every_split_point_response() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwxyz"
    )

    def parse(pieces: list[bytes]) -> object:
        parser = ResponseParser()
        parser.expect(b"POST")
        parser.expect(b"GET")
        return run(parser, pieces)

    whole = parse([data])
    assert isinstance(whole, list) and len(whole) == 7
    for cut in range(1, len(data)):
        assert parse([data[:cut], data[cut:]]) == whole, cut


def test_names_are_the_lowered_field_names_and_lookups_agree_without_them() -> None:
    req = _one(b"GET / HTTP/1.1\r\nHost: a\r\nX-Multi: 1\r\nACCEPT: */*\r\nx-multi: 2\r\n\r\n")
    assert req.names == [b"host", b"x-multi", b"accept", b"x-multi"]
    by_hand = dataclasses.replace(req, names=None)  # a Request built without the parser's names
    for r in (req, by_hand):
        assert r.get(b"accept") == b"*/*"
        assert r.get_all(b"x-multi") == [b"1", b"2"]
        assert r.get(b"missing") is None and r.get_all(b"missing") == []
        assert r.lowered() == req.names
    parser = ResponseParser()
    parser.expect(b"GET")
    out = parser.feed(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
    r0 = out[0]
    assert isinstance(r0, Response) and r0.names == [b"x-a", b"x-a"]
    assert r0.get_all(b"x-a") == [b"1", b"2"] and r0.lowered() == r0.names
