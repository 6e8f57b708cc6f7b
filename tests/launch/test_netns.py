"""Hosts as network namespaces on a bridge: build, talk across, resolve names, clean up."""

from __future__ import annotations

import errno
import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.exceptions import NetlinkError

from meshctl.launch import netns
from meshctl.launch.netns import NetnsError
from tests.proxy.intercept.support import make_pair, output_of, python_in, unique

# --- unit ----------------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=200))
def test_veth_names_fit_ifnamsiz_whatever_the_host_name(host: str) -> None:
    name = netns.veth_name(host)
    assert len(name) <= netns.IFNAME_MAX
    assert name.isascii() and name.isalnum()
    assert name == netns.veth_name(host)


def test_veth_names_differ_for_names_sharing_a_long_prefix() -> None:
    names = {netns.veth_name(f"mtabcdef-service-{i}") for i in range(1000)}
    assert len(names) == 1000


@pytest.mark.parametrize("bad", ["", "x" * 16, "has space", "a/b"])
def test_bad_bridge_names_are_refused(bad: str) -> None:
    with pytest.raises(NetnsError, match="not a valid interface name"):
        netns.create_bridge(bad, "10.250.1.1/24")


@pytest.mark.parametrize("bad", ["", "../x", "-lead", "a" * 64, "a b"])
def test_bad_host_names_are_refused(bad: str) -> None:
    with pytest.raises(NetnsError, match="not a valid host"):
        netns.create_host(bad, "mtbr", "10.250.1.2/24")


@pytest.mark.parametrize("cidr", ["10.250.1.2", "fd00::2/64", "banana/24"])
def test_addresses_need_an_ipv4_prefix(cidr: str) -> None:
    with pytest.raises(NetnsError, match="address"):
        netns.create_bridge("mtokname", cidr)


def test_unknown_hosts_are_reported() -> None:
    missing = unique("gone")
    with pytest.raises(NetnsError, match=f"no network namespace '{missing}'"):
        netns.write_hosts(missing, {"web": "10.250.1.2"})
    with pytest.raises(NetnsError, match="create_host"):
        netns.run_in(missing, ["true"])


# --- root ----------------------------------------------------------------------------------

LISTEN = """
import socket
with socket.create_server(("0.0.0.0", 7000)) as listener:
    print("ready", flush=True)
    conn, peer = listener.accept()
    with conn:
        conn.sendall(f"hello {peer[0]}".encode())
"""

