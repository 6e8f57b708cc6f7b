#!/usr/bin/env python3
"""The example shop: one small HTTP app that plays every service of the demo mesh.

frontend -> orders (v1, v2) -> payments, inventory. Each container runs this file with
its own --service/--version, and calls its downstreams by plain name
(`http://orders:8080/`) over plain HTTP: the mesh's proxy intercepts those calls, so the
app knows nothing about mTLS, retries or routing.

House rules: standard library only (it runs in a minimal Debian root filesystem with
python3 and nothing else, and inside network namespaces), Python 3.9+, one file.

Endpoints
  GET  /                 {"service", "version", "host", "calls": {name: answer | error}}
  GET  /healthz          200 "ok" (never faulted: health checks must see the process)
  GET|POST /echo         what arrived: method, path, query, headers, body length, client
  GET  /status/<code>    answers <code> (200-599)
  GET  /bytes/<n>        answers n bytes
  POST /admin/fail?status=503&count=N   the next N requests answer `status` (-1: until reset)
  POST /admin/slow?ms=300&count=N       the next N requests wait `ms` first (-1: until reset)
  POST /admin/reset                     back to normal
  GET  /admin/state                     the fault settings now in force
Faults apply to every path except /healthz and /admin/*, so a faulty payments can still
be put right again. HEAD is answered like GET, without the body.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BYTES = 64 * 1024 * 1024  # /bytes/<n> and request bodies: a demo, not a disk filler
CHUNK = 64 * 1024

# Headers copied from the incoming request onto downstream calls. As in Istio's
# Bookinfo, the app itself must propagate trace context (the proxy cannot tie an
# outbound call to the inbound request that caused it) and the headers that routing
# rules match on (`end-user`, `x-user`).
PROPAGATE = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "end-user",
    "x-user",
)


class Faults:
    """The /admin/fail and /admin/slow settings, shared by all handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fail_status = 0
        self.fail_count = 0  # > 0: that many more requests; -1: until reset
        self.slow_ms = 0
        self.slow_count = 0

    def set_fail(self, status: int, count: int) -> None:
        with self._lock:
            self.fail_status, self.fail_count = status, count

    def set_slow(self, ms: int, count: int) -> None:
        with self._lock:
            self.slow_ms, self.slow_count = ms, count

    def reset(self) -> None:
        self.set_fail(0, 0)
        self.set_slow(0, 0)

    def take(self) -> tuple[int, int]:
        """Consume one request's worth of faults: (delay in ms, status or 0)."""
        with self._lock:
            delay = status = 0
            if self.slow_count:
                delay = self.slow_ms
                if self.slow_count > 0:
                    self.slow_count -= 1
            if self.fail_count:
                status = self.fail_status
                if self.fail_count > 0:
                    self.fail_count -= 1
            return delay, status

    def state(self) -> dict[str, int]:
        with self._lock:
            return {
                "fail_status": self.fail_status,
                "fail_count": self.fail_count,
                "slow_ms": self.slow_ms,
                "slow_count": self.slow_count,
            }


class BadRequest(Exception):
    """A client error: answered with `status` and the message."""

    status = 400


class TooLarge(BadRequest):
    """A request body over MAX_BYTES (RFC 9110 15.5.14), answered before the body is read."""

    status = 413


class ShopServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not hold up exit
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], args: argparse.Namespace) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self.args = args
        self.faults = Faults()
        self.hostname = socket.gethostname()
        # No proxy from the environment (http_proxy): the mesh is the proxy.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        super().__init__(addr, ShopHandler)


class ShopHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer sets Content-Length
    timeout = 120  # an idle keep-alive connection is closed after this
    server: ShopServer

    # -- dispatch -------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        self._started = time.monotonic()
        self._status = 0
        self._sent = 0
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        try:
            body = self._read_body()
            if path == "/healthz":
                return self._send(200, b"ok\n", "text/plain")
            if path.startswith("/admin/"):
                return self._admin(path, query)
            delay, status = self.server.faults.take()
            if delay:
                time.sleep(delay / 1000)
            if status:
                return self._json(status, {**self._me(), "error": "injected fault"})
            self._route(path, query, body)
        except BadRequest as e:
            self._json(e.status, {**self._me(), "error": str(e)})
            if self.close_connection:
                self._linger()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away mid-exchange
        finally:
            self._log()

    def _route(self, path: str, query: dict[str, list[str]], body: bytes) -> None:
        if path == "/" and self.command in ("GET", "HEAD"):
            return self._json(200, {**self._me(), "calls": self._call_downstreams()})
        if path == "/echo":
            return self._json(
                200,
                {
                    **self._me(),
                    "method": self.command,
                    "path": self.path,
                    "query": query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body_length": len(body),
                    "client": f"{self.client_address[0]}:{self.client_address[1]}",
                },
            )
        if path.startswith("/status/"):
            code = _int(path[len("/status/") :], "status code")
            if not 200 <= code <= 599:
                raise BadRequest("status code must be 200-599")
            return self._json(code, {**self._me(), "status": code})
        if path.startswith("/bytes/"):
            n = _int(path[len("/bytes/") :], "byte count")
            if not 0 <= n <= MAX_BYTES:
                raise BadRequest(f"byte count must be 0-{MAX_BYTES}")
            return self._send_bytes(n)
        self._json(404, {**self._me(), "error": f"no route for {self.command} {path}"})

    def _admin(self, path: str, query: dict[str, list[str]]) -> None:
        faults = self.server.faults
        if path == "/admin/state" and self.command == "GET":
            return self._json(200, {**self._me(), **faults.state()})
        if self.command != "POST":
            return self._json(405, {**self._me(), "error": f"{path} takes POST"})
        count = _int(_first(query, "count", "-1"), "count")
        if path == "/admin/fail":
            status = _int(_first(query, "status", "503"), "status")
            if not 200 <= status <= 599:
                raise BadRequest("status must be 200-599")
            faults.set_fail(status, count)
        elif path == "/admin/slow":
            faults.set_slow(max(0, _int(_first(query, "ms", "300"), "ms")), count)
        elif path == "/admin/reset":
            faults.reset()
        else:
            return self._json(404, {**self._me(), "error": f"no admin action {path}"})
        self._json(200, {**self._me(), **faults.state()})

    # -- downstream calls -----------------------------------------------------------

    def _call_downstreams(self) -> dict[str, Any]:
        args = self.server.args
        headers = {h: v for h in PROPAGATE if (v := self.headers.get(h)) is not None}
        return {name: self._call(name, args, headers) for name in args.calls}

    def _call(self, name: str, args: argparse.Namespace, headers: dict[str, str]) -> Any:
        target = args.upstream.get(name, f"{name}:{args.call_port}")
        url = f"http://{target}/"
        req = urllib.request.Request(url, headers=headers)
        try:
            with self.server.opener.open(req, timeout=args.call_timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            return {"error": f"HTTP {e.code} from {url}", "status": e.code, "body": _text(e)}
        except (OSError, ValueError) as e:  # URLError, timeouts, resets
            reason = getattr(e, "reason", e)
            return {"error": f"{type(e).__name__}: {reason} ({url})"}
        try:
            return json.loads(raw)
        except ValueError:
            return {"error": f"not JSON from {url}", "body": raw[:200].decode(errors="replace")}

    # -- request and response plumbing ----------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = _int(self.headers.get("Content-Length", "0") or "0", "Content-Length")
        if not 0 <= length <= MAX_BYTES:
            self.close_connection = True
            raise TooLarge(f"Content-Length must be 0-{MAX_BYTES}")
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > MAX_BYTES:
                self.close_connection = True
                raise TooLarge(f"body larger than {MAX_BYTES} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)  # CRLF after the chunk

    def _me(self) -> dict[str, Any]:
        args = self.server.args
        return {"service": args.service, "version": args.version, "host": self.server.hostname}

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        body = (json.dumps(payload, sort_keys=True) + "\n").encode()
        self._send(status, body, "application/json")

    def _linger(self) -> None:
        """Answered before reading the body: drop what the client still sends for a moment
        before closing (RFC 9112 9.6, as nginx's lingering_close). Closing a socket with
        unread bytes sends a reset, which can destroy the answer still on its way."""
        self.wfile.flush()
        sock = self.connection
        deadline = time.monotonic() + 2.0
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(0.5)
            while time.monotonic() < deadline and sock.recv(65536):
                pass
        except OSError:
            pass

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self._status = status
        self.send_response(status)
        self.send_header("X-Shop-Service", f"{self.server.args.service}/{self.server.args.version}")
        if status in (204, 304):
            # The one exception to "Content-Length always": a 204 must not carry it and
            # neither has a body (RFC 9110 sections 8.6, 15.3.5, 15.4.5).
            self.end_headers()
            return
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self._sent = len(body)

    def _send_bytes(self, n: int) -> None:
        self._status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        block = b"x" * CHUNK
        left = n
        while left:
            step = min(left, CHUNK)
            self.wfile.write(block[:step])
            left -= step
        self._sent = n

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request is written by _log, with the timing

    def _log(self) -> None:
        ms = (time.monotonic() - self._started) * 1000
        args = self.server.args
        sys.stderr.write(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {args.service}/{args.version} "
            f'{self.client_address[0]} "{self.command} {self.path}" '
            f"{self._status} {self._sent} {ms:.1f}ms\n"
        )
        sys.stderr.flush()


def _first(query: dict[str, list[str]], key: str, default: str) -> str:
    return query.get(key, [default])[0]


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{what} must be an integer, not {text!r}") from None


def _text(err: urllib.error.HTTPError) -> str:
    try:
        return err.read()[:200].decode(errors="replace")
    except OSError:
        return ""


def _upstreams(items: list[str]) -> dict[str, str]:
    """--upstream NAME=HOST:PORT (repeatable, or comma-separated): where NAME is called.

    For running outside the mesh (tests on the host, where `orders` does not resolve).
    """
    out: dict[str, str] = {}
    for item in items:
        for pair in filter(None, (p.strip() for p in item.split(","))):
            name, sep, target = pair.partition("=")
            if not sep or not name or ":" not in target:
                raise argparse.ArgumentTypeError(f"--upstream wants NAME=HOST:PORT, not {pair!r}")
            out[name] = target
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(description="The meshctl example shop service.")
    p.add_argument("--service", default=env.get("SERVICE", "shop"), help="env SERVICE")
    p.add_argument("--version", default=env.get("VERSION", "v1"), help="env VERSION")
    p.add_argument("--port", type=int, default=int(env.get("PORT", "8080")), help="env PORT")
    p.add_argument("--host", default=env.get("HOST", "0.0.0.0"))
    p.add_argument("--calls", default=env.get("CALLS", ""), help="downstreams, e.g. a,b")
    p.add_argument("--call-port", type=int, default=8080, help="port of the downstreams")
    p.add_argument("--call-timeout", type=float, default=5.0, help="seconds per call")
    p.add_argument("--upstream", action="append", default=[], metavar="NAME=HOST:PORT")
    args = p.parse_args(argv)
    args.calls = [c.strip() for c in args.calls.split(",") if c.strip()]
    try:
        args.upstream = _upstreams(args.upstream)
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = ShopServer((args.host, args.port), args)

    def stop(signum: int, _frame: object) -> None:
        # serve_forever runs in this (main) thread: leave it by raising, since
        # server.shutdown() from here would wait for the loop we are interrupting.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)  # PID 1 in a container ignores SIGTERM otherwise
    signal.signal(signal.SIGINT, stop)
    port = server.server_address[1]
    sys.stderr.write(
        f"{args.service}/{args.version} listening on {args.host}:{port}"
        f" calls={','.join(args.calls) or '-'}\n"
    )
    sys.stderr.flush()
    try:
        server.serve_forever()
    except SystemExit:
        pass
    finally:
        server.server_close()
        sys.stderr.write(f"{args.service}/{args.version} stopped\n")
        sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
