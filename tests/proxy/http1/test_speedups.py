"""proxy/http1/_speedups.c against its pure-Python twins: the same answer for every input.

The C module is part of the compiled core; these tests run where it is loaded (CI builds it
and sets MESH_EXPECT_COMPILED=1, so there they must run). The parsers' and renderers' own
tests (the framing matrix) run on whichever core is active: CI runs them both ways."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from types import ModuleType

import pytest

from proxy.http1.grammar import MALFORMED, TOO_MANY, split_fields_py
from proxy.http1.render import render_request_py, render_response_py


def _native() -> ModuleType:
    try:
        from proxy.http1 import _speedups
    except ImportError:
        from proxy import compiled

        switched_off = os.environ.get("MESH_COMPILED") == "0"  # tests/run.sh's second pass
        if os.environ.get("MESH_EXPECT_COMPILED") == "1" and not switched_off:
            pytest.fail(f"MESH_EXPECT_COMPILED=1 but _speedups is not loaded: {compiled.STATUS}")
        pytest.skip(f"the C module is part of the compiled core: {compiled.STATUS}")
    return _speedups


# Bytes that matter to the grammar: token characters of both cases, the separators, OWS,
# the line ends, and the octets a field value may not hold (CTLs, NUL, DEL) or may (obs-text).
_NAME = b"abcXYZ-_0!~`|"
_VALUE = b"aZ09 \t/;=,\"()\x80\xff"
_BAD = b"\r\n\x00\x01\x1f\x7f :@"


def _line(rng: random.Random) -> bytes:
    name = bytes(rng.choice(_NAME) for _ in range(rng.randint(1, 6)))
    value = bytes(rng.choice(_VALUE) for _ in range(rng.randint(0, 12)))
    line = name + b":" + rng.choice([b"", b" ", b"\t", b"  "]) + value
    line += rng.choice([b"", b"", b"", b" ", b"\t \t"])
    if rng.random() < 0.25:  # one damaged byte somewhere in the line
        at = rng.randint(0, len(line))
        line = line[:at] + bytes([rng.choice(_BAD)]) + line[at + 1 :]
    if rng.random() < 0.03:
        line = b" " + line  # obs-fold
    return line + b"\r\n"


def _block(rng: random.Random) -> tuple[bytes, int, int]:
    """(buf, start, end): a head's field block cut as the parsers cut it, ending in CRLF."""
    prefix = rng.choice([b"", b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n"])
    block = b"".join(_line(rng) for _ in range(rng.randint(0, 8)))
    if rng.random() < 0.05:
        block += b"\r\n"  # an empty line inside the block
    buf = prefix + block + b"\r\n" + rng.choice([b"", b"body", b"\r\n"])
    return buf, len(prefix), len(prefix) + len(block)


def test_split_fields_agrees_with_the_python_twin() -> None:
    native = _native()
    rng = random.Random(20261126)
    seen = {"ok": 0, MALFORMED: 0, TOO_MANY: 0}
    for _ in range(30_000):
        buf, start, end = _block(rng)
        max_headers = rng.choice([100, 100, 3, 0])
        want = split_fields_py(buf, start, end, max_headers)
        got = native.split_fields(buf, start, end, max_headers)
        assert got == want, (buf, start, end, max_headers)
        seen["ok" if isinstance(want, tuple) else want] += 1
    assert min(seen.values()) > 1000, seen  # every outcome well covered


def test_split_fields_examples() -> None:
    native = _native()
    buf = b"Host: a\r\nX-A:  b \t\r\nx-b:\r\nETag: \"\x80\"\r\n"
    fields, names = native.split_fields(buf, 0, len(buf), 100)
    assert fields == [(b"Host", b"a"), (b"X-A", b"b"), (b"x-b", b""), (b"ETag", b"\"\x80\"")]
    assert names == [b"host", b"x-a", b"x-b", b"etag"]
    assert native.split_fields(buf, 0, len(buf), 3) == TOO_MANY
    for bad in (b"Host : a\r\n", b"Host: a\nX: b\r\n", b"Ho\x00st: a\r\n", b"X: a\rb\r\n",
                b" X: folded\r\n", b"X: \x7f\r\n", b": empty name\r\n", b"\r\n"):
        assert native.split_fields(bad, 0, len(bad), 100) == MALFORMED, bad
        assert split_fields_py(bad, 0, len(bad), 100) == MALFORMED, bad


def _part(rng: random.Random, alphabet: bytes, n: int) -> bytes:
    part = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, n)))
    if rng.random() < 0.05:
        at = rng.randint(0, len(part))
        part = part[:at] + bytes([rng.choice(b"\r\n\x00")]) + part[at:]
    return part


def _outcome(render: object, *args: object) -> object:
    try:
        return render(*args)  # type: ignore[operator]
    except ValueError as exc:
        return ("ValueError", str(exc))


