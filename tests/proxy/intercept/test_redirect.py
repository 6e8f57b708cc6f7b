"""Real REDIRECT between two namespaces: who lands on 15001 / 15006, who goes straight.

Host A is the meshed workload: our rules installed (every inbound port captured but the
excluded, IPv4 and IPv6), a stand-in proxy on 15001 and 15006 that answers with the
connection's original destination, and an "app" on 8080, 9000 and 22, all on [::] (dual
stack, as Go and Node listen by default). Host B is a plain peer with an app on 8080.
Every answer is one line: `15001 IP:PORT` (landed on the outbound listener),
`15006 IP:PORT` (inbound listener) or `app HOST:PORT` (reached the app itself).
"""

from __future__ import annotations

import subprocess
import time
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
CFG = InterceptConfig(proxy_uid=PROXY_UID, proxy_gid=PROXY_UID)  # inbound: every port

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
    listener = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
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
    ll_a: str  # link-local IPv6 addresses, as every namespace has
    ll_b: str
    ula_a: str  # routable IPv6 addresses (unique local), as a dual-stack network gives
    ula_b: str

    def dial(self, src: str, ip: str, port: int, uid: int | None = None,
             gid: int | None = None) -> str:  # fmt: skip
        return output_of(python_in(src, CLIENT, args=[ip, str(port)], uid=uid, gid=gid))


def link_local(host: str, deadline_s: float = 10.0) -> str:
    """eth0's fe80:: address in `host`, once duplicate address detection has passed."""
    deadline = time.monotonic() + deadline_s
    while True:
        out = subprocess.run(
            ["ip", "netns", "exec", host, "ip", "-6", "-o", "addr", "show", "dev", "eth0",
             "scope", "link"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        if out and "tentative" not in out:
            return out.split()[3].split("/")[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no usable link-local address in {host} after {deadline_s}s: "
                                 f"{out!r}")  # fmt: skip
        time.sleep(0.1)


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
                proc.communicate(timeout=10)


def _meshed(pair: Pair, servers: list[subprocess.Popen[str]]) -> Mesh:
    a, b = pair.a.name, pair.b.name
    # Docker's embedded-DNS rules first, as in a container: they must keep working.
    subprocess.run(["ip", "netns", "exec", a, "iptables-restore", "--noflush"],
                   input=DOCKER_DNS_SAVE, text=True, check=True)  # fmt: skip
    iptables.install(CFG, a)
    # A unique-local /64 from B's IPv4 /24, so parallel runs do not collide.
    prefix = "fd00:{:x}::".format(int(pair.b.ip.split(".")[2]))
    for host, ula in ((a, prefix + "a"), (b, prefix + "b")):
        subprocess.run(["ip", "netns", "exec", host, "ip", "-6", "addr", "add", f"{ula}/64",
                        "dev", "eth0", "nodad"], check=True)  # fmt: skip
    servers.append(_start(a, 15001, 15006, 8080, 9000, 22, 41235))
    servers.append(_start(b, 8080))
    return Mesh(a, b, pair.a.ip, pair.b.ip, link_local(a), link_local(b), prefix + "a",
                prefix + "b")  # fmt: skip


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


def test_inbound_to_an_undeclared_port_lands_on_15006(mesh: Mesh) -> None:
    # Every port is captured (Istio's includeInboundPorts "*"), not only declared ones.
    assert mesh.dial(mesh.b, mesh.ip_a, 9000) == f"15006 {mesh.ip_a}:9000"


def test_inbound_to_an_excluded_port_reaches_the_app(mesh: Mesh) -> None:
    assert mesh.dial(mesh.b, mesh.ip_a, 22) == f"app {mesh.a}:22"


# --- IPv6: the same interception, through the link-local addresses ---------------------------


def test_ipv6_inbound_to_any_port_lands_on_15006(mesh: Mesh) -> None:
    for port in (8080, 9000):
        answer = mesh.dial(mesh.b, f"{mesh.ll_a}%eth0", port)
        assert answer == f"15006 {mesh.ll_a}:{port}"


def test_ipv6_inbound_to_an_excluded_port_reaches_the_app(mesh: Mesh) -> None:
    assert mesh.dial(mesh.b, f"{mesh.ll_a}%eth0", 22) == f"app {mesh.a}:22"


def test_ipv6_inbound_via_a_routable_address_lands_on_15006(mesh: Mesh) -> None:
    assert mesh.dial(mesh.b, mesh.ula_a, 9000) == f"15006 {mesh.ula_a}:9000"


def test_ipv6_outbound_lands_on_15001(mesh: Mesh) -> None:
    assert mesh.dial(mesh.a, mesh.ula_b, 8080) == f"15001 {mesh.ula_b}:8080"
    assert mesh.dial(mesh.a, mesh.ula_b, 8080, uid=4242) == f"15001 {mesh.ula_b}:8080"


def test_ipv6_outbound_to_a_link_local_address_never_leaves(mesh: Mesh) -> None:
    # The app's socket is pinned to eth0 by the scope id, so after REDIRECT to ::1 the
    # kernel finds no route for it and the SYN is dropped: the connection fails (closed),
    # it never reaches the peer's app around the proxy.
    for uid in (None, 4242):
        answer = mesh.dial(mesh.a, f"{mesh.ll_b}%eth0", 8080, uid=uid)
        assert answer.startswith("error"), answer


def test_ipv6_proxy_uid_goes_straight_and_loopback_stays(mesh: Mesh) -> None:
    assert mesh.dial(mesh.a, f"{mesh.ll_b}%eth0", 8080, uid=PROXY_UID) == f"app {mesh.b}:8080"
    assert mesh.dial(mesh.a, "::1", 8080) == f"app {mesh.a}:8080"


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
        InterceptConfig(
            proxy_uid=PROXY_UID,
            inbound_ports=(),
            exclude_outbound_cidrs=(f"{mesh.ip_b}/32", f"{mesh.ll_b}/128"),
        ),
        mesh.a,
    )
    assert mesh.dial(mesh.a, mesh.ip_b, 8080) == f"app {mesh.b}:8080"
    assert mesh.dial(mesh.a, f"{mesh.ll_b}%eth0", 8080) == f"app {mesh.b}:8080"
    assert mesh.dial(mesh.a, mesh.ula_b, 8080) == "15001 " + f"{mesh.ula_b}:8080"
    assert mesh.dial(mesh.b, mesh.ip_a, 8080) == f"app {mesh.a}:8080"  # no inbound capture
    iptables.remove(mesh.a)
    assert mesh.dial(mesh.a, mesh.ip_b, 9999) == "error ConnectionRefusedError"
    assert mesh.dial(mesh.a, "127.0.0.11", 53) == f"app {mesh.a}:41235"
    # Nothing of ours is left in either family.
    for tool in ("iptables-save", "ip6tables-save"):
        saved = subprocess.run(["ip", "netns", "exec", mesh.a, tool], capture_output=True,
                               text=True, check=True).stdout  # fmt: skip
        assert "MESH_" not in saved, f"{tool} still shows our rules:\n{saved}"
