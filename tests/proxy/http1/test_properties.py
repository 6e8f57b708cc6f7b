"""Hypothesis: how bytes are cut never changes the events; any bytes fail only cleanly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http1 import ProtocolError, RequestParser, ResponseParser
from tests.proxy.http1.helpers import run, split_at

_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12)
_VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)
_HEADERS = st.lists(st.tuples(_TOKEN.map(lambda s: "x-" + s), _VALUE), max_size=6).map(
    lambda hs: b"".join(f"{n}: {v}\r\n".encode() for n, v in hs)
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """One valid request: GET, Content-Length body or chunked body (with trailers)."""
    headers = draw(_HEADERS)
    body = draw(st.binary(max_size=40))
    kind = draw(st.sampled_from(["get", "length", "chunked"]))
    head = b"POST /" + draw(_TOKEN).encode() + b" HTTP/1.1\r\nHost: a\r\n" + headers
    if kind == "get":
        return head + b"\r\n"
    if kind == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    cuts = draw(st.lists(st.integers(0, len(body)), max_size=4))
    chunks = b"".join(b"%x;e=1\r\n%s\r\n" % (len(p), p) for p in split_at(body, cuts) if p)
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n" + headers + b"\r\n"


@settings(max_examples=200, deadline=None)
@given(st.lists(requests(), min_size=1, max_size=4), st.data())
def test_request_split_does_not_matter(messages: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(messages)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    whole = run(RequestParser(), [stream], eof=True)
    assert isinstance(whole, list)
    assert run(RequestParser(), split_at(stream, cuts), eof=True) == whole


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), st.sampled_from(["length", "chunked", "close"]), st.data())
def test_response_split_does_not_matter(body: bytes, kind: str, data: st.DataObject) -> None:
    if kind == "length":
        stream = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    elif kind == "chunked":
        stream = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        stream += (encode(body) if body else b"") + b"0\r\n\r\n"
    else:
        stream = b"HTTP/1.1 200 OK\r\n\r\n" + body
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))

    def parse(pieces: list[bytes]) -> object:
        parser = ResponseParser()
        parser.expect(b"GET")
        return run(parser, pieces, eof=True)

    whole = parse([stream])
    assert isinstance(whole, list)
    assert parse(split_at(stream, cuts)) == whole


def encode(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body)


_PREFIXES = [
    b"",
    b"GET / HTTP/1.1\r\nHost: a\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(_PREFIXES), st.binary(max_size=200), st.lists(st.integers(0, 250)))
def test_arbitrary_bytes_only_raise_protocol_error(
    prefix: bytes, junk: bytes, cuts: list[int]
) -> None:
    for parser in (RequestParser(), _response_parser()):
        try:
            for piece in split_at(prefix + junk, cuts):
                if piece:
                    parser.feed(piece)
            parser.feed(b"")
        except ProtocolError:
            pass


def _response_parser() -> ResponseParser:
    parser = ResponseParser()
    parser.expect(b"GET")
    return parser
