"""HTTP/1.1 semantics through two real proxies: what a well-behaved client and app must get.

client socket -> client's proxy (explicit listener) -> mTLS -> echo's proxy -> Recorder.
Keep-alive and connection reuse, pipelining, streamed bodies both ways, 100-continue, HEAD,
204/304, bodies delimited by close, Upgrade passthrough, HTTP/1.0 clients. The recorder's
default answer names the method, target, body length and digest it received, so a test can
check that a body arrived whole without the recorder keeping it.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.http1.grammar import native
from tests.integration.harness import http_get, wait_until
from tests.integration.recorder import (
    Reply,
    Seen,
    TwoHop,
    connect,
    exchange,
    read,
    send,
    two_hop,
)

pytestmark = pytest.mark.slow

GET = b"GET %s HTTP/1.1\r\nHost: echo\r\n\r\n"


@pytest.fixture(scope="module", params=["fast-path", "coroutine-path"])
def hop(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
        ) -> Iterator[TwoHop]:
    """Every test twice: with the fast path (the default: proxy/downstream/fastpath.py serves whole
    plain requests from the channels' callbacks and hands the rest over) and with the
    coroutine path alone (MESH_FASTPATH=0). The wire must not tell them apart."""
    env = {"MESH_FASTPATH": "0"} if request.param == "coroutine-path" else {}
    with two_hop(tmp_path_factory.mktemp("semantics"), env) as h:
        yield h


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest()[:16].encode()


def _recv_until(sock: socket.socket, marker: bytes, timeout: float = 10.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while marker not in got and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            break
        got += data
    return got


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((v for n, v in headers if n.lower() == name), None)


def test_keep_alive_reuses_one_upstream_connection(hop: TwoHop) -> None:
    rec = hop.new_case()
    with connect(hop.port) as sock:
        for i in range(5):
            send(sock, GET % b"/ka/%d" % i)
            ans = read(sock, [b"GET"])
            assert ans.statuses == [200] and not ans.closed
            assert ans.final[0][1].startswith(b"GET /ka/%d 0 " % i)
    seen = rec.wait_requests(5)
    assert [s.request.target for s in seen] == [b"/ka/%d" % i for i in range(5)]
    assert len(rec.used()) == 1, "one upstream connection carried all five requests"
    assert rec.opened <= 1


def test_pipelined_requests_are_answered_in_order(hop: TwoHop) -> None:
    hop.new_case()
    with connect(hop.port) as sock:
        send(sock, b"".join(GET % b"/p/%d" % i for i in range(8)))
        ans = read(sock, [b"GET"] * 8)
    assert ans.statuses == [200] * 8
    assert [body.split(b" ")[1] for _, body in ans.final] == [b"/p/%d" % i for i in range(8)]


def test_pipelined_requests_with_bodies_and_a_close(hop: TwoHop) -> None:
    """Bodies of every framing in one pipeline; nothing after `Connection: close` is served."""
    rec = hop.new_case()
    data = (b"POST /a HTTP/1.1\r\nHost: echo\r\nContent-Length: 3\r\n\r\nabc"
            b"POST /b HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nde\r\n1\r\nf\r\n0\r\n\r\n"
            + GET % b"/c"
            + b"GET /d HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n"
            + GET % b"/never")
    ans = exchange(hop.port, data, [b"POST", b"POST", b"GET", b"GET", b"GET"], until_close=True)
    assert ans.closed and ans.statuses == [200] * 4
    assert [b.split(b" ")[1:3] for _, b in ans.final] == [
        [b"/a", b"3"], [b"/b", b"3"], [b"/c", b"0"], [b"/d", b"0"]]
    # Once a later request has arrived, anything forwarded after /d would have too.
    assert exchange(hop.port, GET % b"/sentinel").statuses == [200]
    seen = rec.wait_requests(5)
    assert [s.request.target for s in seen] == [b"/a", b"/b", b"/c", b"/d", b"/sentinel"]


def test_large_chunked_request_body_is_streamed_intact(hop: TwoHop) -> None:
    rec = hop.new_case()
    body = bytes(range(256)) * (5 * 1024 * 1024 // 256)  # 5 MiB
    with connect(hop.port, timeout=30) as sock:
        send(sock, b"POST /up HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n")
        sizes = [1, 100, 4096, 65536, 300_000]
        pos, k = 0, 0
        while pos < len(body):
            piece = body[pos : pos + sizes[k % len(sizes)]]
            send(sock, b"%x;i=%d\r\n%s\r\n" % (len(piece), k, piece))
            pos, k = pos + len(piece), k + 1
        send(sock, b"0\r\n\r\n")
        ans = read(sock, [b"POST"], timeout=30)
    assert ans.statuses == [200]
    assert ans.final[0][1] == b"POST /up %d %s" % (len(body), _digest(body))
    assert rec.requests()[0].body_len == len(body)


@pytest.mark.parametrize("size", [0, 1000, 1024 * 1024], ids=["empty", "1k", "1M"])
def test_content_length_request_body_arrives_intact(hop: TwoHop, size: int) -> None:
    rec = hop.new_case()
    body = b"z" * size
    ans = exchange(hop.port, b"POST /cl HTTP/1.1\r\nHost: echo\r\nContent-Length: %d\r\n\r\n%s"
                   % (size, body), [b"POST"], timeout=30)
    assert ans.statuses == [200]
    assert ans.final[0][1] == b"POST /cl %d %s" % (size, _digest(body))
    assert rec.requests()[0].body_len == size


def test_large_response_body_is_streamed_intact(hop: TwoHop) -> None:
    body = bytes(range(256)) * (4 * 1024 * 1024 // 256)
    hop.new_case(Reply(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)))
    ans = exchange(hop.port, GET % b"/down", timeout=30)
    assert ans.statuses == [200] and ans.final[0][1] == body


def test_expect_100_continue_gets_100_then_the_final_response(hop: TwoHop) -> None:
    rec = hop.new_case()
    with connect(hop.port) as sock:
        send(sock, b"POST /e HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\n"
                   b"Expect: 100-continue\r\n\r\n")
        interim = _recv_until(sock, b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        assert interim.endswith(b"\r\n\r\n") and interim.count(b"HTTP/1.1") == 1
        send(sock, b"hello")
        ans = read(sock, [b"POST"])
    assert ans.statuses == [200] and ans.final[0][1].startswith(b"POST /e 5 ")
    assert rec.requests()[0].request.get(b"expect") is None, "Expect is answered, not forwarded"


def _head_aware(seen: Seen) -> Reply:
    if seen.request.method == b"HEAD":
        return Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    if seen.request.target == b"/204":
        return Reply(b"HTTP/1.1 204 No Content\r\n\r\n")
    if seen.request.target == b"/304":
        return Reply(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n")
    return Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")


@pytest.mark.parametrize(("request_", "method", "status"), [
    (b"HEAD /h HTTP/1.1\r\nHost: echo\r\n\r\n", b"HEAD", 200),
    (GET % b"/204", b"GET", 204),
    (GET % b"/304", b"GET", 304),
], ids=["head", "204", "304"])
def test_bodyless_responses_keep_the_connection_in_step(hop: TwoHop, request_: bytes,
                                                        method: bytes, status: int) -> None:
    """No body is sent or expected after HEAD, 204 and 304: the next response on the same
    connection is read from the right place."""
    hop.new_case(_head_aware)
    with connect(hop.port) as sock:
        send(sock, request_)
        ans = read(sock, [method])
        assert ans.statuses == [status] and ans.final[0][1] == b"" and not ans.closed
        if method == b"HEAD":
            assert _header(ans.final[0][0].headers, b"content-length") == b"10"
        if status == 204:
            assert _header(ans.final[0][0].headers, b"content-length") is None
            assert _header(ans.final[0][0].headers, b"transfer-encoding") is None
        send(sock, GET % b"/after")
        ans = read(sock, [b"GET"])
        assert ans.statuses == [200] and ans.final[0][1] == b"next"


def test_response_until_close_is_rechunked_for_http11_clients(hop: TwoHop) -> None:
    hop.new_case(lambda seen: Reply(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil "
                                    b"close", close=True))
    with connect(hop.port) as sock:
        send(sock, GET % b"/uc")
        ans = read(sock, [b"GET"])
        head, body = ans.final[0]
        assert ans.statuses == [200] and body == b"until close"
        assert _header(head.headers, b"transfer-encoding") == b"chunked"
        assert not ans.closed, "re-chunked, the client connection can stay open"
        hop.recorder.reply = _head_aware
        send(sock, GET % b"/after")
        ans = read(sock, [b"GET"])
        assert ans.statuses == [200] and ans.final[0][1] == b"next"


def test_http10_client_gets_no_chunked_and_a_closed_connection(hop: TwoHop) -> None:
    hop.new_case(lambda seen: Reply(b"HTTP/1.1 200 OK\r\n\r\nold client", close=True))
    ans = exchange(hop.port, b"GET /old HTTP/1.0\r\n\r\n", until_close=True)
    head, body = ans.final[0]
    assert ans.statuses == [200] and body == b"old client" and ans.closed
    assert _header(head.headers, b"transfer-encoding") is None


def test_http10_client_with_content_length_response(hop: TwoHop) -> None:
    rec = hop.new_case()
    ans = exchange(hop.port, b"GET /old HTTP/1.0\r\nHost: echo\r\n\r\n", until_close=True)
    assert ans.statuses == [200] and ans.final[0][1].startswith(b"GET /old 0 ") and ans.closed
    assert rec.requests()[0].request.target == b"/old"


def test_http10_keep_alive_is_announced_when_kept(hop: TwoHop) -> None:
    hop.new_case()
    with connect(hop.port) as sock:
        send(sock, b"GET /k HTTP/1.0\r\nHost: echo\r\nConnection: keep-alive\r\n\r\n")
        ans = read(sock, [b"GET"])
        assert ans.statuses == [200]
        conn = _header(ans.final[0][0].headers, b"connection")
        assert conn is not None and conn.lower() == b"keep-alive"


def test_informational_response_before_the_final_one(hop: TwoHop) -> None:
    hop.new_case(Reply(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
                       b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"))
    ans = exchange(hop.port, GET % b"/hints")
    assert ans.final[0][0].status == 200 and ans.final[0][1] == b"body"


def _ws(seen: Seen) -> Reply:
    if seen.request.upgrade is not None:
        return Reply(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\n\r\n", upgrade=True)
    return Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")


WS = b"GET /ws HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"


@pytest.mark.parametrize("early", [False, True], ids=["after-101", "early-data"])
def test_websocket_upgrade_passthrough(hop: TwoHop, early: bool) -> None:
    rec = hop.new_case(_ws)
    with connect(hop.port) as sock:
        send(sock, WS + (b"early!" if early else b""))
        got = _recv_until(sock, b"\r\n\r\n" + (b"early!" if early else b""))
        assert got.startswith(b"HTTP/1.1 101 "), got
        assert got.endswith(b"early!") if early else got.endswith(b"\r\n\r\n")
        for msg in (b"\x81\x05hello", bytes(range(256)) * 400):
            send(sock, msg)
            echoed = b""
            while len(echoed) < len(msg):
                more = sock.recv(65536)
                assert more, "closed during the echo"
                echoed += more
            assert echoed == msg
    seen = rec.wait_requests(1)
    assert seen[0].request.upgrade == b"websocket"


def test_chunked_response_to_an_http10_keep_alive_client_is_delimited(hop: TwoHop) -> None:
    """An app that answers chunked to an HTTP/1.0 request (RFC 9112 7 forbids it; some do):
    the 1.0 client cannot read chunked, so the body must end by Content-Length or by close."""
    hop.new_case(Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"5\r\nhello\r\n0\r\n\r\n"))
    with connect(hop.port) as sock:
        send(sock, b"GET /c10 HTTP/1.0\r\nHost: echo\r\nConnection: keep-alive\r\n\r\n")
        ans = read(sock, [b"GET"], until_close=True, timeout=5)
    head = ans.responses[0][0]
    framed = _header(head.headers, b"content-length") is not None
    assert framed or ans.closed, "neither Content-Length nor close: the client cannot end the body"
    assert _header(head.headers, b"transfer-encoding") is None
    assert ans.raw.endswith(b"hello")


# A refused Upgrade once left a paused parser in the proxies, poisoning pooled connections
# for later tests: these keep a mesh of their own so a regression stays contained.
@pytest.fixture
def own_hop(tmp_path: Path) -> Iterator[TwoHop]:
    with two_hop(tmp_path) as h:
        yield h


def test_refused_upgrade_goes_back_to_http(own_hop: TwoHop) -> None:
    hop = own_hop
    hop.new_case(lambda seen: Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno"))
    with connect(hop.port) as sock:
        send(sock, WS)
        ans = read(sock, [b"GET"])
        assert ans.statuses == [200] and ans.final[0][1] == b"no"
        send(sock, GET % b"/after")
        ans = read(sock, [b"GET"], timeout=5)
        assert ans.statuses == [200]


def test_refused_upgrade_does_not_poison_the_proxy_to_proxy_connection(own_hop: TwoHop) -> None:
    own_hop.new_case(lambda seen: Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno"))
    with connect(own_hop.port) as sock:
        send(sock, WS)
        ans = read(sock, [b"GET"])
        assert ans.statuses == [200] and ans.final[0][1] == b"no"
    ans = exchange(own_hop.port, GET % b"/other-client", timeout=5)
    assert ans.statuses == [200]


def test_long_response_and_websocket_survive_config_swaps(own_hop: TwoHop) -> None:
    """Zero-downtime change: a response still streaming and a WebSocket opened before a
    series of config pushes both complete on the connections they started on."""
    hop = own_hop

    def reply(seen: Seen) -> Reply:
        if seen.request.upgrade is not None:
            return _ws(seen)
        # Half the body now, the rest 3 s later: the config changes in between.
        return Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", late=b"world",
                     late_delay_s=3.0)

    hop.new_case(reply)
    vs = hop.mesh.config / "echo.yaml"
    original = vs.read_text()
    dump = f"http://127.0.0.1:{hop.client_proxy['admin']}/config_dump"
    version = json.loads(http_get(dump)[1])["config_version"]
    with connect(hop.port) as ws, connect(hop.port) as slow:
        send(ws, WS)
        assert _recv_until(ws, b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
        send(slow, GET % b"/slow")
        for i in range(4):  # four new config versions while both are open
            vs.write_text(original + f"      headers:\n        response:\n          set:\n"
                                     f"            x-swap: \"{i}\"\n")
            wait_until(lambda v=version + i + 1: json.loads(http_get(dump)[1])[
                "config_version"] >= v, timeout=10, what=f"config version {version + i + 1}")
            send(ws, b"ping%d" % i)
            assert _recv_until(ws, b"ping%d" % i).endswith(b"ping%d" % i)
        body = _recv_until(slow, b"helloworld")
        assert body.startswith(b"HTTP/1.1 200 ") and body.endswith(b"helloworld")


def _stats(proxy: dict[str, object]) -> dict[str, float]:
    status, body, _ = http_get(f"http://127.0.0.1:{proxy['admin']}/stats")
    assert status == 200
    return dict(json.loads(body))


def test_which_path_served_what(hop: TwoHop) -> None:
    """The fast path serves plain whole requests on both hops and hands over what it must
    not finish itself (a response to retry, a body to stream); the coroutine path, when it
    is the only one, counts nothing of the kind. Either way the answers are the same."""
    fast = "MESH_FASTPATH" not in hop.mesh.env
    proxies = (hop.client_proxy, hop.echo_proxy)
    before = [_stats(p) for p in proxies]
    hop.new_case()
    with connect(hop.port) as sock:
        for i in range(10):
            send(sock, GET % b"/plain/%d" % i)
            assert read(sock, [b"GET"]).statuses == [200]
    after = [_stats(p) for p in proxies]
    pairs = list(zip(after, before, strict=True))
    served = [a.get("meshctl_proxy_fast_path_requests_total", 0)
              - b.get("meshctl_proxy_fast_path_requests_total", 0) for a, b in pairs]
    handed = [a.get("meshctl_proxy_fast_path_handovers_total", 0)
              - b.get("meshctl_proxy_fast_path_handovers_total", 0) for a, b in pairs]
    whole = [a.get("meshctl_proxy_fast_path_whole_responses_total", 0)
             - b.get("meshctl_proxy_fast_path_whole_responses_total", 0) for a, b in pairs]
    # The first request on a new upstream connection is handed over (the coroutine connects).
    assert served == ([10, 10] if fast else [0, 0]) or (fast and min(served) >= 9), served
    # Plain whole responses go on as they came, in one C call (with the compiled core).
    # The proxies load the same core as this process (same environment, same build).
    relayed = fast and native is not None
    assert whole == (served if relayed else [0, 0]), (whole, served)
    assert handed == [0, 0] or (fast and max(handed) <= 1), handed
    # A body bigger than the fast path waits for, its end still to come, is handed over
    # and streamed, intact: 100 KiB now, the rest 0.3 s later (so on both hops).
    big = bytes(range(256)) * 1200  # 300 KiB
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big)
    hop.new_case(lambda seen: Reply(head + big[:102400], late=big[102400:], late_delay_s=0.3))
    with connect(hop.port) as sock:
        send(sock, GET % b"/big")
        got = _recv_until(sock, b"\r\n\r\n")
        head, _, rest = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        while len(rest) < len(big):
            data = sock.recv(65536)
            assert data, "connection closed before the whole body"
            rest += data
        assert rest == big
    streamed = [_stats(p) for p in proxies]
    grew = [s.get("meshctl_proxy_fast_path_handovers_total", 0)
            - a.get("meshctl_proxy_fast_path_handovers_total", 0)
            for s, a in zip(streamed, after, strict=True)]
    served_now = [s.get("meshctl_proxy_fast_path_requests_total", 0)
                  - a.get("meshctl_proxy_fast_path_requests_total", 0)
                  for s, a in zip(streamed, after, strict=True)]
    assert grew == ([1, 1] if fast else [0, 0]), (grew, served_now)
