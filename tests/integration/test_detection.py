"""Ports declared without a protocol: HTTP and opaque TCP told apart per connection, a
server-first protocol still works, and VirtualService `tcp` routes split by weight; a port
declared `grpc` is relayed as TCP, its HTTP/2 bytes untouched."""

from __future__ import annotations

import json
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Mesh, Proc, free_port, http_get, wait_until

pytestmark = pytest.mark.slow

MESH_YAML = """\
trustDomain: test.local
namespace: default
services:
  client:
    ports: [{port: 8080, protocol: http}]
  web:
    ports: [{port: 8080}]        # no protocol: detected
  smtp:
    ports: [{port: 2525}]        # no protocol, and the server speaks first
  kv:
    ports: [{port: 7000, protocol: tcp}]
  greeter:
    ports: [{port: 9000, protocol: grpc}]   # no HTTP/2 codec yet: relayed as TCP
"""

VS_KV = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: kv}
spec:
  host: kv
  subsets:
  - {name: a, labels: {version: a}}
  - {name: b, labels: {version: b}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: kv}
spec:
  hosts: [kv]
  tcp:
  - match: [{port: 7000}]
    route:
    - {destination: {host: kv, subset: a}, weight: 75}
    - {destination: {host: kv, subset: b}, weight: 25}
"""

# A server-first TCP service: it greets, then echoes one line, then closes.
GREETER = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
def serve(c):
    c.sendall(sys.argv[2].encode() + b"\\r\\n")
    line = b""
    while not line.endswith(b"\\n"):
        chunk = c.recv(1024)
        if not chunk:
            break
        line += chunk
    c.sendall(b"got " + line); c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "mesh.yaml").write_text(MESH_YAML)
    (src / "kv.yaml").write_text(VS_KV)
    m = Mesh(tmp_path, src)
    m.start_registry()
    yield m
    m.close()


def _greeter(mesh: Mesh, tmp: Path, service: str, banner: str) -> int:
    port = free_port()
    mesh.procs.append(Proc([sys.executable, "-c", GREETER, str(port), banner], mesh.env,
                           tmp / f"{service}-{banner}.log").start())
    return port


def _talk(port: int, line: bytes = b"hello\r\n") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        greeting = b""
        while not greeting.endswith(b"\r\n"):
            greeting += s.recv(1024)
        s.sendall(line)
        rest = b""
        while chunk := s.recv(1024):
            rest += chunk
        return greeting + rest


def test_http_detected_on_an_undeclared_port(mesh: Mesh) -> None:
    _, app = mesh.app("web", "v1")
    mesh.proxy("web", "v1", app_port=app)
    local = free_port()
    mesh.proxy("client", "v1", upstreams={"web:8080": local})
    wait_until(lambda: http_get(f"http://127.0.0.1:{local}/echo")[0] == 200, what="route")
    status, body, _ = http_get(f"http://127.0.0.1:{local}/echo")
    assert status == 200
    headers = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    # Parsed as HTTP on both sides: the inbound proxy added the caller's identity.
    assert "URI=spiffe://test.local/ns/default/sa/client" in headers["x-forwarded-client-cert"]


def _greeter_for_client(mesh: Mesh, tmp: Path, service: str, banner: str, port: int) -> int:
    """A greeter as `service:port`, the client's explicit listener for it (returned) and
    the service's endpoint in the catalog."""
    app = _greeter(mesh, tmp, service, banner)
    mesh.proxy(service, "v1", app_port=app, service_port=port)
    local = free_port()
    mesh.proxy("client", "v1", upstreams={f"{service}:{port}": local})
    wait_until(lambda: any(e["service"] == service
                           for e in mesh.api("GET", "/v1/catalog")["endpoints"]), what=service)
    return local


def test_server_first_protocol_on_an_undeclared_port(mesh: Mesh, tmp_path: Path) -> None:
    local = _greeter_for_client(mesh, tmp_path, "smtp", "220 smtp ready", 2525)
    # The client waits for the greeting: detection times out and relays opaque TCP.
    assert wait_until(lambda: _talk(local), what="greeting") == \
        b"220 smtp ready\r\ngot hello\r\n"


def test_tcp_route_weights_split_connections(mesh: Mesh, tmp_path: Path) -> None:
    for version in ("a", "b"):
        port = _greeter(mesh, tmp_path, "kv", f"kv-{version}")
        mesh.proxy("kv", version, app_port=port, service_port=7000)
    local = free_port()
    mesh.proxy("client", "v1", upstreams={"kv:7000": local})
    wait_until(lambda: len([e for e in mesh.api("GET", "/v1/catalog")["endpoints"]
                            if e["service"] == "kv"]) == 2, what="kv endpoints")
    seen = Counter(_talk(local).split(b"\r\n")[0].decode() for _ in range(40))
    assert seen == {"kv-a": 30, "kv-b": 10}


def test_a_grpc_port_is_relayed_as_tcp(mesh: Mesh, tmp_path: Path) -> None:
    local = _greeter_for_client(mesh, tmp_path, "greeter", "greeter ready", 9000)
    # The HTTP/2 connection preface's first line reaches the app as sent (an HTTP/1.1 parser
    # would refuse it): the server speaks first, so a proxy that parsed would never connect.
    preface = b"PRI * HTTP/2.0\r\n"
    assert wait_until(lambda: _talk(local, preface), what="greeting") == \
        b"greeter ready\r\ngot " + preface