def test_render_agrees_with_the_python_twins() -> None:
    native = _native()
    rng = random.Random(7)
    raised = 0
    for _ in range(20_000):
        headers = [(_part(rng, _NAME, 8), _part(rng, _VALUE, 16))
                   for _ in range(rng.randint(0, 6))]
        version = rng.choice([b"1.1", b"1.0"])
        method, target = _part(rng, b"GETPOST", 6), b"/" + _part(rng, b"abc/?=&%", 20)
        want = _outcome(render_request_py, method, target, version, headers)
        assert _outcome(native.render_request, method, target, version, headers) == want
        status, reason = rng.choice([200, 204, 404, 503, 101, 7, 1000]), _part(rng, b"OK ", 8)
        want_r = _outcome(render_response_py, version, status, reason, headers)
        assert _outcome(native.render_response, version, status, reason, headers) == want_r
        raised += isinstance(want, tuple) + isinstance(want_r, tuple)
    assert raised > 1000  # the CR/LF/NUL refusal is well covered


def test_render_leaves_other_types_to_python() -> None:
    native = _native()
    assert native.render_request(b"GET", b"/", b"1.1", [(b"a", bytearray(b"b"))]) is None
    assert native.render_request(b"GET", b"/", b"1.1", [[b"a", b"b"]]) is None
    assert native.render_response(b"1.1", 2**70, b"OK", []) is None
    assert native.render_response(b"1.1", 200, b"OK", ((b"a", b"b"),)) == (
        b"HTTP/1.1 200 OK\r\na: b\r\n\r\n"
    )


def test_strip_fields_agrees_with_the_python_twin() -> None:
    from proxy.http1.render import HOP_BY_HOP, strip_fields_py

    native = _native()
    rng = random.Random(11)
    drops = [HOP_BY_HOP, frozenset(), frozenset((b"a", b"x-b")), frozenset((b"c",))]
    conn_values = [b"close", b"Keep-Alive", b"x-b", b"A", b"te, x-b", b"", b"upgrade", b"c"]
    taken = 0
    for _ in range(20_000):
        names = [rng.choice([b"a", b"x-b", b"c", b"connection", b"te", b"host"])
                 for _ in range(rng.randint(0, 8))]
        headers = [(n.upper() if rng.random() < 0.5 else n,
                    rng.choice(conn_values) if n == b"connection" else b"v%d" % i)
                   for i, n in enumerate(names)]
        drop = rng.choice(drops)
        want = strip_fields_py(headers, names, drop)
        got = native.strip_fields(headers, names, drop)
        if got is None:
            continue
        taken += 1
        assert got == want, (headers, drop)
        assert got is not headers  # always a new list: callers append to it
    assert taken > 10_000, taken
    headers = [(b"Connection", b"x-b"), (b"X-B", b"1"), (b"Y", b"2")]
    assert native.strip_fields(headers, [b"connection", b"x-b", b"y"], HOP_BY_HOP) is None
    assert native.strip_fields([(b"a", b"1")], [], HOP_BY_HOP) is None  # lengths differ
    assert native.strip_fields(((b"a", b"1"),), [b"a"], HOP_BY_HOP) is None  # not a list
    assert native.strip_fields([(b"a", 1)], [b"a"], HOP_BY_HOP) is None  # not bytes


def _raised(f: Callable[..., object], *args: object) -> object:
    """f(*args), or the type and message of the ValueError it raised."""
    try:
        return f(*args)
    except ValueError as exc:
        return (type(exc), str(exc))


