"""Builders for the chaos tests: a mesh with N replicas of a service behind their proxies,
a bounded load that counts every outcome, and /proc readings (RSS, open fds) of a process."""

from __future__ import annotations

import http.client
import json
import os
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Mesh, Proc, free_port, http_get, wait_until

MESH_YAML = """\
trustDomain: chaos.test
namespace: default
certificateTTL: 24h
services:
  client:
    ports: [{port: 8080, protocol: http, name: http}]
  backend:
    ports: [{port: 8080, protocol: http, name: http}]
"""

# The seed article's retry policy and circuit breaker (examples/compose/mesh/orders.yaml),
# on `backend`.
SEED_POLICY = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
  - retries:
      attempts: 3
      perTryTimeout: 500ms
      retryOn: "5xx,reset,connect-failure"
    route: [{destination: {host: backend}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
"""


def config_dir(tmp: Path, *docs: tuple[str, str]) -> Path:
    """A config directory holding MESH_YAML and the given (file name, YAML text) pairs."""
    d = tmp / "src"
    d.mkdir(exist_ok=True)
    (d / "mesh.yaml").write_text(MESH_YAML)
    for name, text in docs:
        (d / name).write_text(textwrap.dedent(text))
    return d


@pytest.fixture
def seed_mesh(tmp_path: Path) -> Iterator[Mesh]:
    """A running registry over MESH_YAML and SEED_POLICY."""
    m = Mesh(tmp_path, config_dir(tmp_path, ("policy.yaml", SEED_POLICY)))
    m.start_registry()
    yield m
    m.close()


@dataclass
class Replica:
    version: str
    app: Proc
    app_port: int
    proxy: dict[str, Any]

    @property
    def proxy_pid(self) -> int:
        p = self.proxy["proc"].p
        assert p is not None
        return int(p.pid)


@dataclass
class Service:
    """N replicas of `backend` (versions r0, r1, ...) behind their proxies, and a client
    proxy with an explicit listener (`local`) for backend:8080."""

    mesh: Mesh
    replicas: list[Replica] = field(default_factory=list)
    local: int = 0
    client: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, mesh: Mesh, n: int, *, client_extra: tuple[str, ...] = ()) -> Service:
        s = cls(mesh)
        for i in range(n):
            s.add_replica(f"r{i}")
        s.local = free_port()
        s.client = mesh.proxy("client", "v1", upstreams={"backend:8080": s.local},
                              extra=client_extra)
        s.wait_endpoints(n)
        wait_until(lambda: s.get("/")[0] == 200, timeout=30, what="first request")
        return s

    def add_replica(self, version: str, *, proxy_extra: tuple[str, ...] = ()) -> Replica:
        app, port = self.mesh.app("backend", version)
        px = self.mesh.proxy("backend", version, app_port=port, extra=proxy_extra)
        r = Replica(version, app, port, px)
        self.replicas.append(r)
        return r

    def endpoints(self) -> list[dict[str, Any]]:
        return [e for e in self.mesh.api("GET", "/v1/catalog")["endpoints"]
                if e["service"] == "backend"]

    def wait_endpoints(self, n: int, timeout: float = 30) -> None:
        wait_until(lambda: len(self.endpoints()) == n, timeout=timeout, what=f"{n} endpoints")

    def get(self, path: str, headers: dict[str, str] | None = None
            ) -> tuple[int, bytes, dict[str, str]]:
        return http_get(f"http://127.0.0.1:{self.local}{path}", headers=headers)

    def app_admin(self, r: Replica, action: str) -> None:
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{r.app_port}/admin/{action}",
                                     data=b"", method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def client_stats(self) -> dict[str, Any]:
        return admin_json(self.client, "/stats")


def admin_json(px: dict[str, Any], path: str) -> dict[str, Any]:
    return dict(json.loads(http_get(f"http://127.0.0.1:{px['admin']}{path}")[1]))


class Load:
    """Keep-alive clients sending GET / until stopped, bounded by count and time; every
    outcome counted ("200", "503", or the exception's name). Like
    tests/integration/test_static_stability.Load, plus the replica that answered."""

    def __init__(self, port: int, clients: int = 2, max_requests: int = 20_000,
                 max_seconds: float = 60.0, path: str = "/", timeout: float = 10.0) -> None:
        self.port, self.path, self.timeout = port, path, timeout
        self.outcomes: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._budget = max_requests
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)

    def _run(self) -> None:
        conn = self._conn()
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            with self._lock:
                if self._budget <= 0:
                    return
                self._budget -= 1
            version = ""
            try:
                conn.request("GET", self.path)
                resp = conn.getresponse()
                body = resp.read()
                key = str(resp.status)
                if resp.status == 200:
                    version = json.loads(body).get("version", "")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                key = type(exc).__name__
                conn.close()
                conn = self._conn()
            with self._lock:
                self.outcomes[key] += 1
                if version:
                    self.versions[version] += 1
            if key != "200":
                time.sleep(0.02)  # a fast failure must not burn the whole request budget
        conn.close()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        with self._lock:
            return sum(n for k, n in self.outcomes.items() if k != "200")

    def wait_more(self, n: int, timeout: float = 30) -> None:
        """Block until `n` more requests have completed."""
        seen = self.total
        wait_until(lambda: self.total >= seen + n, timeout=timeout, what=f"{n} more requests")


# -- /proc readings ----------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def record(record_property: Any, **values: object) -> None:
    """Measured values for docs/chaos.md (tests/chaos/report.py reads user_properties)."""
    for k, v in values.items():
        record_property(k, v)


class Relay:
    """A TCP relay on 127.0.0.1 to `target_port` that the test can cut: while cut, open
    relayed connections are closed and new ones are closed on accept. Used to keep some
    proxies away from the registry while others reach it."""

    def __init__(self, target_port: int) -> None:
        import socket

        self.target = target_port
        self._lsock = socket.socket()
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(64)
        self.port: int = self._lsock.getsockname()[1]
        self.cut = threading.Event()
        self._socks: list[Any] = []
        self._lock = threading.Lock()
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import socket

        while not self._closing:
            try:
                c, _ = self._lsock.accept()
            except OSError:
                return
            if self.cut.is_set():
                c.close()
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                c.close()
                continue
            with self._lock:
                self._socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: Any, b: Any) -> None:
        import contextlib

        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def disconnect(self) -> None:
        """Cut: close every relayed connection and refuse new ones until reconnect()."""
        import contextlib
        import socket

        self.cut.set()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def reconnect(self) -> None:
        self.cut.clear()

    def close(self) -> None:
        self._closing = True
        self.disconnect()
        self._lsock.close()