DIAL = """
import socket, sys
with socket.create_connection((sys.argv[1], 7000), timeout=5) as conn:
    print(conn.recv(100).decode())
"""


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def _forward_rules() -> str:
    done = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True)
    return done.stdout


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh name prefix; anything left under it is removed (and fails the test)."""
    name = unique()
    yield name
    leftovers = netns.list_hosts(name)
    for host in leftovers:
        netns.delete_host(host)
    assert not leftovers, f"left behind: {leftovers}"


@pytest.mark.root
def test_two_hosts_talk_across_the_bridge_and_leave_nothing(prefix: str) -> None:
    subnet = netns.free_subnet()
    gateway, ip_a, ip_b = (str(subnet[i]) for i in (1, 2, 3))
    bridge = netns.create_bridge(prefix + "br", f"{gateway}/24")
    try:
        a = netns.create_host(prefix + "a", bridge.name, f"{ip_a}/24", gateway)
        b = netns.create_host(prefix + "b", bridge.name, f"{ip_b}/24", gateway)
        assert (a.ip, b.ip, a.gateway) == (ip_a, ip_b, ipaddress.IPv4Address(gateway))
        assert netns.list_hosts(prefix) == [a.name, b.name]
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert a.name in listed and b.name in listed
        assert f"master {bridge.name}" in next(
            line for line in _links().splitlines() if f" {a.veth}@" in line
        )
        assert f"meshctl bridge {bridge.name}" in _forward_rules()

        server = python_in(b.name, LISTEN)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        assert output_of(python_in(a.name, DIAL, args=[b.ip])) == f"hello {a.ip}"
        assert output_of(server) == ""
    finally:
        for host in (prefix + "a", prefix + "b"):
            netns.delete_host(host)
        netns.delete_bridge(prefix + "br")
    assert netns.list_hosts(prefix) == []
    assert prefix not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                        text=True).stdout  # fmt: skip
    links = _links()
    assert prefix not in links
    assert netns.veth_name(prefix + "a") not in links
    assert not (netns.ETC_NETNS / (prefix + "a")).exists()
    assert f"meshctl bridge {prefix}br" not in _forward_rules()


@pytest.mark.root
def test_hosts_file_resolves_names_inside() -> None:
    with make_pair() as pair:
        path = netns.write_hosts(pair.a.name, {"web": pair.b.ip, "db.internal": "10.250.0.9"})
        assert path == Path("/etc/netns") / pair.a.name / "hosts"
        assert oct(path.stat().st_mode & 0o777) == "0o644"
        # ahostsv4, not hosts: `getent hosts` asks for IPv6 first, misses in the file and
        # falls through to DNS, a query that must not leave the test's namespaces.
        for name, address in (("web", pair.b.ip), ("db.internal", "10.250.0.9")):
            getent = netns.run_in(pair.a.name, ["getent", "ahostsv4", name],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
            out, _ = getent.communicate(timeout=10)
            assert getent.returncode == 0
            assert out.split()[:3] == [address, "STREAM", name]
        # A name resolves to an address the client can dial.
        server = python_in(pair.b.name, LISTEN)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        assert output_of(python_in(pair.a.name, DIAL, args=["web"])) == f"hello {pair.a.ip}"
        server.communicate(timeout=10)
        etc = path.parent
    assert not etc.exists()


@pytest.mark.root
def test_delete_host_stops_what_runs_inside(prefix: str) -> None:
    subnet = netns.free_subnet()
    bridge = netns.create_bridge(prefix + "br", f"{subnet[1]}/24")
    try:
        host = netns.create_host(prefix + "a", bridge.name, f"{subnet[2]}/24")
        code = "import time; print('ready', flush=True); time.sleep(600)"
        sleeper = netns.run_in(host.name, [sys.executable, "-c", code], stdout=subprocess.PIPE)
        try:
            assert sleeper.stdout is not None and sleeper.stdout.readline() == b"ready\n"
            netns.delete_host(host.name)
            assert sleeper.wait(timeout=10) != 0
        finally:
            sleeper.kill()
            sleeper.wait(10)
        assert host.veth not in _links()
        netns.delete_host(host.name)  # already gone: fine
    finally:
        netns.delete_host(prefix + "a")
        netns.delete_bridge(bridge.name)
    netns.delete_bridge(bridge.name)  # already gone: fine


@pytest.mark.root
def test_duplicates_are_refused_and_a_failed_host_is_rolled_back(prefix: str) -> None:
    subnet = netns.free_subnet()
    bridge = netns.create_bridge(prefix + "br", f"{subnet[1]}/24")
    try:
        with pytest.raises(NetnsError, match="already exists"):
            netns.create_bridge(bridge.name, f"{subnet[1]}/24")
        netns.create_host(prefix + "a", bridge.name, f"{subnet[2]}/24")
        with pytest.raises(NetnsError, match="already exists"):
            netns.create_host(prefix + "a", bridge.name, f"{subnet[3]}/24")
        with pytest.raises(NetnsError, match="no bridge"):
            netns.create_host(prefix + "b", prefix + "nobr", f"{subnet[3]}/24")
        # The gateway is off-link: the route fails after the namespace exists.
        with pytest.raises(NetlinkError) as unreachable:
            netns.create_host(prefix + "c", bridge.name, f"{subnet[4]}/24", "192.0.2.1")
        assert unreachable.value.code == errno.ENETUNREACH, unreachable.value
        assert netns.list_hosts(prefix) == [prefix + "a"]
        assert netns.veth_name(prefix + "c") not in _links()
    finally:
        netns.delete_host(prefix + "a")
        netns.delete_bridge(bridge.name)


@pytest.mark.root
def test_free_subnet_avoids_addresses_in_use() -> None:
    with make_pair() as pair:
        taken = ipaddress.ip_network(f"{pair.a.ip}/24", strict=False)
        for _ in range(50):
            assert not netns.free_subnet("10.250.0.0/16").overlaps(taken)
        with pytest.raises(NetnsError, match="no free"):
            netns.free_subnet(str(taken), 24)
