"""Builders for registry API tests: raw HTTPS calls, joined workloads, a stream follower."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from registry.ca.csr import build_csr, generate_key, key_pem
from registry.ca.spiffe import SpiffeId
from tests.integration.harness import Mesh, http_get

PENDING = SpiffeId.parse("spiffe://join.invalid/pending")


def bundle(mesh: Mesh) -> Path:
    return mesh.home / "registry" / "ca" / "ca.crt"


def operator_token(mesh: Mesh) -> str:
    return (mesh.home / "registry" / "operator.token").read_text().strip()


def client_ctx(mesh: Mesh, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """Trusts the registry's CA; presents `cert` (certificate, key files) when given."""
    ctx = ssl.create_default_context(cafile=str(bundle(mesh)))
    if cert is not None:
        ctx.load_cert_chain(cert[0], cert[1])
    return ctx


def call(mesh: Mesh, method: str, path: str, body: Any = None, *,
         bearer: str | None = None, ctx: ssl.SSLContext | None = None,
         raw: bytes | None = None) -> tuple[int, Any]:
    """One request; returns (status, JSON body or text). No exception on 4xx/5xx."""
    conn = http.client.HTTPSConnection("127.0.0.1", mesh.port, context=ctx or client_ctx(mesh),
                                       timeout=15)
    headers = {"Content-Type": "application/json"}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    try:
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        text = r.read().decode()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text
    finally:
        conn.close()


def op(mesh: Mesh, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return call(mesh, method, path, body, bearer=operator_token(mesh))


def mint(mesh: Mesh, service: str, ttl_s: float = 600) -> str:
    status, data = op(mesh, "POST", "/v1/tokens", {"service": service, "ttl_s": ttl_s})
    assert status == 200, data
    return str(data["token"])


def csr_for(key: ec.EllipticCurvePrivateKey, identity: SpiffeId = PENDING) -> str:
    return build_csr(key, identity).decode()


@dataclass
class Workload:
    """A joined workload: its key and SVID on disk, an mTLS context for the registry."""

    mesh: Mesh
    service: str
    dir: Path
    spiffe_id: str = ""
    cert_pem: bytes = b""
    key: ec.EllipticCurvePrivateKey = field(default_factory=generate_key)

    @property
    def files(self) -> tuple[Path, Path]:
        return self.dir / "svid.crt", self.dir / "svid.key"

    def store(self, cert_pem: bytes, key: ec.EllipticCurvePrivateKey) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert_pem, self.key = cert_pem, key
        self.files[0].write_bytes(cert_pem)
        self.files[1].write_bytes(key_pem(key))

    def ctx(self) -> ssl.SSLContext:
        return client_ctx(self.mesh, self.files)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return call(self.mesh, method, path, body, ctx=self.ctx())


def join(mesh: Mesh, service: str, where: Path) -> Workload:
    """Mint a token as the operator, join with a fresh key: a workload with an SVID."""
    w = Workload(mesh, service, where)
    status, data = call(mesh, "POST", "/v1/join",
                        {"token": mint(mesh, service), "csr": csr_for(w.key)})
    assert status == 200, data
    w.spiffe_id = data["spiffe_id"]
    w.store(data["certificate"].encode(), w.key)
    return w


class NoView(AssertionError):
    """A stream follower waited for a view that did not come."""


class StreamFollower:
    """Holds GET /v1/stream open in a thread and queues every parsed line."""

    def __init__(self, mesh: Mesh, ctx: ssl.SSLContext, proxy_id: str,
                 config: int = 0, catalog: int = -1, epoch: str = "") -> None:
        q = urllib.parse.urlencode({"proxy_id": proxy_id, "config": config,
                                    "catalog": catalog, "epoch": epoch})
        self.conn = http.client.HTTPSConnection("127.0.0.1", mesh.port, context=ctx, timeout=60)
        self.conn.request("GET", f"/v1/stream?{q}")
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self.resp:
                if raw.strip():
                    self.lines.put(json.loads(raw))
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass  # closed by close(), or by the registry

    def next_view(self, timeout: float = 20.0, what: str = "view") -> dict[str, Any]:
        """The next `view` line (pings are skipped); NoView once `timeout` has passed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise NoView(f"no {what} on the stream within {timeout:g} s") from None
            if msg.get("type") == "view":
                return msg

    def view_where(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20.0,
                   what: str = "view that matches") -> dict[str, Any]:
        """Skip views until one satisfies `pred`, all within `timeout`; NoView if none does."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoView(f"no {what} on the stream within {timeout:g} s")
            if pred(view := self.next_view(left, what)):
                return view

    def no_view_within(self, seconds: float) -> bool:
        try:
            self.next_view(timeout=seconds)
        except NoView:
            return True
        return False

    def close(self) -> None:
        if self.conn.sock is not None:
            with contextlib.suppress(OSError):
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


class DuplexStream:
    """POST /v1/stream spoken by hand: views come in, ACK lines go out in the request body.

    Both directions are HTTP/1.1 chunked; each call reads or writes whole lines.
    """

    def __init__(self, mesh: Mesh, ctx: ssl.SSLContext, proxy_id: str) -> None:
        raw = socket.create_connection(("127.0.0.1", mesh.port), timeout=20)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        q = urllib.parse.urlencode({"proxy_id": proxy_id, "config": 0, "catalog": -1})
        self.sock.sendall(f"POST /v1/stream?{q} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n".encode())
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        while self.file.readline() not in (b"\r\n", b""):
            pass  # response headers
        self._pending = b""

    def send(self, data: bytes) -> None:
        """One chunk of the request body (the caller adds the newline, or not)."""
        self.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))

    def ack(self, body: dict[str, Any]) -> None:
        self.send(json.dumps(body).encode() + b"\n")

    def next_line(self, timeout: float = 20.0) -> dict[str, Any]:
        """The next line of the response that is not a ping, within `timeout` (pings do not
        count as progress); EOFError when it has ended."""
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"no line but pings on the stream within {timeout:g} s")
            while b"\n" not in self._pending:
                size = self.file.readline()
                if not size.strip() or int(size, 16) == 0:
                    raise EOFError("the registry ended the stream")
                self._pending += self.file.read(int(size, 16))
                self.file.readline()  # the chunk's CRLF
            line, self._pending = self._pending.split(b"\n", 1)
            msg: dict[str, Any] = json.loads(line)
            if msg.get("type") != "ping":
                return msg

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def metric(mesh: Mesh, name: str) -> float | None:
    """The value of an unlabelled metric on the registry's monitor port."""
    _, body, _ = http_get(f"http://127.0.0.1:{mesh.monitor}/metrics")
    for line in body.decode().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return float(parts[1])
    return None