def test_forward_heads_agree_with_the_python_twins() -> None:
    """forward_request/forward_response strip and render in one pass: the same bytes as
    strip_fields then render, wherever they answer; the same refusal for a CR, LF or NUL."""
    from proxy.http1.events import Request, Response
    from proxy.http1.render import (
        HOP_BY_HOP,
        forward_request_head_py,
        forward_response_head_py,
    )

    native = _native()
    rng = random.Random(13)
    drops = [HOP_BY_HOP, frozenset(), frozenset((b"a", b"x-b")), frozenset((b"c",))]
    conn_values = [b"close", b"Keep-Alive", b"x-b", b"A", b"te, x-b", b"", b"upgrade", b"c"]
    extras: list[list[tuple[bytes, bytes]]] = [
        [], [(b"content-length", b"12")], [(b"x-request-id", b"ab"), (b"traceparent", b"00-1")],
        [(b"bad", b"a\r\nb")], [(b"nul", b"a\x00")],
    ]
    taken = 0
    for i in range(20_000):
        names = [rng.choice([b"a", b"x-b", b"c", b"connection", b"te", b"host"])
                 for _ in range(rng.randint(0, 8))]
        headers = [(n.upper() if rng.random() < 0.5 else n,
                    rng.choice(conn_values) if n == b"connection" else
                    rng.choice([b"v%d" % j, b"v%d" % j, b"v\n"]))
                   for j, n in enumerate(names)]
        drop = rng.choice(drops)
        extra = rng.choice(extras)
        if i % 2:
            req = Request(b"GET", b"/p?q", b"1.1", headers, None, False, True, None, False,
                          None, names)
            got = _raised(native.forward_request, req.method, req.target, req.version,
                          headers, names, drop, extra)
            want = _raised(forward_request_head_py, req, drop, extra)
        else:
            resp = Response(rng.choice([200, 404, 503, 599]), rng.choice([b"OK", b""]), b"1.1",
                            headers, None, False, True, False, names)
            body = rng.choice([b"", b"x", b"a body\r\n\r\nwith\x00anything"])  # never checked
            got = _raised(native.forward_response, b"1.1", resp.status, resp.reason, headers,
                          names, drop, extra, body)
            want = _raised(forward_response_head_py, resp, drop, extra, body)
        if got is None:
            continue
        taken += 1
        assert got == want, (headers, drop, extra)
    assert taken > 10_000, taken
    # Declined: what strip_fields declines, and what render declines.
    headers = [(b"Connection", b"x-b"), (b"X-B", b"1"), (b"Y", b"2")]
    names = [b"connection", b"x-b", b"y"]
    assert native.forward_request(b"GET", b"/", b"1.1", headers, names, HOP_BY_HOP, []) is None
    assert native.forward_response(b"1.1", 200, b"OK", [(b"a", 1)], [b"a"], HOP_BY_HOP,
                                   [], b"") is None
    assert native.forward_response(b"1.1", "200", b"OK", [], [], HOP_BY_HOP, [], b"") is None
    assert native.forward_response(b"1.1", 200, b"OK", [], [], HOP_BY_HOP, [], "x") is None
    assert native.forward_response(b"1.1", 204, b"", [], [], HOP_BY_HOP, [], b"\r\n") == (
        b"HTTP/1.1 204 \r\n\r\n\r\n")
    assert native.forward_request(b"GET", b"/", b"1.1", [], [], HOP_BY_HOP, [("a", b"")]) is None
    # Past the mask kept on the stack (128 fields): the same answer.
    many = [(b"f%d" % j, b"v") for j in range(300)]
    many_names = [n for n, _ in many]
    big = Request(b"GET", b"/", b"1.1", many, None, False, True, None, False, None, many_names)
    assert native.forward_request(b"GET", b"/", b"1.1", many, many_names, HOP_BY_HOP, []) == (
        forward_request_head_py(big, HOP_BY_HOP, []))


def test_split_fields_reuses_name_objects() -> None:
    """Names repeat across requests: the same objects come back (bounded cache), so a
    lowered name's hash is computed once; long names are made afresh each time."""
    native = _native()
    one = native.split_fields(b"Content-Type: a\r\n", 0, 17, 100)
    two = native.split_fields(b"Content-Type: b\r\n", 0, 17, 100)
    assert one[0][0][0] is two[0][0][0] and one[1][0] is two[1][0]
    assert one[1] == [b"content-type"] and one[0][0][1] == b"a" and two[0][0][1] == b"b"
    lower = native.split_fields(b"host: x\r\n", 0, 9, 100)
    assert lower[0][0][0] is lower[1][0]  # already lower case: one object for both
    long_name = b"X-" + b"a" * 60
    block = long_name + b": v\r\n"
    three = native.split_fields(block, 0, len(block), 100)
    four = native.split_fields(block, 0, len(block), 100)
    assert three == four and three[0][0][0] is not four[0][0][0]


def test_split_fields_reuses_whole_fields_but_never_credentials() -> None:
    """A field equal to the last one seen under its name comes back as the same tuple;
    a changed value, a long value and the credential fields are made afresh (no secret
    stays in the cache past its request)."""
    native = _native()

    def field(line: bytes) -> tuple[bytes, bytes]:
        pair: tuple[bytes, bytes] = native.split_fields(line, 0, len(line), 100)[0][0]
        return pair

    assert field(b"Server: nginx\r\n") is field(b"Server: nginx\r\n")
    first, other = field(b"Server: nginx\r\n"), field(b"Server: envoy\r\n")
    assert other == (b"Server", b"envoy") and other is not first
    assert field(b"Server: envoy\r\n") is other  # the slot now keeps the new value
    assert field(b"Server:  envoy \r\n") is other  # OWS is not part of the value
    long_value = b"X-Long: " + b"v" * 65 + b"\r\n"
    assert field(long_value) == field(long_value) and field(long_value) is not field(long_value)
    for name in (b"Authorization", b"proxy-authorization", b"Cookie", b"SET-COOKIE"):
        line = name + b": Bearer x\r\n"
        assert field(line) == (name, b"Bearer x")
        assert field(line) is not field(line), name


