"""Slow loris, connection ceilings, and opaque TCP (with half-close) through two proxies."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Mesh, Proc, free_port, http_get, wait_until

pytestmark = pytest.mark.slow

MESH_YAML = """\
trustDomain: test.local
namespace: default
services:
  client:
    ports: [{port: 8080, protocol: http, name: http}]
  web:
    ports: [{port: 8080, protocol: http, name: http}]
  db:
    ports: [{port: 5432, protocol: tcp, name: tcp}]
"""

# A TCP echo server that answers only after the client half-closes: it proves the FIN
# travels through both proxies and the answer still comes back.
ECHO = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
def serve(c):
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    c.sendall(b"echo:" + data); c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "mesh.yaml").write_text(MESH_YAML)
    m = Mesh(tmp_path, src)
    m.start_registry()
    yield m
    m.close()


def echo_through_db(mesh: Mesh, tmp_path: Path, payload: bytes) -> tuple[bytes, dict[str, Any]]:
    """Start the echo app behind a `db` proxy and a `client` proxy in front, send `payload`
    through both, half-close, and read to the end: (what came back, the db proxy)."""
    port = free_port()
    echo = Proc([sys.executable, "-c", ECHO, str(port)], mesh.env, tmp_path / "echo.log")
    mesh.procs.append(echo.start())
    db = mesh.proxy("db", "v1", app_port=port, service_port=5432)
    local = free_port()
    mesh.proxy("client", "v1", upstreams={"db:5432": local})
    wait_until(
        lambda: any(e["service"] == "db" for e in mesh.api("GET", "/v1/catalog")["endpoints"]),
        what="db",
    )
    with socket.create_connection(("127.0.0.1", local), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)  # the echo answers only after this FIN
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    return got, db


def test_opaque_tcp_with_half_close_crosses_two_proxies(mesh: Mesh, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, binary
    got, _ = echo_through_db(mesh, tmp_path, payload)
    assert got == b"echo:" + payload


def test_slow_loris_is_cut_off_while_others_are_served(mesh: Mesh) -> None:
    _, app = mesh.app("web", "v1")
    mesh.proxy("web", "v1", app_port=app)
    local = free_port()
    mesh.proxy("client", "v1", upstreams={"web:8080": local}, extra=("--header-timeout", "1"))
    wait_until(lambda: http_get(f"http://127.0.0.1:{local}/")[0] == 200, what="route")
    slow = socket.create_connection(("127.0.0.1", local), timeout=10)
    head = b"GET / HTTP/1.1\r\nHost: web\r\nX-Slow: " + b"a" * 40
    closed = False
    deadline = time.monotonic() + 8
    try:
        for byte in head:
            slow.sendall(bytes([byte]))
            # A legitimate client is served in the meantime.
            assert http_get(f"http://127.0.0.1:{local}/")[0] == 200
            time.sleep(0.1)
            if time.monotonic() > deadline:
                break
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    if not closed:
        slow.settimeout(5)
        try:
            closed = slow.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            closed = True
    slow.close()
    assert closed


def test_connection_ceiling_refuses_extra_connections_only(mesh: Mesh) -> None:
    _, app = mesh.app("web", "v1")
    mesh.proxy("web", "v1", app_port=app)
    local = free_port()
    mesh.proxy("client", "v1", upstreams={"web:8080": local}, extra=("--max-connections", "4"))
    wait_until(lambda: http_get(f"http://127.0.0.1:{local}/")[0] == 200, what="route")
    held = [socket.create_connection(("127.0.0.1", local), timeout=5) for _ in range(4)]
    time.sleep(0.3)
    extra = socket.create_connection(("127.0.0.1", local), timeout=5)
    extra.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
    try:
        refused = extra.recv(100) == b""
    except ConnectionResetError:
        refused = True
    assert refused
    # The connections already open are still served.
    held[0].sendall(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := held[0].recv(65536):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    for s in held:
        s.close()
    wait_until(lambda: http_get(f"http://127.0.0.1:{local}/")[0] == 200, what="recovered")
