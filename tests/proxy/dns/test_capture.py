"""DNS capture end to end, as root: in a namespace with the interception rules installed
(dns_port 15053), the app's resolver (glibc, `getent`, as uid 65534) gets the VIP of a mesh
name from the DNS server running as the proxy's uid 1337, and any other name from the
resolver in resolv.conf (a fake one on a second host), through the same server. The
namespace's hosts file has no mesh name, and the fake resolver answers every name with
192.0.2.7: a VIP can only have come from the proxy's DNS path.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from common.vip import service_vip
from meshctl.launch import netns
from proxy.intercept import iptables
from proxy.intercept.rules import InterceptConfig
from tests.proxy.intercept.support import make_pair, output_of, python_in, started

pytestmark = pytest.mark.root

RESOLVER = """
import asyncio, sys
from tests.proxy.dns.fakes import FakeResolver
async def main():
    fake = FakeResolver()
    await fake.start("0.0.0.0", 53)
    print("ready", flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"""

DNS = """
import asyncio
from proxy.dns.answer import NameTable
from proxy.dns.server import DnsServer, read_upstreams
async def main():
    table = NameTable.build([("orders", "%s")], "default")
    server = DnsServer(lambda: table, read_upstreams())
    await server.start("127.0.0.1", 15053)
    print("ready", *server.upstreams[0], flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"""

TCP_QUERY = """
import socket, struct, sys
from proxy.dns import wire
q = wire.make_query(sys.argv[1], ident=0x5151)
s = socket.create_connection((sys.argv[2], 53), timeout=5)
s.sendall(struct.pack("!H", len(q)) + q)
n = struct.unpack("!H", s.recv(2))[0]
data = b""
while len(data) < n:
    data += s.recv(n - len(data))
print(".".join(map(str, data[-4:])), data[:2].hex())
"""


@dataclass(frozen=True)
class Capture:
    app: str
    resolver_ip: str


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    with make_pair() as pair:
        app, other = pair.a.name, pair.b.name
        netns.write_hosts(app, {"localhost": "127.0.0.1"})  # no mesh name in the hosts file
        (netns.ETC_NETNS / app / "resolv.conf").write_text(
            f"nameserver {pair.b.ip}\noptions timeout:3 attempts:1\n")
        iptables.install(InterceptConfig(proxy_uid=1337, proxy_gid=1337, dns_port=15053), app)
        procs = [python_in(other, RESOLVER)]
        try:
            started(procs[0], "the fake resolver")
            procs.append(python_in(app, DNS % service_vip("orders"), uid=1337))
            line = started(procs[1], "the DNS server")
            assert line.split()[1] == pair.b.ip  # read from the namespace's resolv.conf
            yield Capture(app, pair.b.ip)
        finally:
            for proc in procs:
                proc.kill()
                proc.communicate()


def _getent(c: Capture, name: str, uid: int) -> str:
    argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "getent", "ahostsv4", name]  # fmt: skip
    proc = netns.run_in(c.app, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = output_of(proc)
    return out.split()[0]


def test_the_app_resolves_a_mesh_name_to_its_vip(capture: Capture) -> None:
    assert _getent(capture, "orders", 65534) == service_vip("orders")
    assert _getent(capture, "orders.mesh", 65534) == service_vip("orders")


def test_other_names_reach_the_hosts_resolver_through_the_proxy(capture: Capture) -> None:
    assert _getent(capture, "outside.example", 65534) == "192.0.2.7"


def test_dns_over_tcp_is_captured_too(capture: Capture) -> None:
    out = output_of(python_in(capture.app, TCP_QUERY, args=["orders", capture.resolver_ip],
                              uid=65534))
    assert out == f"{service_vip('orders')} 5151"


def test_the_proxys_own_queries_are_not_captured(capture: Capture) -> None:
    # uid 1337 asks the resolver itself: the fake one answers every name, mesh ones too.
    assert _getent(capture, "orders", 1337) == "192.0.2.7"
