"""Access log: one JSON line per request, with the fields of Envoy's default format.

Switched per service in mesh.yaml (`accessLog: stdout | off | /abs/path`). Lines are
written to a buffered file object and flushed by a timer, not per request, so logging
costs a json.dumps and a write on the hot path.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any

from proxy.forwarding.forward import Result
from proxy.http1 import Request


class AccessLog:
    def __init__(self, target: str) -> None:
        self.target = target
        self._out: IO[str] | None
        if target == "off":
            self._out = None
        elif target == "stdout":
            self._out = sys.stdout
        else:
            self._out = open(target, "a", buffering=65536, encoding="utf-8")  # noqa: SIM115

    @property
    def enabled(self) -> bool:
        return self._out is not None

    def write(
        self,
        req: Request,
        result: Result,
        start_wall: float,
        duration_ms: float,
        peer: str | None,
        reporter: str,
    ) -> None:
        out = self._out
        if out is None:
            return
        target = req.target.decode("latin-1")
        line: dict[str, Any] = {
            # Envoy's default format fields (docs: access_log/usage, "Default format string").
            "start_time": datetime.fromtimestamp(start_wall, UTC).isoformat(
                timespec="milliseconds"
            ),
            "method": req.method.decode("latin-1"),
            "path": target,
            "protocol": "HTTP/" + req.version.decode("latin-1"),
            "response_code": result.status,
            "response_flags": result.flags or "-",
            "bytes_received": result.req_bytes,
            "bytes_sent": result.resp_bytes,
            "duration": round(duration_ms, 3),
            "upstream_host": result.upstream.split("/")[0] or None,
            "x_forwarded_for": _h(req, b"x-forwarded-for"),
            "user_agent": _h(req, b"user-agent"),
            "request_id": _h(req, b"x-request-id"),
            "authority": (req.host or b"").decode("latin-1") or None,
            "downstream_peer_uri_san": peer,
            "reporter": reporter,
            "attempts": result.attempts,
        }
        out.write(json.dumps(line, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()

    def close(self) -> None:
        if self._out is not None and self._out is not sys.stdout:
            self._out.close()
        self._out = None


def _h(req: Request, name: bytes) -> str | None:
    v = req.get(name)
    return v.decode("latin-1") if v is not None else None


def now() -> float:
    return time.time()
