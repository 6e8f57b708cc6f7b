"""A real proxy with --outbound answers DNS for mesh names from its config snapshot."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.vip import service_vip
from proxy.dns import wire
from tests.example import CONFIG
from tests.integration.harness import Mesh, free_port, http_get

pytestmark = pytest.mark.slow


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    """The example shop's registry; proxies are added by each test."""
    shop = Mesh(tmp_path, CONFIG)
    try:
        shop.start_registry()
        yield shop
    finally:
        shop.close()


def _ask(port: int, name: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(wire.make_query(name, ident=0x3131), ("127.0.0.1", port))
        return s.recv(4096)


def test_the_proxy_answers_mesh_names_with_their_vips(mesh: Mesh) -> None:
    dns = free_port()
    front = mesh.proxy("frontend", extra=("--outbound", f"127.0.0.1:{free_port()}",
                                          "--dns-port", str(dns)))
    for name in ("orders", "orders.mesh", "ORDERS.default.svc.cluster.local."):
        reply = _ask(dns, name)
        assert reply[:2] == b"\x31\x31" and reply[3] & 0xF == wire.NOERROR
        assert ".".join(map(str, reply[-4:])) == service_vip("orders")
    _, stats, _ = http_get(f"http://127.0.0.1:{front['metrics']}/metrics")
    assert "meshctl_proxy_dns_answer_total 3" in stats.decode()


def test_no_dns_means_no_listener(mesh: Mesh) -> None:
    dns = free_port()
    mesh.proxy("frontend", extra=("--outbound", f"127.0.0.1:{free_port()}",
                                  "--dns-port", str(dns), "--no-dns"))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", dns), timeout=5).close()
