"""A tiny OTLP/HTTP JSON receiver for tests: decodes what arrives, keeps the spans.

It checks the request the way a collector would (POST /v1/traces, JSON content type, the
OTLP JSON shape: hex ids, camelCase, int64 as strings) and fails loudly otherwise, so a
test that passes has sent what a real collector accepts. `hang=True` makes a collector
that accepts connections and never answers.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from meshctl.launch.local import free_port

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


def _value(v: dict[str, Any]) -> Any:
    ((kind, raw),) = v.items()
    if kind == "intValue":
        assert isinstance(raw, str), f"intValue must be a decimal string in OTLP JSON: {raw!r}"
        return int(raw)
    return raw


def decode_span(span: dict[str, Any]) -> dict[str, Any]:
    """One OTLP JSON span, validated, with attributes as a plain dict."""
    assert HEX32.fullmatch(span["traceId"]), span["traceId"]
    assert HEX16.fullmatch(span["spanId"]), span["spanId"]
    if "parentSpanId" in span:
        assert HEX16.fullmatch(span["parentSpanId"]), span["parentSpanId"]
    assert isinstance(span["kind"], int)
    start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
    assert isinstance(span["startTimeUnixNano"], str) and 0 < start <= end
    out = dict(span)
    out["attributes"] = {a["key"]: _value(a["value"]) for a in span.get("attributes", [])}
    out["events"] = [
        {**e, "attributes": {a["key"]: _value(a["value"]) for a in e.get("attributes", [])}}
        for e in span.get("events", [])
    ]
    return out


class Receiver:
    def __init__(self, *, hang: bool = False) -> None:
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.requests = 0
        self.errors: list[str] = []
        self.hang = hang
        self._lock = threading.Lock()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                with receiver._lock:
                    receiver.requests += 1
                if receiver.hang:
                    receiver._release.wait(60)
                    return
                try:
                    assert self.path == "/v1/traces", self.path
                    assert self.headers["Content-Type"] == "application/json"
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    for rs in body["resourceSpans"]:
                        res = {a["key"]: _value(a["value"]) for a in rs["resource"]["attributes"]}
                        for ss in rs["scopeSpans"]:
                            assert ss["scope"]["name"]
                            spans = [decode_span(s) for s in ss["spans"]]
                            with receiver._lock:
                                receiver.resources.append(res)
                                receiver.spans.extend({**s, "resource": res} for s in spans)
                except Exception as exc:  # a test reads .errors
                    receiver.errors.append(repr(exc))
                    self.send_response(400)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def by_trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.spans if s["traceId"] == trace_id]


def dead_port() -> int:
    """A port nobody listens on (connection refused)."""
    return free_port()