def test_hex_ids_agree_with_the_python_twins() -> None:
    from proxy.http1.render import hex_id_py
    from proxy.tracing.context import traceparent_py

    native = _native()
    rng = random.Random(3)
    for _ in range(5_000):
        t, s = rng.getrandbits(rng.choice([1, 64, 127, 128])), rng.getrandbits(rng.choice([1, 64]))
        th, sh = native.hex_id(t, 32), native.hex_id(s, 16)
        assert th == b"%032x" % t and sh == b"%016x" % s
        sampled = rng.random() < 0.5
        tp = native.traceparent(th, sh, sampled)
        assert tp == traceparent_py(th, sh, sampled) == b"00-%032x-%016x-%s" % (
            t, s, b"01" if sampled else b"00")
        digits = rng.choice([2, 8, 16, 32])
        v = rng.getrandbits(4 * digits)
        assert native.hex_id(v, digits) == hex_id_py(v, digits)
    # Outside its range the C twin declines; the Python one answers (wider, as %x does).
    assert native.traceparent(b"1" * 33, b"1" * 16, True) is None
    assert native.traceparent(b"1" * 32, b"1" * 15, True) is None
    assert native.traceparent(1, 1, True) is None  # not bytes
    assert native.hex_id(-1, 8) is None and native.hex_id(1 << 32, 8) is None
    assert native.hex_id(5, 3) is None and native.hex_id(True, 2) is None
    assert hex_id_py(1 << 32, 8) == b"100000000"


def test_name_index_agrees_with_the_python_twin() -> None:
    from proxy.http1.grammar import name_index_py

    native = _native()
    rng = random.Random(5)
    pool = [b"host", b"connection", b"content-length", b"te", b"x-a", b""]
    for _ in range(5_000):
        names = [rng.choice(pool) for _ in range(rng.randint(0, 8))]
        key = bytes(rng.choice(pool))  # equal bytes, not the same object
        start = rng.choice([0, 0, 1, 3, 9])
        assert native.name_index(names, key, start) == name_index_py(names, key, start)
    assert native.name_index([b"a", "a"], b"b", 0) == -2  # not all bytes: the twin decides
    assert native.name_index((b"a",), b"a", 0) == -2


def test_parse_traceparent_agrees_with_the_python_twin() -> None:
    from proxy.tracing.context import parse_traceparent_py

    native = _native()
    rng = random.Random(9)
    hexd = b"0123456789abcdef"
    seen_ok = 0
    for _ in range(20_000):
        version = rng.choice([b"00", b"01", b"ff", b"cc", b"0G"])
        tid = bytes(rng.choice(hexd) for _ in range(32)) if rng.random() < 0.9 else b"0" * 32
        sid = bytes(rng.choice(hexd) for _ in range(16)) if rng.random() < 0.9 else b"0" * 16
        flags = rng.choice([b"00", b"01", b"03", b"ff"])
        v = b"-".join((version, tid, sid, flags))
        v += rng.choice([b"", b"", b"-x", b"-", b"-a\nb", b"x"])
        v = rng.choice([b"", b" ", b"\t"]) + v + rng.choice([b"", b" ", b"\r\n"])
        if rng.random() < 0.2:  # one damaged byte
            at = rng.randrange(len(v))
            v = v[:at] + bytes([rng.choice(b"A-xZ \n")]) + v[at + 1 :]
        want = parse_traceparent_py(v)
        assert native.parse_traceparent(v) == want, v
        seen_ok += want is not None
    assert seen_ok > 3000


def test_start_lines_and_host_agree_with_the_python_twins() -> None:
    from proxy.http1.grammar import request_line_py, status_line_py, valid_host_py

    native = _native()
    rng = random.Random(13)
    ok = {"request": 0, "status": 0, "host": 0}
    for _ in range(20_000):
        method = rng.choice([b"GET", b"POST", b"M-SEARCH", b"", b"G\x00T", b"get"])
        target = rng.choice([b"/", b"/a?b=c", b"*", b"http://x/", b"", b"/\x7f", b"/\x80"])
        version = rng.choice([b"1.1", b"1.0", b"2.0", b"1.x", b"11"])
        line = method + b" " + target + b" HTTP/" + version + rng.choice([b"\r\n", b"\n", b""])
        if rng.random() < 0.1:
            line = line.replace(b" ", b"  ", 1)
        prefix = rng.choice([b"", b"\r\n", b"xx"])
        buf = prefix + line + b"Host: a\r\n\r\n"
        start, end = len(prefix), rng.choice([len(buf), len(prefix) + len(line), len(buf) - 3])
        want = request_line_py(buf, start, end)
        assert native.request_line(buf, start, end) == want, (buf, start, end)
        ok["request"] += want is not None

        status = rng.choice([b"200", b"404", b"099", b"2000", b"20", b"abc"])
        reason = rng.choice([b" OK", b" ", b"", b" Not Found", b" a\x00b", b" \x80\t", b"x"])
        sline = b"HTTP/" + version + b" " + status + reason + rng.choice([b"\r\n", b"\n"])
        sbuf = prefix + sline + b"\r\n"
        want_s = status_line_py(sbuf, len(prefix), len(sbuf))
        assert native.status_line(sbuf, len(prefix), len(sbuf)) == want_s, sbuf
        ok["status"] += want_s is not None

        host = rng.choice([b"", b"orders", b"orders:8080", b"[::1]", b"[::1]:80", b"a b",
                           b"[]", b"[zz]", b":", b"x:", b"x:8a", b"%41.b", b"[::1", b"x]"])
        if rng.random() < 0.2:
            host += bytes([rng.choice(b"[]:@/ \x00-.9")])
        assert native.valid_host(host) == valid_host_py(host), host
        ok["host"] += valid_host_py(host)
    assert min(ok.values()) > 1000, ok


