"""Hostile HTTP/1.1 framing through two real proxies, with an upstream that records every byte.

client socket -> client's proxy (explicit listener) -> mTLS -> echo's proxy -> Recorder.
Request side: each malformed or ambiguous request is answered 400 (431/414/501/505 where
docs/http1.md says so) with the connection closed, and nothing of it reaches the recorder.
Smuggling: a request hiding a second one arrives as exactly one request, or not at all.
Response side: the recorder answers malformed responses; the client gets 502 and the next
request is served on a fresh upstream connection.

The mesh is built once for the module (about 5 s); each case clears the recorder and ends with
a sentinel request on a new connection: once the sentinel has arrived, anything the bad case
had forwarded would have arrived before it. docs/hostile-input.md is generated from these
tables: ``python -m tests.integration.test_framing > docs/hostile-input.md``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.recorder import (
    Answer,
    Reply,
    TwoHop,
    count_requests,
    exchange,
    two_hop,
)

pytestmark = pytest.mark.slow

H = b"Host: echo\r\n"


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    what: str
    data: bytes
    status: int = 400
    xfail: str = ""  # "proxy bug: ..." when the mesh is known to get it wrong


def _post(headers: bytes, body: bytes = b"", line: bytes = b"POST / HTTP/1.1") -> bytes:
    return line + b"\r\n" + H + headers + b"\r\n" + body


_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: echo\r\n\r\n"
_BIG = b"X-Big: " + b"a" * 1000 + b"\r\n"

REQUEST_CASES = [
    # Content-Length and Transfer-Encoding
    Case("cl_and_te", "Content-Length with Transfer-Encoding",
         _post(b"Content-Length: 5\r\n" + _CHUNKED, b"0\r\n\r\n")),
    Case("te_and_cl", "Transfer-Encoding then Content-Length",
         _post(_CHUNKED + b"Content-Length: 5\r\n", b"0\r\n\r\n")),
    Case("cl_differing", "two differing Content-Length lines",
         _post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!")),
    Case("cl_repeated_equal", "two equal Content-Length lines",
         _post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello")),
    Case("cl_list", "Content-Length list `5, 5`", _post(b"Content-Length: 5, 5\r\n", b"hello")),
    Case("cl_plus", "Content-Length `+5`", _post(b"Content-Length: +5\r\n", b"hello")),
    Case("cl_negative", "Content-Length `-1`", _post(b"Content-Length: -1\r\n")),
    Case("cl_hex", "Content-Length `0x5`", _post(b"Content-Length: 0x5\r\n", b"hello")),
    Case("cl_inner_space", "Content-Length `1 0`", _post(b"Content-Length: 1 0\r\n", b"0" * 10)),
    Case("cl_empty", "empty Content-Length", _post(b"Content-Length: \r\n")),
    Case("cl_19_digits", "Content-Length of 19 digits",
         _post(b"Content-Length: 1000000000000000000\r\n")),
    # Transfer-Encoding
    Case("te_not_final_chunked", "Transfer-Encoding `chunked, gzip`",
         _post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n")),
    Case("te_unknown", "Transfer-Encoding `foo`",
         _post(b"Transfer-Encoding: foo\r\n", b"0\r\n\r\n")),
    Case("te_xchunked", "Transfer-Encoding `xchunked`",
         _post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n")),
    Case("te_chunked_twice", "Transfer-Encoding `chunked, chunked`",
         _post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n")),
    Case("te_chunked_two_lines", "Transfer-Encoding: chunked on two lines",
         _post(_CHUNKED + _CHUNKED, b"0\r\n\r\n")),
    Case("te_chunked_then_other_line", "Transfer-Encoding: chunked, then a line `identity`",
         _post(_CHUNKED + b"Transfer-Encoding: identity\r\n", b"0\r\n\r\n")),
    Case("te_gzip_chunked", "Transfer-Encoding `gzip, chunked` (not implemented)",
         _post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501),
    Case("te_vertical_tab", "Transfer-Encoding value with a vertical tab",
         _post(b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n")),
    Case("te_http10", "Transfer-Encoding in HTTP/1.0",
         _post(_CHUNKED, b"0\r\n\r\n", line=b"POST / HTTP/1.0")),
    # chunked bodies
    Case("chunk_size_not_hex", "chunk size `zz`", _post(_CHUNKED, b"zz\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_empty", "empty chunk size line", _post(_CHUNKED, b"\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_signed", "chunk size `+5`", _post(_CHUNKED, b"+5\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_0x", "chunk size `0x5`", _post(_CHUNKED, b"0x5\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_17_digits", "chunk size of 17 hex digits",
         _post(_CHUNKED, b"00000000000000005\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_trailing_space", "chunk size `5 ` without extension",
         _post(_CHUNKED, b"5 \r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_bare_lf", "chunk size line ended by bare LF",
         _post(_CHUNKED, b"5\nhello\r\n0\r\n\r\n")),
    Case("chunk_data_too_long", "bytes after the chunk data before CRLF",
         _post(_CHUNKED, b"5\r\nhelloXX\r\n0\r\n\r\n")),
    Case("chunk_data_bare_lf", "chunk data followed by bare LF",
         _post(_CHUNKED, b"5\r\nhello\n0\r\n\r\n")),
    Case("chunk_ext_cr", "CR inside a chunk extension",
         _post(_CHUNKED, b"5;a=b\rc\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_ext_lf", "LF inside a chunk extension",
         _post(_CHUNKED, b"5;a\nb\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_ext_nul", "NUL inside a chunk extension",
         _post(_CHUNKED, b"5;a=\x00\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_ext_too_long", "chunk line over 4096 bytes",
         _post(_CHUNKED, b"5;a=" + b"b" * 5000 + b"\r\nhello\r\n0\r\n\r\n")),
    Case("trailer_content_length", "trailer carrying Content-Length",
         _post(_CHUNKED, b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n")),
    Case("trailer_transfer_encoding", "trailer carrying Transfer-Encoding",
         _post(_CHUNKED, b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n")),
    Case("trailer_host", "trailer carrying Host",
         _post(_CHUNKED, b"5\r\nhello\r\n0\r\nHost: other\r\n\r\n")),
    Case("trailer_obs_fold", "obs-fold in a trailer",
         _post(_CHUNKED, b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n")),
    # field lines
    Case("ws_before_colon", "whitespace between field name and colon",
         b"GET / HTTP/1.1\r\nHost : echo\r\n\r\n"),
    Case("ws_before_colon_cl", "`Content-Length : 5`", _post(b"Content-Length : 5\r\n", b"hello")),
    Case("tab_before_colon_te", "`Transfer-Encoding\\t: chunked`",
         _post(b"Transfer-Encoding\t: chunked\r\n", b"0\r\n\r\n")),
    Case("obs_fold", "obs-fold continuation line", _post(b"X-A: a\r\n b\r\n")),
    Case("obs_fold_te", "Transfer-Encoding folded onto a second line",
         _post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n")),
    Case("cr_in_value", "CR inside a field value", _post(b"X-A: a\rb\r\n")),
    Case("lf_in_value", "bare LF inside a field value", _post(b"X-A: a\nb\r\n")),
    Case("nul_in_value", "NUL inside a field value", _post(b"X-A: a\x00b\r\n")),
    Case("ctl_in_value", "CTL 0x01 inside a field value", _post(b"X-A: a\x01b\r\n")),
    Case("bare_lf_head", "head lines ended by bare LF", b"GET / HTTP/1.1\nHost: echo\n\n"),
    Case("empty_field_name", "field line `: x`", _post(b": x\r\n")),
    Case("no_colon", "field line without a colon", _post(b"X-A x\r\n")),
    Case("bad_field_name", "`X@A` as a field name", _post(b"X@A: 1\r\n")),
    # Host
    Case("no_host", "HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n"),
    Case("two_hosts", "two Host lines", b"GET / HTTP/1.1\r\nHost: echo\r\nHost: evil\r\n\r\n"),
    Case("two_hosts_http10", "two Host lines in HTTP/1.0",
         b"GET / HTTP/1.0\r\nHost: echo\r\nHost: evil\r\n\r\n"),
    Case("bad_host", "Host with a space", b"GET / HTTP/1.1\r\nHost: ec ho\r\n\r\n"),
    # limits
    Case("too_many_headers", "101 header fields",
         _post(b"".join(b"X-%d: v\r\n" % i for i in range(100))), 431),
    Case("head_over_60k", "a 61 KiB head", _post(_BIG * 61), 431),
    Case("request_line_over_60k", "a 61 KiB request-line",
         b"GET /" + b"a" * 61 * 1024 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    # request-line
    Case("double_space", "`GET  / HTTP/1.1`", b"GET  / HTTP/1.1\r\n" + H + b"\r\n"),
    Case("lowercase_version", "`http/1.1`", b"GET / http/1.1\r\n" + H + b"\r\n"),
    Case("no_version", "`GET /`", b"GET /\r\n" + H + b"\r\n"),
    Case("version_1_10", "`HTTP/1.10`", b"GET / HTTP/1.10\r\n" + H + b"\r\n"),
    Case("bad_method", "`G@T` as a method", b"G@T / HTTP/1.1\r\n" + H + b"\r\n"),
    Case("target_with_ctl", "request-target with a CTL", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n"),
    Case("target_non_ascii", "request-target with a byte over 0x7f",
         b"GET /\xff HTTP/1.1\r\n" + H + b"\r\n"),
    Case("asterisk_get", "`GET *`", b"GET * HTTP/1.1\r\n" + H + b"\r\n"),
    Case("http_2_0", "version HTTP/2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    Case("http_1_2", "version HTTP/1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    Case("http_0_9", "version HTTP/0.9", b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505),
    Case("connect_with_body", "CONNECT with a body",
         b"CONNECT echo:8080 HTTP/1.1\r\nHost: echo:8080\r\nContent-Length: 5\r\n\r\nhello"),
    # smuggling that must be refused outright
    Case("smuggle_cl_te", "CL.TE: a GET hidden after `0` in a body framed both ways",
         _post(b"Content-Length: %d\r\n" % (5 + len(_SMUGGLED)) + _CHUNKED,
               b"0\r\n\r\n" + _SMUGGLED)),
    Case("smuggle_te_cl", "TE.CL: a GET hidden inside a chunk, Content-Length 4",
         _post(_CHUNKED + b"Content-Length: 4\r\n",
               b"%x\r\n" % len(_SMUGGLED) + _SMUGGLED + b"\r\n0\r\n\r\n")),
    Case("smuggle_te_te", "TE.TE: `chunked` and an obfuscated second Transfer-Encoding",
         _post(_CHUNKED + b"Transfer-Encoding: cow\r\n", b"0\r\n\r\n" + _SMUGGLED)),
    Case("smuggle_te_http10", "TE.0: chunked in HTTP/1.0 keep-alive, a GET hidden after",
         _post(_CHUNKED + b"Connection: keep-alive\r\n", b"0\r\n\r\n" + _SMUGGLED,
               line=b"POST / HTTP/1.0")),
    Case("smuggle_bare_lf_chunk", "a last-chunk ended by bare LF with a GET after",
         _post(_CHUNKED, b"0\n\r\n" + _SMUGGLED)),
    Case("pipelined_after_refused", "a good request pipelined after a refused one",
         b"GET /bad HTTP/1.1\r\n\r\n" + b"GET /next HTTP/1.1\r\n" + H + b"\r\n"),
]


def _ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


def _params(cases: list[Case]) -> list[object]:
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)]
                         if c.xfail else []) for c in cases]


@pytest.fixture(scope="module")
def hop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHop]:
    with two_hop(tmp_path_factory.mktemp("framing")) as h:
        yield h


def _sentinel(hop: TwoHop, name: bytes = b"/sentinel") -> Answer:
    """A good request on a new connection; once the recorder has it, earlier bytes are in too."""
    ans = exchange(hop.port, b"GET " + name + b" HTTP/1.1\r\nHost: echo\r\n\r\n")
    assert ans.statuses == [200], ans.raw[:300]
    assert ans.final[0][1].startswith(b"GET " + name + b" 0 "), ans.final[0][1]
    return ans


def _assert_only_sentinel(hop: TwoHop) -> None:
    rec = hop.recorder
    seen = rec.wait_requests(1)
    assert [s.request.target for s in seen] == [b"/sentinel"]
    for conn in rec.conns:
        assert conn.error is None, f"recorder refused bytes {bytes(conn.data)[:200]!r}"
    got = rec.received()
    assert count_requests(got) == 1 and got.startswith(b"GET /sentinel "), got[:300]


@pytest.mark.parametrize("case", _params(REQUEST_CASES))
def test_malformed_request_is_refused_and_nothing_forwarded(hop: TwoHop, case: Case) -> None:
    hop.new_case()
    ans = exchange(hop.port, case.data, until_close=True)
    assert ans.statuses[:1] == [case.status], ans.raw[:300]
    assert len(ans.final) == 1, f"one answer, then nothing: {ans.raw[:500]!r}"
    assert ans.closed, "the connection must be closed after a refusal"
    _sentinel(hop)
    _assert_only_sentinel(hop)


# -- smuggling through bodies that are well framed: exactly one request arrives ------------

@dataclass(frozen=True, slots=True)
class Carried:
    id: str
    what: str
    data: bytes
    body: bytes  # what the upstream must receive as the body, de-chunked


_CARRIED = [
    Carried("request_in_cl_body", "a request's bytes as a Content-Length body",
            _post(b"Content-Length: %d\r\n" % len(_SMUGGLED), _SMUGGLED), _SMUGGLED),
    Carried("request_in_chunk", "a request's bytes as a chunk",
            _post(_CHUNKED, b"%x\r\n" % len(_SMUGGLED) + _SMUGGLED + b"\r\n0\r\n\r\n"),
            _SMUGGLED),
    Carried("chunk_ext_with_request", "a quoted chunk extension spelling a request",
            _post(_CHUNKED, b'5;x="GET /smuggled HTTP/1.1"\r\nhello\r\n0\r\n\r\n'), b"hello"),
    Carried("get_with_cl_body", "a GET with a Content-Length body that is a request",
            b"GET / HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(_SMUGGLED)
            + _SMUGGLED, _SMUGGLED),
    Carried("connection_lists_content_length", "`Connection: content-length` to strip framing",
            _post(b"Connection: content-length\r\nContent-Length: 5\r\n", b"hello"),
            b"hello"),
    Carried("connection_lists_transfer_encoding", "`Connection: transfer-encoding` on chunked",
            _post(b"Connection: Transfer-Encoding\r\n" + _CHUNKED, b"5\r\nhello\r\n0\r\n\r\n"),
            b"hello"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in _CARRIED])
def test_request_inside_a_body_arrives_as_one_request(hop: TwoHop, case: Carried) -> None:
    rec = hop.new_case()
    ans = exchange(hop.port, case.data)
    assert ans.statuses == [200], ans.raw[:300]
    _sentinel(hop)
    seen = rec.wait_requests(2)
    # The recorder's parser and a fresh one over the raw bytes agree: two requests, the
    # carried one with its whole body, and no /smuggled.
    assert [s.request.target for s in seen] == [b"/", b"/sentinel"]
    assert seen[0].body_len == len(case.body)
    assert sum(count_requests(bytes(c.data)) for c in rec.conns) == 2
    assert case.body in rec.received()


_BAD_BIG_BODY = _post(_CHUNKED, b"".join(b"%x\r\n%s\r\n" % (8192, b"x" * 8192) for _ in range(16))
                      + b"zz\r\nhello\r\n0\r\n\r\n" + _SMUGGLED)  # 128 KiB, then a bad chunk


def test_bad_chunk_after_the_head_was_forwarded_resets_upstream(hop: TwoHop) -> None:
    """Past the 64 KiB replay buffer the head and body are streamed before the bad chunk
    arrives: the upstream may see a partial request, never a complete one, and its
    connection is closed (nothing can be smuggled behind it)."""
    rec = hop.new_case()
    ans = exchange(hop.port, _BAD_BIG_BODY, until_close=True)
    assert ans.closed
    assert len(ans.final) == 1 and ans.statuses[0] >= 400, ans.raw[:300]
    _sentinel(hop)
    seen = rec.wait_requests(1)
    assert [s.request.target for s in seen] == [b"/sentinel"]
    partial = [c for c in rec.conns if c.data.startswith(b"POST / HTTP/1.1\r\n")]
    for conn in partial:
        assert conn.closed.wait(10), "the upstream connection of the bad body stays open"
        assert not conn.requests


def test_bad_chunk_after_the_head_was_forwarded_is_400(hop: TwoHop) -> None:
    """The client broke the framing, not the upstream: 400, as for a small body."""
    hop.new_case()
    ans = exchange(hop.port, _BAD_BIG_BODY, until_close=True)
    assert ans.statuses == [400], ans.raw[:300]


# -- response side: malformed upstream answers give 502 and a discarded connection -------

@dataclass(frozen=True, slots=True)
class Bad:
    id: str
    what: str
    reply: bytes
    status: int = 502
    xfail: str = ""


_OK2 = b"Content-Length: 2\r\n\r\nok"

RESPONSE_CASES = [
    Bad("resp_cl_and_te", "Content-Length with Transfer-Encoding",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    Bad("resp_two_cl", "two differing Content-Length lines",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"),
    Bad("resp_cl_list", "Content-Length `2, 2`",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"),
    Bad("resp_cl_not_digits", "Content-Length `+2`",
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok"),
    Bad("resp_te_gzip", "Transfer-Encoding `gzip` (not ending in chunked)",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok"),
    Bad("resp_te_chunked_twice", "Transfer-Encoding `chunked, chunked`",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    Bad("resp_bad_chunk_size", "chunk size `zz`",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    Bad("resp_chunk_data_too_long", "bytes after the chunk data",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX\r\n0\r\n\r\n"),
    Bad("resp_chunk_ext_lf", "LF in a chunk extension",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a\nb\r\nok\r\n0\r\n\r\n"),
    Bad("resp_trailer_cl", "trailer carrying Content-Length",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
        b"Content-Length: 2\r\n\r\n"),
    Bad("resp_obs_fold", "obs-fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n" + _OK2),
    Bad("resp_nul_in_header", "NUL in a field value", b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n" + _OK2),
    Bad("resp_cr_in_header", "CR in a field value", b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\n" + _OK2),
    Bad("resp_ws_before_colon", "whitespace before the colon",
        b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"),
    Bad("resp_bare_lf", "head lines ended by bare LF",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    Bad("resp_101_without_upgrade", "101 to a request that asked no Upgrade",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
    Bad("resp_status_600", "status 600", b"HTTP/1.1 600 Odd\r\n" + _OK2),
    Bad("resp_status_2_digits", "status `20`", b"HTTP/1.1 20 OK\r\n" + _OK2),
    Bad("resp_no_status", "status line `HTTP/1.1 OK`", b"HTTP/1.1 OK\r\n" + _OK2),
    Bad("resp_http_2_0", "version HTTP/2.0", b"HTTP/2.0 200 OK\r\n" + _OK2),
    Bad("resp_garbage", "not HTTP at all", b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
    Bad("resp_too_many_headers", "101 header fields",
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + _OK2),
    Bad("resp_head_over_60k", "a 61 KiB head", b"HTTP/1.1 200 OK\r\n" + _BIG * 61 + _OK2),
    Bad("resp_204_with_body", "204 followed by body bytes",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"),
    Bad("resp_two_responses", "a second response in the same segment, none asked for",
        b"HTTP/1.1 200 OK\r\n" + _OK2 + b"HTTP/1.1 200 OK\r\n" + _OK2),
]


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)]
                 if c.xfail else []) for c in RESPONSE_CASES])
def test_malformed_response_gives_502_and_the_connection_is_discarded(hop: TwoHop,
                                                                       case: Bad) -> None:
    rec = hop.new_case(Reply(case.reply))
    ans = exchange(hop.port, b"GET /bad HTTP/1.1\r\nHost: echo\r\n\r\n")
    assert ans.statuses == [case.status], ans.raw[:300]
    seen = rec.wait_requests(1)
    assert [s.request.target for s in seen] == [b"/bad"], "no retry of the request"
    bad_conn = next(c for c in rec.conns if c.requests)
    assert bad_conn.closed.wait(10), "the upstream connection that broke framing is discarded"
    rec.reply = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
    ans = exchange(hop.port, b"GET /next HTTP/1.1\r\nHost: echo\r\n\r\n")
    assert ans.statuses == [200] and ans.final[0][1] == b"next", ans.raw[:300]
    nxt = [c for c in rec.conns if c.requests and c.requests[0].request.target == b"/next"]
    assert len(nxt) == 1 and nxt[0] is not bad_conn


def test_bad_chunk_after_the_response_head_cuts_the_client_connection(hop: TwoHop) -> None:
    """The head is relayed before the bad chunk arrives: the only honest signal left is to
    close the client connection without the last chunk (the client sees a truncated body)."""
    rec = hop.new_case(Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
                             late=b"zz\r\nhello\r\n0\r\n\r\n"))
    ans = exchange(hop.port, b"GET /bad HTTP/1.1\r\nHost: echo\r\n\r\n", until_close=True)
    assert ans.closed
    assert ans.statuses in ([200], [502]), ans.raw[:300]
    if ans.statuses == [200]:
        assert not ans.final or ans.final[0][1] != b"ok", "a truncated body must not look complete"
    bad_conn = next(c for c in rec.conns if c.requests)
    assert bad_conn.closed.wait(10)
    rec.reply = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
    ans = exchange(hop.port, b"GET /next HTTP/1.1\r\nHost: echo\r\n\r\n")
    assert ans.statuses == [200] and ans.final[0][1] == b"next"


def test_a_second_unsolicited_response_is_never_served_to_the_next_request(hop: TwoHop) -> None:
    """Response desync: the upstream answers one request twice, the second time once the
    connection is idle in the pool. That response must not answer the next request."""
    evil = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"
    rec = hop.new_case(Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst", late=evil))
    ans = exchange(hop.port, b"GET /one HTTP/1.1\r\nHost: echo\r\n\r\n")
    assert ans.statuses == [200] and ans.final[0][1] == b"first"
    rec.wait_requests(1)
    first_conn = next(c for c in rec.conns if c.requests)
    assert first_conn.late_sent.wait(10)
    time.sleep(0.2)  # loopback delivery: lets the proxy's loop read it (not a timing assertion)
    rec.reply = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
    ans = exchange(hop.port, b"GET /two HTTP/1.1\r\nHost: echo\r\n\r\n")
    assert ans.statuses == [200] and ans.final[0][1] == b"second", ans.raw[:300]
    assert first_conn.closed.wait(10), "a connection that sent an unsolicited response is closed"


# -- the report: docs/hostile-input.md from these tables and a run of both files ---------

_SECTIONS = {
    "test_malformed_request_is_refused_and_nothing_forwarded":
        ("Requests refused", "the status shown, connection closed, nothing reaches the upstream"),
    "test_request_inside_a_body_arrives_as_one_request":
        ("Requests carried inside well-framed bodies",
         "200; the upstream gets exactly one request with the whole body"),
    "test_malformed_response_gives_502_and_the_connection_is_discarded":
        ("Malformed responses", "502, no retry, the upstream connection closed, the next request "
         "served on a new one"),
}
_OTHER = ("Other cases", "")
_HERE = Path(__file__).resolve().parent
_FILES = [_HERE / "test_framing.py", _HERE / "test_http_semantics.py",
          _HERE / "test_regex_routes.py", _HERE / "test_request_body_limits.py"]
# Files after test_framing.py: one section each, named here.
_FILE_SECTIONS = {
    "test_http_semantics.py": "HTTP/1.1 semantics (`test_http_semantics.py`)",
    "test_regex_routes.py": "Hostile values against regex routes (`test_regex_routes.py`)",
    "test_request_body_limits.py":
        "Stalled and oversized request bodies (`test_request_body_limits.py`)",
}


class _Collector:
    """A pytest plugin keeping the collected items and each one's outcome."""

    def __init__(self) -> None:
        self.items: list[pytest.Item] = []
        self.outcome: dict[str, str] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = list(session.items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        xfail = getattr(report, "wasxfail", None)
        if report.when == "call" or report.outcome != "passed":
            if xfail is not None and report.skipped:
                self.outcome[report.nodeid] = f"**fails: {xfail}** (xfail)"
            elif report.failed:
                self.outcome[report.nodeid] = "**FAILS**"
            elif report.passed:
                self.outcome.setdefault(report.nodeid, "pass")


def _row(item: pytest.Item) -> tuple[str, str, str]:
    """(id, what, expected) for one test item."""
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("case") if callspec is not None else None
    if isinstance(case, Case):
        return case.id, case.what, str(case.status)
    if isinstance(case, Bad):
        return case.id, case.what, str(case.status)
    if isinstance(case, Carried):
        return case.id, case.what, "200"
    function = getattr(item, "function", None)
    doc = (function.__doc__ or "") if function is not None else ""
    what = " ".join(doc.strip().split("\n\n")[0].split())
    name = item.name.removeprefix("test_").replace("_", " ")
    return item.name.removeprefix("test_"), what or name, ""


def _markdown(collector: _Collector) -> str:
    out = [
        "# Hostile HTTP/1.1 input through two proxies: cases and results",
        "",
        "Generated by `.venv/bin/python -m tests.integration.test_framing docs/hostile-input.md`"
        " from the parametrize tables of `tests/integration/test_framing.py`,",
        "`test_http_semantics.py`, `test_regex_routes.py` and `test_request_body_limits.py` (in",
        "`tests/integration/`) and the outcome of running them; do not edit by hand.",
        "",
        "Path: raw client socket -> client's proxy (explicit listener) -> mTLS -> echo's proxy ->",
        "`tests/integration/recorder.py`, an upstream that records the exact bytes of every",
        "connection (config `tests/integration/fixtures/framing`: one service `echo`, no",
        "retries, so nothing is replayed). Each request-side case ends with a sentinel request on",
        "a new connection and asserts that the sentinel is the only thing the recorder got.",
        "**fails** rows are known proxy bugs, kept as strict xfails until fixed; the reason says",
        "what goes wrong. Parser bugs found on the way were fixed in `proxy/http1` with tests in",
        "`tests/proxy/http1/test_regressions.py`. The last two sections run on their own configs",
        "(a regex route; body timeouts, the example shop app): each file's docstring says which.",
        "",
    ]
    groups: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {}
    for item in collector.items:
        func = getattr(item, "originalname", item.name)
        section = _SECTIONS.get(func, _OTHER)
        if item.path.name in _FILE_SECTIONS:
            section = (_FILE_SECTIONS[item.path.name], "")
        ident, what, expected = _row(item)
        result = collector.outcome.get(item.nodeid, "not run")
        groups.setdefault(section, []).append((ident, what, expected, result))
    for (title, expected_text), rows in groups.items():
        out += [f"## {title}", ""]
        if expected_text:
            out += [f"Expected: {expected_text}.", ""]
        with_status = any(r[2] for r in rows)
        out.append("| case | input | " + ("status | " if with_status else "") + "result |")
        out.append("|---|---|" + ("---|" if with_status else "") + "---|")
        for ident, what, expected, result in rows:
            what = what.replace("|", "\\|")
            status = f" {expected} |" if with_status else ""
            out.append(f"| `{ident}` | {what} |{status} {result} |")
        out.append("")
    total = len(collector.items)
    passed = sum(1 for r in collector.outcome.values() if r == "pass")
    known = sum(1 for r in collector.outcome.values() if "(xfail)" in r)
    out.append(f"{total} cases: {passed} pass, {known} known proxy bugs (xfail), "
               f"{total - passed - known} other.")
    from tests.proxy.dns.test_hostile import render_table  # its own test checks its rows

    return "\n".join(out) + "\n\n" + render_table()


# Cases that need root and network namespaces (interception) cannot run here: they are
# written by hand below this line of docs/hostile-input.md, which regeneration keeps.
HAND_WRITTEN = "<!-- hand-written below: kept by the generator -->"


def main(argv: list[str]) -> int:
    collector = _Collector()
    code = pytest.main([*map(str, _FILES), "-q", "-p", "no:cacheprovider"], plugins=[collector])
    text = _markdown(collector)
    if argv:
        old = Path(argv[0]).read_text() if Path(argv[0]).exists() else ""
        if HAND_WRITTEN in old:
            text += "\n" + HAND_WRITTEN + old.split(HAND_WRITTEN, 1)[1]
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return int(code)


if __name__ == "__main__":
    # Through the importable module: the items pytest collects hold its Case classes, not
    # __main__'s.
    from tests.integration.test_framing import main as _main

    sys.exit(_main(sys.argv[1:]))
