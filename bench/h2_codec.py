"""µs of HTTP/2 codec work per request: h2 (python-hyper) against libnghttp2 through ngh2.

python -m bench.h2_codec [--requests N]    # prints one JSON object

What one proxy hop does per gRPC unary call on an HTTP/2 connection, codec only (no
sockets, no policy): as the **server** of the downstream connection, parse the request's
HEADERS and DATA (HPACK decode) and emit HEADERS + DATA + trailers (HPACK encode); as the
**client** of the upstream connection, emit HEADERS + DATA and parse the response's
HEADERS + DATA + trailers. Flow control is the proxy's: received DATA is acknowledged.

The wire bytes fed to each codec are made once, up front, by h2's own client and server
(every request carries a fresh `traceparent`, as a traced mesh sends, so HPACK cannot
index the whole head). "warm": requests on one long-lived connection (the proxies'
multiplexed case); "new connection": preface + SETTINGS + one request on a fresh server
connection (an app that opens a connection per call). Bounded: N requests (default 2000)
per timing, best of 5 timings; the whole run takes a few seconds.
h2 comes with the bench extra (`pip install -e ".[bench]"`); ngh2 is the proxy's own.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence

import h2.config
import h2.connection
import h2.events
import h2.settings
import ngh2

Headers = list[tuple[bytes, bytes]]

_BIG_WINDOW = 2**31 - 1
_BODY = b"\x00\x00\x00\x00\x20" + b"x" * 32  # a gRPC length-prefixed message, 32 bytes
_REPLY = b"\x00\x00\x00\x00\x23" + b"y" * 35
_RESPONSE_HEAD: Headers = [(b":status", b"200"), (b"content-type", b"application/grpc")]
_TRAILERS: Headers = [(b"grpc-status", b"0"), (b"grpc-message", b"")]


def request_head(i: int) -> Headers:
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/helloworld.Greeter/SayHello"),
        (b":authority", b"greeter.default.svc.cluster.local:50051"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"grpc-accept-encoding", b"identity,deflate,gzip"),
        (b"user-agent", b"grpc-python/1.60.0 grpc-c/37.0.0 (linux; chttp2)"),
        (b"traceparent", b"00-%032x-%016x-01" % (i * 7919 + 1, i + 1)),
    ]


def _h2(client_side: bool) -> h2.connection.H2Connection:
    return h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=client_side, header_encoding=None)
    )


class Wire:
    """Bytes on both sides of one connection carrying `n` calls, made by h2 alone."""

    def __init__(self, n: int) -> None:
        client, server = _h2(True), _h2(False)
        client.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _BIG_WINDOW}
        )
        client.initiate_connection()
        client.increment_flow_control_window(_BIG_WINDOW - 65_535)
        self.client_setup = client.data_to_send()
        server.initiate_connection()
        server.receive_data(self.client_setup)
        self.server_setup = server.data_to_send()
        client.receive_data(self.server_setup)
        self.client_setup += client.data_to_send()  # the ACK of the server's SETTINGS
        server.receive_data(client.data_to_send())
        self.requests: list[bytes] = []
        self.responses: list[bytes] = []
        for i in range(n):
            sid = client.get_next_available_stream_id()
            client.send_headers(sid, request_head(i))
            client.send_data(sid, _BODY, end_stream=True)
            req = client.data_to_send()
            for ev in server.receive_data(req):
                if isinstance(ev, h2.events.DataReceived):
                    server.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            server.send_headers(sid, _RESPONSE_HEAD)
            server.send_data(sid, _REPLY)
            server.send_headers(sid, _TRAILERS, end_stream=True)
            resp = server.data_to_send()
            client.receive_data(resp)
            self.requests.append(req)
            self.responses.append(resp)


# -- server role: parse a request, answer it ------------------------------------------------


def h2_server(wire: Wire, requests: Sequence[bytes], setup: bool) -> Callable[[], int]:
    conn = _h2(False)
    conn.initiate_connection()
    conn.data_to_send()
    if not setup:
        conn.receive_data(wire.client_setup)
        conn.data_to_send()

    def run() -> int:
        out = 0
        if setup:
            conn.receive_data(wire.client_setup)
        for req in requests:
            for ev in conn.receive_data(req):
                if isinstance(ev, h2.events.RequestReceived):
                    head = ev.headers
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    sid = ev.stream_id
                    conn.send_headers(sid, _RESPONSE_HEAD)
                    conn.send_data(sid, _REPLY)
                    conn.send_headers(sid, _TRAILERS, end_stream=True)
            out += len(conn.data_to_send())
        assert head
        return out

    return run


def ngh2_server(wire: Wire, requests: Sequence[bytes], setup: bool) -> Callable[[], int]:
    conn = ngh2.Connection(ngh2.Role.SERVER)
    conn.initiate_connection()
    conn.data_to_send()
    if not setup:
        conn.receive_data(wire.client_setup)
        conn.events()
        conn.data_to_send()

    def run() -> int:
        out = 0
        if setup:
            conn.receive_data(wire.client_setup)
        for req in requests:
            conn.receive_data(req)
            for ev in conn.events():
                if isinstance(ev, ngh2.RequestReceived):
                    head = ev.headers
                elif isinstance(ev, ngh2.DataReceived) and ev.end_stream:
                    sid = ev.stream_id
                    conn.send_response(sid, _RESPONSE_HEAD)
                    conn.send_data(sid, _REPLY)
                    conn.send_trailers(sid, _TRAILERS)
            out += len(conn.data_to_send())
        assert head
        return out

    return run


# -- client role: send a request, parse its response --------------------------------------


def h2_client(wire: Wire, n: int) -> Callable[[], int]:
    conn = _h2(True)
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _BIG_WINDOW}
    )
    conn.initiate_connection()
    conn.increment_flow_control_window(_BIG_WINDOW - 65_535)
    conn.receive_data(wire.server_setup)
    conn.data_to_send()
    responses = wire.responses[:n]

    def run() -> int:
        out = 0
        for i, resp in enumerate(responses):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, request_head(i))
            conn.send_data(sid, _BODY, end_stream=True)
            out += len(conn.data_to_send())
            for ev in conn.receive_data(resp):
                if isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = ev.headers
        assert trailers
        return out

    return run


def ngh2_client(wire: Wire, n: int) -> Callable[[], int]:
    conn = ngh2.Connection(ngh2.Role.CLIENT)
    conn.initiate_connection({ngh2.Setting.INITIAL_WINDOW_SIZE: _BIG_WINDOW})
    conn.set_local_window_size(_BIG_WINDOW)
    conn.receive_data(wire.server_setup)
    conn.events()
    conn.data_to_send()
    responses = wire.responses[:n]

    def run() -> int:
        out = 0
        for i, resp in enumerate(responses):
            sid = conn.send_request(request_head(i))
            conn.send_data(sid, _BODY, end_stream=True)
            out += len(conn.data_to_send())
            conn.receive_data(resp)
            for ev in conn.events():
                if isinstance(ev, ngh2.TrailersReceived):
                    trailers = ev.headers
        assert trailers
        return out

    return run


def _best_us(make: Callable[[], Callable[[], int]], per_run: int, repeat: int = 5) -> float:
    """Best of `repeat` timings (a fresh connection each), µs per request."""
    best = float("inf")
    for _ in range(repeat):
        run = make()
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best / per_run * 1e6


def _new_conn_us(
    make: Callable[[Wire, Sequence[bytes], bool], Callable[[], int]], wire: Wire
) -> float:
    """Preface + SETTINGS + the first request on a fresh server connection, best of 200."""
    best = float("inf")
    for _ in range(200):
        run = make(wire, wire.requests[:1], True)
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="calls per timing (max 20000)")
    n = min(max(ap.parse_args(argv).requests, 10), 20_000)
    wire = Wire(n)
    results = {
        "h2_server_us": _best_us(lambda: h2_server(wire, wire.requests, False), n),
        "ngh2_server_us": _best_us(lambda: ngh2_server(wire, wire.requests, False), n),
        "h2_client_us": _best_us(lambda: h2_client(wire, n), n),
        "ngh2_client_us": _best_us(lambda: ngh2_client(wire, n), n),
        "h2_new_connection_us": _new_conn_us(h2_server, wire),
        "ngh2_new_connection_us": _new_conn_us(ngh2_server, wire),
    }
    hop_h2 = results["h2_server_us"] + results["h2_client_us"]
    hop_ngh2 = results["ngh2_server_us"] + results["ngh2_client_us"]
    print(
        json.dumps(
            {
                "command": f"python -m bench.h2_codec --requests {n}",
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "requests_per_timing": n,
                "request_wire_bytes": len(wire.requests[-1]),
                "response_wire_bytes": len(wire.responses[-1]),
                **{k: round(v, 2) for k, v in results.items()},
                "h2_per_hop_us": round(hop_h2, 2),
                "ngh2_per_hop_us": round(hop_ngh2, 2),
                "per_hop_ratio_h2_to_ngh2": round(hop_h2 / hop_ngh2, 1),
                "h2_version": h2.__version__,
                "ngh2_version": ngh2.__version__,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