def test_bounds_past_the_buffer_are_clamped() -> None:
    native = _native()
    assert native.split_fields(b"a: b\r\n", 50, 80, 100) == ([], [])
    assert native.request_line(b"GET / HTTP/1.1\r\n", 99, 120) is None
    assert native.status_line(b"HTTP/1.1 200 OK\r\n", 99, 120) is None
    assert native.strip_fields([(b"a", b"1")], ["a"], frozenset()) is None  # not bytes names


def test_block_end_agrees_with_bytes_find() -> None:
    from proxy.http1.grammar import block_end_py

    native = _native()
    rng = random.Random(7)
    for _ in range(20_000):
        buf = bytes(rng.choice(b"\r\nab") for _ in range(rng.randint(0, 16)))
        pos = rng.randint(-20, 20)
        assert native.block_end(buf, pos) == block_end_py(buf, pos), (buf, pos)


# Field lines that decide a head's framing, each as a client or a server might send it:
# plain, in other cases, repeated, listed, malformed.
_FRAMING_LINES = [
    b"Content-Length: 5", b"content-length: 0", b"Content-Length: 007", b"Content-Length: ",
    b"Content-Length: 5, 5", b"Content-Length: -1", b"Content-Length: 1234567890123456789",
    b"Content-Length: 5a", b"Transfer-Encoding: chunked", b"Transfer-Encoding: Chunked",
    b"transfer-encoding: gzip, chunked", b"Transfer-Encoding: chunked,", b"Transfer-Encoding: x",
    b"Connection: close", b"Connection: Keep-Alive", b"Connection: keep-alive, Upgrade",
    b"Connection: upgrade", b"Connection: ", b"Connection: TE", b"Upgrade: websocket",
    b"Expect: 100-continue", b"Expect: x", b"Host: a", b"Host: orders:8080", b"HOST: b",
    b"Host: a b", b"Host: ", b"X-A: 1", b"Accept: */*", b"Content-Type: text/plain",
]


_PLAIN_LINES = [b"X-A: 1", b"Accept: */*", b"Content-Length: 5", b"Connection: keep-alive"]


def _head_lines(rng: random.Random) -> bytes:
    lines = [
        rng.choice(_FRAMING_LINES if rng.random() < 0.3 else _PLAIN_LINES)
        for _ in range(rng.randint(0, 4))
    ]
    return b"".join(line + b"\r\n" for line in lines)


def _agree(c_fn, twin, cases) -> None:  # type: ignore[no-untyped-def]
    """Each (buf, start, end, max_headers) the C function takes gets the twin's answer; a
    head the twin refuses (ProtocolError) must be declined (None). Both outcomes common."""
    from proxy.http1.events import ProtocolError

    taken = declined = 0
    for args in cases:
        try:
            want = twin(*args)
        except ProtocolError as error:
            want = error
        got = c_fn(*args)
        if got is None:
            declined += 1
        else:
            taken += 1
            assert got == want, (args, got, want)
    assert taken > 3000 and declined > 3000, (taken, declined)


def _requests(rng: random.Random, n: int):  # type: ignore[no-untyped-def]
    for _ in range(n):
        method = rng.choice([b"GET", b"GET", b"POST", b"CONNECT", b"OPTIONS", b"get"])
        target = rng.choice([b"/", b"/a?b", b"/", b"*", b"http://x/", b"x:1", b"/\x80"])
        version = rng.choice([b"1.1", b"1.1", b"1.0", b"2.0"])
        host = rng.choice([b"Host: orders\r\n"] * 4 + [b"", b"Host: a\r\nHost: a\r\n"])
        block = method + b" " + target + b" HTTP/" + version + b"\r\n" + host + _head_lines(rng)
        prefix = rng.choice([b"", b"xx"])
        buf = prefix + block + b"\r\n"
        yield buf, len(prefix), len(prefix) + len(block), rng.choice([100, 100, 2])


