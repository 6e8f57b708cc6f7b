"""Every framing a strict proxy must refuse (RFC 9112, Envoy's validator): one row each."""

from __future__ import annotations

import pytest

from proxy.http1 import ProtocolError, RequestParser, ResponseParser
from tests.proxy.http1.helpers import run

H = b"Host: a\r\n"
CHUNKED = b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"

REQUESTS: list[tuple[str, bytes, int]] = [
    (
        "cl-and-te",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    (
        "te-and-cl",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        400,
    ),
    (
        "cl-differing",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\n",
        400,
    ),
    (
        "cl-repeated-equal",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\n",
        400,
    ),
    ("cl-list-equal", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\n", 400),
    ("cl-list-differing", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\n", 400),
    ("cl-sign", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\n", 400),
    ("cl-negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("cl-space-inside", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 0\r\n\r\n", 400),
    ("cl-hex", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x10\r\n\r\n", 400),
    ("cl-empty", b"POST / HTTP/1.1\r\n" + H + b"Content-Length:\r\n\r\n", 400),
    (
        "cl-too-long",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: " + b"9" * 19 + b"\r\n\r\n",
        400,
    ),
    (
        "te-not-final-chunked",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
        400,
    ),
    ("te-gzip-only", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    ("te-unknown", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: bogus\r\n\r\n", 400),
    (
        "te-unsupported-before-chunked",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
        501,
    ),
    (
        "te-chunked-twice",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n",
        400,
    ),
    (
        "te-chunked-two-lines",
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    ("te-in-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("chunk-size-non-hex", CHUNKED + b"zz\r\n", 400),
    ("chunk-size-empty", CHUNKED + b"\r\nab\r\n", 400),
    ("chunk-size-17-digits", CHUNKED + b"1" + b"0" * 16 + b"\r\n", 400),
    ("chunk-size-sign", CHUNKED + b"+5\r\nhello\r\n", 400),
    ("chunk-size-trailing-space", CHUNKED + b"5 \r\nhello\r\n", 400),
    ("chunk-data-no-crlf", CHUNKED + b"5\r\nhelloXX0\r\n\r\n", 400),
    ("chunk-data-bare-lf", CHUNKED + b"5\r\nhello\n0\r\n\r\n", 400),
    ("chunk-ext-lf", CHUNKED + b"5;a\nb\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-ext-cr", CHUNKED + b"5;a\rb\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-ext-nul", CHUNKED + b"5;a\x00b\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-line-bare-lf", CHUNKED + b"5\nhello\r\n0\r\n\r\n", 400),
    ("chunk-line-too-long", CHUNKED + b"5;" + b"a" * 5000, 400),
    ("bare-lf-head", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare-lf-one-line", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
    ("bare-cr-head", b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("tab-before-colon", b"GET / HTTP/1.1\r\n" + H + b"X-A\t: b\r\n\r\n", 400),
    ("obs-fold-space", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\r\n c\r\n\r\n", 400),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\r\n\tc\r\n\r\n", 400),
    ("first-header-folded", b"GET / HTTP/1.1\r\n " + H + b"\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\x00c\r\n\r\n", 400),
    ("ctl-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\x01c\r\n\r\n", 400),
    ("nul-in-name", b"GET / HTTP/1.1\r\n" + H + b"X\x00A: b\r\n\r\n", 400),
    ("bad-name-char", b"GET / HTTP/1.1\r\n" + H + b"X(A): b\r\n\r\n", 400),
    ("empty-name", b"GET / HTTP/1.1\r\n" + H + b": b\r\n\r\n", 400),
    ("no-colon", b"GET / HTTP/1.1\r\n" + H + b"X-A b\r\n\r\n", 400),
    ("bad-method-char", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("no-host-11", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two-hosts", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", 400),
    ("two-hosts-10", b"GET / HTTP/1.0\r\n" + H + H + b"\r\n", 400),
    ("bad-host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("trailer-content-length", CHUNKED + b"0\r\nContent-Length: 5\r\n\r\n", 400),
    ("trailer-transfer-encoding", CHUNKED + b"0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("trailer-host", CHUNKED + b"0\r\nHost: b\r\n\r\n", 400),
    ("trailer-obs-fold", CHUNKED + b"0\r\nX-T: a\r\n b\r\n\r\n", 400),
    ("version-2", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("version-1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    ("version-0.9", b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505),
    ("version-garbage", b"GET / HTTP/1.10\r\n" + H + b"\r\n", 400),
    ("version-lowercase", b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    ("no-version", b"GET /\r\n" + H + b"\r\n", 400),
    ("request-line-garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ("double-space", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target-with-space", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target-with-ctl", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target-with-del", b"GET /a\x7fb HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target-non-ascii", b"GET /\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target-not-a-form", b"GET abc HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("asterisk-not-options", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("connect-origin-form", b"CONNECT / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("connect-no-port", b"CONNECT a.example HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("connect-with-body", b"CONNECT a:443 HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc", 400),
    ("too-many-headers", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\r\n" * 100 + b"\r\n", 431),
    ("head-too-big", b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"b" * 61_440 + b"\r\n\r\n", 431),
    ("head-too-big-unfinished", b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"b" * 61_440, 431),
    ("request-line-too-long", b"GET /" + b"a" * 61_440, 414),
]


@pytest.mark.parametrize(
    ("data", "status"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_request_refused(data: bytes, status: int) -> None:
    parser = RequestParser()
    with pytest.raises(ProtocolError) as caught:
        parser.feed(data)
    assert caught.value.status == status
    assert caught.value.reason
    # The parser is dead: nothing more comes out of it.
    with pytest.raises(ProtocolError):
        parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")


@pytest.mark.parametrize(
    ("data", "status"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_request_refused_byte_by_byte(data: bytes, status: int) -> None:
    """Fed one byte at a time, the refusal is the same and no event is emitted for it."""
    assert run(RequestParser(), [data[i : i + 1] for i in range(len(data))]) == status


@pytest.mark.parametrize(
    ("data", "status"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_head_refusal_emits_no_event(data: bytes, status: int) -> None:
    """A head that is refused gives no Request: only body errors come after one."""
    parser = RequestParser()
    events = []
    for i in range(len(data)):
        try:
            events.extend(parser.feed(data[i : i + 1]))
        except ProtocolError:
            break
    assert data.startswith(CHUNKED) == bool(events)


def test_refused_after_valid_pipelined_request_keeps_earlier_events() -> None:
    parser = RequestParser()
    events = parser.feed(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
    assert len(events) == 2
    with pytest.raises(ProtocolError) as caught:
        parser.feed(b"GET / HTTP/1.1\r\n" + H + H + b"\r\n")
    assert caught.value.status == 400


def test_eof_mid_body_refused() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nab")
    with pytest.raises(ProtocolError):
        parser.feed(b"")


def test_eof_mid_head_refused() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHo")
    with pytest.raises(ProtocolError):
        parser.feed(b"")


def _response(head: bytes, method: bytes = b"GET", upgrade: bytes | None = None) -> int:
    parser = ResponseParser()
    parser.expect(method, upgrade=upgrade)
    with pytest.raises(ProtocolError) as caught:
        parser.feed(head)
        parser.feed(b"")
    return caught.value.status


RESPONSES: list[tuple[str, bytes]] = [
    ("cl-and-te", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("cl-list", b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc"),
    ("cl-twice", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    ("cl-sign", b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc"),
    ("te-gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("te-chunked-twice", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
    ("te-http10", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("chunk-bad-size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n"),
    ("chunk-no-crlf", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab"),
    (
        "trailer-cl",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 1\r\n\r\n",
    ),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
    ("space-before-colon", b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"),
    ("bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
    ("nul-in-value", b"HTTP/1.1 200 OK\r\nX: a\x00\r\nContent-Length: 0\r\n\r\n"),
    ("bad-status-line", b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n"),
    ("status-out-of-range", b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n"),
    ("version-2", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ("101-without-upgrade", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
    ("too-many-headers", b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 101 + b"\r\n"),
    ("eof-mid-body", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"),
    ("eof-before-response", b""),
]


@pytest.mark.parametrize("data", [r[1] for r in RESPONSES], ids=[r[0] for r in RESPONSES])
def test_response_refused_with_502(data: bytes) -> None:
    assert _response(data) == 502


def test_response_without_request_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert caught.value.status == 502
