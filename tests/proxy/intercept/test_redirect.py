"""Real REDIRECT between two namespaces: who lands on 15001 / 15006, who goes straight.

Host A is the meshed workload: our rules installed, a stand-in proxy on 15001 and 15006
that answers with the connection's original destination, and an "app" on 8080 and 22.
Host B is a plain peer with an app on 8080. Every answer is one line: `15001 IP:PORT`
(landed on the outbound listener), `15006 IP:PORT` (inbound listener) or `app HOST:PORT`
(reached the app itself).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from proxy.intercept import iptables
from proxy.intercept.rules import InterceptConfig
from tests.proxy.intercept.support import (
    DOCKER_DNS_SAVE,
    Pair,
    make_pair,
    output_of,
    python_in,
    started,
)

pytestmark = pytest.mark.root

PROXY_UID = 1337
CFG = InterceptConfig(proxy_uid=PROXY_UID, proxy_gid=PROXY_UID, inbound_ports=(8080,))

SERVER = """
import socket, sys, threading
from proxy.intercept.origdst import original_dst
name, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]

def serve(listener, port):
    while True:
        conn, _ = listener.accept()
        with conn:
            if port in (15001, 15006):
                try:
                    host, dport = original_dst(conn)
                    answer = f"{port} {host}:{dport}"
                except OSError:
                    answer = f"{port} not-redirected"
            else:
                answer = f"app {name}:{port}"
            conn.sendall(answer.encode() + b"\\n")

for port in ports:
    listener = socket.create_server(("0.0.0.0", port), reuse_port=False)
    threading.Thread(target=serve, args=(listener, port), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as conn:
        print(conn.makefile().readline().strip())
except OSError as exc:
    print("error", type(exc).__name__)
"""


@dataclass(frozen=True)
class Mesh:
    a: str
    b: str
    ip_a: str
    ip_b: str

    def dial(self, src: str, ip: str, port: int, uid: int | None = None,
             gid: int | None = None) -> str:  # fmt: skip
        return output_of(python_in(src, CLIENT, args=[ip, str(port)], uid=uid, gid=gid))


def _start(host: str, *ports: int) -> subprocess.Popen[str]:
    proc = python_in(host, SERVER, args=[host, *map(str, ports)])
    started(proc, f"server in {host}")
    return proc


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with make_pair() as pair:
        servers: list[subprocess.Popen[str]] = []
        try:
            yield _meshed(pair, servers)
        finally:
            for proc in servers:
                proc.kill()
                proc.communicate()


def _meshed(pair: Pair, servers: list[subprocess.Popen[str]]) -> Mesh:
    a, b = pair.a.name, pair.b.name
    # Docker's embedded-DNS rules first, as in a container: they must keep working.
    subprocess.run(["ip", "netns", "exec", a, "iptables-restore", "--noflush"],
                   input=DOCKER_DNS_SAVE, text=True, check=True)  # fmt: skip
    iptables.install(CFG, a)
    servers.append(_start(a, 15001, 15006, 8080, 22, 41235))
    servers.append(_start(b, 8080))
    return Mesh(a, b, pair.a.ip, pair.b.ip)


def test_app_outbound_lands_on_15001_with_its_original_destination(mesh: Mesh) -> None:
    assert mesh.dial(mesh.a, mesh.ip_b, 8080) == f"15001 {mesh.ip_b}:8080"
    assert mesh.dial(mesh.a, mesh.ip_b, 5555) == f"15001 {mesh.ip_b}:5555"


def test_proxy_uid_goes_straight_to_the_peer(mesh: Mesh) -> None:
    assert mesh.dial(mesh.a, mesh.ip_b, 8080, uid=PROXY_UID) == f"app {mesh.b}:8080"


def test_proxy_gid_goes_straight_to_the_peer(mesh: Mesh) -> None:
    assert mesh.dial(mesh.a, mesh.ip_b, 8080, uid=4242, gid=PROXY_UID) == f"app {mesh.b}:8080"


def test_other_unprivileged_users_are_captured(mesh: Mesh) -> None:
    assert mesh.dial(mesh.a, mesh.ip_b, 8080, uid=4242) == f"15001 {mesh.ip_b}:8080"


def test_inbound_to_a_service_port_lands_on_15006(mesh: Mesh) -> None:
    assert mesh.dial(mesh.b, mesh.ip_a, 8080) == f"15006 {mesh.ip_a}:8080"


def test_inbound_to_an_excluded_port_reaches_the_app(mesh: Mesh) -> None:
    assert mesh.dial(mesh.b, mesh.ip_a, 22) == f"app {mesh.a}:22"


def test_loopback_and_the_app_calling_itself_are_not_captured(mesh: Mesh) -> None:
    assert mesh.dial(mesh.a, "127.0.0.1", 8080) == f"app {mesh.a}:8080"
    assert mesh.dial(mesh.a, mesh.ip_a, 8080) == f"app {mesh.a}:8080"


def test_proxy_calling_its_own_workload_goes_through_inbound(mesh: Mesh) -> None:
    assert mesh.dial(mesh.a, mesh.ip_a, 8080, uid=PROXY_UID) == f"15006 {mesh.ip_a}:8080"


def test_dockers_embedded_dns_still_answers(mesh: Mesh) -> None:
    # Docker DNATs 127.0.0.11:53 to its resolver's port; our rules must not steal it.
    assert mesh.dial(mesh.a, "127.0.0.11", 53) == f"app {mesh.a}:41235"


def test_excluded_cidr_then_removal(mesh: Mesh) -> None:
    """Last in the module: it changes A's rules."""
    iptables.install(
        InterceptConfig(proxy_uid=PROXY_UID, exclude_outbound_cidrs=(f"{mesh.ip_b}/32",)), mesh.a
    )
    assert mesh.dial(mesh.a, mesh.ip_b, 8080) == f"app {mesh.b}:8080"
    assert mesh.dial(mesh.b, mesh.ip_a, 8080) == f"app {mesh.a}:8080"  # no inbound capture
    iptables.remove(mesh.a)
    assert mesh.dial(mesh.a, mesh.ip_b, 9999) == "error ConnectionRefusedError"
    assert mesh.dial(mesh.a, "127.0.0.11", 53) == f"app {mesh.a}:41235"