def _responses(rng: random.Random, n: int):  # type: ignore[no-untyped-def]
    for _ in range(n):
        version = rng.choice([b"1.1", b"1.1", b"1.0", b"2.0"])
        status = rng.choice([b"200", b"204", b"101", b"100", b"099", b"600", b"abc"])
        reason = rng.choice([b" OK", b"", b" "])
        block = b"HTTP/" + version + b" " + status + reason + b"\r\n" + _head_lines(rng)
        yield block + b"\r\nbody", 0, len(block), rng.choice([100, 100, 2])


def test_request_head_agrees_with_the_python_twin() -> None:
    from proxy.http1.request import request_head_py

    _agree(_native().request_head, request_head_py, _requests(random.Random(11), 30_000))


def test_response_head_agrees_with_the_python_twin() -> None:
    from proxy.http1.response import response_head_py

    _agree(_native().response_head, response_head_py, _responses(random.Random(12), 30_000))


def test_usual_heads_are_taken_in_c() -> None:
    """The C twins decline what they do not handle; the heads nearly all traffic carries
    must not be among those, or the parsers silently pay the Python path again."""
    native = _native()
    get = b"GET /api HTTP/1.1\r\nHost: orders:8080\r\nAccept: */*\r\nConnection: keep-alive\r\n"
    assert native.request_head(get, 0, len(get), 100)[7] is True
    post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\nX-Request-Id: 1\r\n"
    assert native.request_head(post, 0, len(post), 100)[5] == 1024
    ok = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 1024\r\nConnection: keep-alive\r\n"
    assert native.response_head(ok, 0, len(ok), 100)[5:] == (1024, False, True)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
    assert native.response_head(chunked, 0, len(chunked), 100)[5:] == (None, True, True)
    closing = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n"
    assert native.response_head(closing, 0, len(closing), 100)[5:] == (3, False, False)


def test_render_refuses_cr_lf_nul_at_every_offset() -> None:
    """The C check counts CRs and LFs over the whole rendered head: a bad byte anywhere in
    a part of any length, next to any other byte, is found (and only a bad byte)."""
    native = _native()
    for length in range(0, 20):
        for at in range(length):
            for bad in (b"\r", b"\n", b"\x00"):
                for fill in (b"a", b"\x80", b"\x0e", b"\xff"):
                    value = fill * at + bad + fill * (length - at - 1)
                    with pytest.raises(ValueError):
                        native.render_request(b"GET", b"/", b"1.1", [(b"x", value)])
        for fill in (b"a", b"\x80", b"\x0e", b"\x0b", b"\x0c", b"\xff", b"\x01"):
            value = fill * length
            assert native.render_request(b"GET", b"/", b"1.1", [(b"x", value)]) == (
                b"GET / HTTP/1.1\r\nx: " + value + b"\r\n\r\n"
            )


def test_split_fields_finds_a_refused_octet_at_every_offset() -> None:
    """Values are scanned eight bytes a turn, then byte by byte: a CTL, DEL or bare CR/LF
    at any offset of a value of any length is refused, and every allowed octet (HTAB, SP,
    VCHAR, obs-text) at any offset is kept, as the Python twin decides."""
    native = _native()
    fills = (b"a", b" ", b"\t", b"\x80", b"\xff", b"~", b"!")
    octets = (b"\x00", b"\x01", b"\x1f", b"\x7f", b"\r", b"\n", b"\t", b"\x80", b"\x20")
    for length in range(0, 20):
        for at in range(length):
            for octet in octets:
                for fill in fills:
                    value = fill * at + octet + fill * (length - at - 1)
                    buf = b"X-A: " + value + b"\r\nB: c\r\n"
                    want = split_fields_py(buf, 0, len(buf), 100)
                    assert native.split_fields(buf, 0, len(buf), 100) == want, buf


def test_random_hex_ids_are_hex_nonzero_distinct_and_differ_after_fork() -> None:
    native = _native()
    seen = set()
    for digits in (16, 32):
        for _ in range(2_000):
            v = native.random_hex(digits)
            assert len(v) == digits and set(v) <= set(b"0123456789abcdef") and v.strip(b"0")
            seen.add(v)
    assert len(seen) == 4_000  # 64 and 128 random bits: a repeat means a broken generator
    with pytest.raises(ValueError):
        native.random_hex(8)
    # A forked child is reseeded: its next id is not the parent's next id.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one id up the pipe, then out without any cleanup
        os.write(write, native.random_hex(32))
        os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != native.random_hex(32)


def test_hex_id_word_sized_values_at_their_edges() -> None:
    from proxy.http1.render import hex_id_py

    native = _native()
    for digits in (2, 8, 16):
        top = (1 << (4 * digits)) - 1
        for v in (0, 1, top, top >> 1, 0x0123456789ABCDEF & top):
            assert native.hex_id(v, digits) == hex_id_py(v, digits)
        assert native.hex_id(top + 1, digits) is None  # the twin answers (wider)
    assert native.hex_id(1 << 64, 16) is None and native.hex_id(-5, 16) is None


def test_trace_names_agrees_with_the_python_twin() -> None:
    from proxy.tracing.context import TRACE_HEADERS, trace_names_py

    native = _native()
    rng = random.Random(17)
    near = [b"traceparent2", b"tracestate", b"b", b"b4", b"x-b3-", b"x-b3-trace", b"x-b3-spanids",
            b"x-b4-traceid", b"host", b"x-request-id", b""]
    pool = sorted(TRACE_HEADERS) + near
    seen = set()
    for _ in range(20_000):
        names = [bytes(rng.choice(pool)) for _ in range(rng.randint(0, 7))]  # not the same objects
        want = trace_names_py(names)
        assert native.trace_names(names) == want, names
        seen.add(want % 2)
        seen.add(min(want, 2))
    assert seen == {0, 1, 2}
    assert native.trace_names([b"a", "traceparent"]) == -2 and native.trace_names((b"b3",)) == -2


# Lines a server's whole response may carry, for relay_response: the hop-by-hop fields the
# proxy drops, Connection fields (one listing a field present), plain ones, and now and
# then one that decides or breaks the framing.
_RELAY_LINES = [
    b"Keep-Alive: timeout=5", b"TE: trailers", b"Trailer: X-T", b"Proxy-Connection: close",
    b"Connection: keep-alive", b"Connection: close", b"Connection: Keep-Alive",
    b"Connection: x-a", b"Connection: X-Gone", b"Connection: proxy-connection",
    b"Server: nginx", b"Date: Tue, 01 Jan 2030 00:00:00 GMT", b"ETag: \"5f-1\"",
    b"X-Empty:", b"X-Ows:  \t v \t ", b"x-a: 2", b"Set-Cookie: a=b", b"Upgrade: h2c",
]


def _whole_responses(rng: random.Random, n: int):  # type: ignore[no-untyped-def]
    """(buf, method, max_headers, max_head_bytes): whole responses as a server sends them,
    mostly well-formed, with a Content-Length that is right, missing, wrong or repeated."""
    for _ in range(n):
        version = rng.choice([b"1.1"] * 6 + [b"1.0", b"2.0"])
        status = rng.choice([b"200"] * 6 + [b"201", b"404", b"503", b"599", b"204", b"304",
                                             b"101", b"100", b"199", b"600", b"20x"])
        reason = rng.choice([b" OK", b" OK", b"", b" ", b" Not Found", b" a\tb ", b" \x80"])
        body = bytes(rng.choice(b"ab\r\n\x00") for _ in range(rng.choice([0, 1, 5, 40])))
        lines = [rng.choice(_FRAMING_LINES if rng.random() < 0.1 else _RELAY_LINES)
                 for _ in range(rng.randint(0, 5))]
        if rng.random() < 0.1:
            lines.append(_line(rng)[:-2])  # a random line, perhaps malformed
        length = rng.choice([len(body)] * 6 + [len(body) + 1, max(len(body) - 1, 0), None])
        if length is not None:
            lines.insert(rng.randint(0, len(lines)), b"Content-Length: %d" % length)
        head = b"HTTP/" + version + b" " + status + reason + b"\r\n"
        head += b"".join(line + b"\r\n" for line in lines) + b"\r\n"
        tail = rng.choice([b""] * 16 + [b"HTTP/1.1 200 OK\r\n", b"x"])
        method = rng.choice([b"GET", b"GET", b"POST", b"HEAD", b"CONNECT"])
        limits = rng.choice([(100, 60 * 1024)] * 10 + [(2, 60 * 1024), (100, 40)])
        yield head + body + tail, method, *limits


def _event_path(buf: bytes, method: bytes, max_headers: int, max_head: int
                ) -> tuple[int, bytes, bool, int] | None:
    """What the proxy sends downstream for `buf` without relay_response: ResponseParser's
    events, then forward.response_head (a plain HTTP/1.1 keep-alive request, no response
    header rewrite). None when that is not one whole final response with a
    Content-Length body taking all of `buf`; ProtocolError as the parser raises it."""
    from proxy.forwarding.forward import Admission, Plan, response_head
    from proxy.http1.events import Data, EndOfMessage, Request, Response
    from proxy.http1.response import ResponseParser

    parser = ResponseParser(max_headers, max_head)
    parser.expect(method)
    events = parser.feed(buf)
    if not events or type(events[0]) is not Response or events[0].informational:
        return None
    resp = events[0]
    rest = events[1:]
    body = b"".join(ev.data for ev in rest if type(ev) is Data)
    if not rest or type(rest[-1]) is not EndOfMessage or resp.content_length is None:
        return None
    if parser.take_remaining() or resp.status == 101:
        return None
    req = Request(method, b"/", b"1.1", [], None, False, True, None, False, b"a")
    plan = Plan(Admission(), [], frozenset(), frozenset(), None, None)
    head, chunk_out, keep, until_close = response_head(req, resp, plan, True, body)
    assert keep and not chunk_out and not until_close
    return resp.status, head, resp.keep_alive, resp.content_length


def test_relay_response_agrees_with_the_event_path() -> None:
    """Wherever relay_response takes a response, its bytes, status, keep-alive and length
    are the event path's; whatever the event path refuses (a 502) or does not finish in
    one piece, it declines, so the parser answers as before."""
    from proxy.forwarding.forward import RESPONSE_DROP
    from proxy.http1.events import ProtocolError
    from proxy.http1.response import ResponseParser

    relay = _native().relay_response
    taken = declined = 0
    for buf, method, max_headers, max_head in _whole_responses(random.Random(13), 40_000):
        try:
            want: object = _event_path(buf, method, max_headers, max_head)
        except ProtocolError as error:
            want = error
        parser = ResponseParser(max_headers, max_head)
        parser.expect(method)
        got = parser.whole(buf, RESPONSE_DROP)
        if got is None:
            declined += 1
            continue
        taken += 1
        assert got == want, (buf, method, got, want)
        assert relay(buf, max_headers, max_head, RESPONSE_DROP) == got
    assert taken > 4000 and declined > 4000, (taken, declined)


def test_usual_responses_are_relayed_whole() -> None:
    """The responses nearly all traffic carries are taken (else the fast path silently
    pays for the events again); what the parser holds on to is never skipped."""
    from proxy.forwarding.forward import RESPONSE_DROP
    from proxy.http1.response import ResponseParser

    relay = _native().relay_response
    nginx = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT"
             b"\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
             b"Keep-Alive: timeout=5\r\nETag: \"1\"\r\n\r\nhello")
    status, out, keep_alive, length = relay(nginx, 100, 61440, RESPONSE_DROP)
    assert (status, keep_alive, length) == (200, True, 5)
    assert out == (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n"
                   b"Date: Tue, 01 Jan 2030 00:00:00 GMT\r\nContent-Type: text/plain\r\n"
                   b"ETag: \"1\"\r\ncontent-length: 5\r\n\r\nhello")
    closing = b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert relay(closing, 100, 61440, RESPONSE_DROP)[::2] == (404, False)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert relay(chunked, 100, 61440, RESPONSE_DROP) is None
    # Another drop set is read afresh, not the last one's copy.
    other = RESPONSE_DROP | {b"server"}
    assert b"Server" not in relay(nginx, 100, 61440, other)[1]
    assert b"Server" in relay(nginx, 100, 61440, RESPONSE_DROP)[1]
    assert relay(nginx, 100, 61440, set(RESPONSE_DROP)) is None  # a mutable set: declined

    parser = ResponseParser()
    parser.expect(b"HEAD")
    assert parser.whole(nginx, RESPONSE_DROP) is None  # no body to a HEAD: the events
    parser = ResponseParser()
    parser.expect(b"GET")
    parser.expect(b"GET")
    assert parser.whole(nginx, RESPONSE_DROP) is None  # two outstanding: the events
    parser = ResponseParser()
    parser.expect(b"GET")
    assert parser.feed(nginx[:20]) == []
    assert parser.whole(nginx[20:], RESPONSE_DROP) is None  # bytes held: the events


def test_a_relayed_response_leaves_the_parser_as_feeding_it_would() -> None:
    from proxy.forwarding.forward import RESPONSE_DROP
    from proxy.http1.events import ProtocolError, Response
    from proxy.http1.response import ResponseParser

    _native()
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    parser = ResponseParser()
    parser.expect(b"GET")
    assert parser.whole(ok, RESPONSE_DROP) is not None
    assert parser.outstanding == 1  # whole() changes nothing
    parser.answered(True)
    assert parser.outstanding == 0
    with pytest.raises(ProtocolError):  # nothing outstanding: as after feeding it
        parser.feed(b"HTTP/1.1 200 OK\r\n")
    parser = ResponseParser()
    parser.expect(b"GET")
    parser.answered(True)
    parser.expect(b"GET")
    events = parser.feed(ok)
    assert type(events[0]) is Response and events[0].status == 200
    closed = ResponseParser()
    closed.expect(b"GET")
    closed.answered(False)
    assert closed.feed(b"anything") == []  # after "close" nothing more is read (RFC 9112 9.6)
