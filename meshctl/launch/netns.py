"""Hosts as network namespaces on a Linux bridge: the local launcher's small topology.

A host is a named network namespace (/run/netns/NAME, so `ip netns` sees it) joined to a
bridge in the root namespace by a veth pair: the root side is enslaved to the bridge, the
namespace side is born as `eth0` inside the namespace (so it never clashes with the root
namespace's own eth0) and carries the host's address; `lo` is up. The bridge's address is
the hosts' gateway and lets processes in the root namespace (the registry) reach them.

Links, addresses, routes and namespaces are made with pyroute2 (netlink, no parsing of
`ip` output). Two things use subprocesses, on purpose:
  * `run_in` uses `ip netns exec`: besides entering the namespace it gives the process a
    private mount namespace with /etc/netns/NAME/* bind-mounted over /etc (so the hosts
    file from `write_hosts` resolves names) and a /sys of that namespace. pyroute2 enters
    namespaces but does none of that.
  * The bridge's FORWARD accept rule uses `iptables`, the same binary Docker uses, because
    the rule must live in the backend (nft or legacy) where Docker sets FORWARD to DROP.

Interface names are at most 15 characters (IFNAMSIZ - 1): a host's veth is named
`mv` + 12 hex digits of a hash of the host's name, with the host's name as the link's
alias (`ip link` shows it), so any host name gives a valid, stable, distinct interface.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, NetNS
from pyroute2 import netns as pr_netns

from common.state import atomic_write

NETNS_RUN_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
IFNAME_MAX = 15  # IFNAMSIZ (16) minus the terminating NUL
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_DNS_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9-]{1,63})*")


class NetnsError(Exception):
    """A host or bridge could not be made or found; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Bridge:
    """A Linux bridge in the root namespace; `address` is the hosts' gateway."""

    name: str
    address: ipaddress.IPv4Interface


@dataclass(frozen=True, slots=True)
class Host:
    """A network namespace plugged into a bridge: eth0 has `address`."""

    name: str
    bridge: str
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None
    veth: str  # the root-namespace end of the pair, enslaved to the bridge

    @property
    def ip(self) -> str:
        return str(self.address.ip)


def veth_name(host: str) -> str:
    """The root-side veth name for `host`: 14 characters, whatever the host's name."""
    return "mv" + hashlib.blake2s(host.encode(), digest_size=6).hexdigest()


def _check_ifname(name: str) -> None:
    if not _IFNAME.fullmatch(name):
        raise NetnsError(
            f"{name!r} is not a valid interface name: 1-{IFNAME_MAX} characters "
            "from A-Z a-z 0-9 _ . -"
        )


def _check_host_name(name: str) -> None:
    if not _HOST_NAME.fullmatch(name):
        raise NetnsError(
            f"{name!r} is not a valid host (namespace) name: up to 63 characters from "
            "A-Z a-z 0-9 _ . -, starting with a letter or digit"
        )


def _ipv4_interface(text: str, what: str) -> ipaddress.IPv4Interface:
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError as exc:
        raise NetnsError(f"{what} {text!r} is not an address with a prefix ({exc})") from exc
    if not isinstance(iface, ipaddress.IPv4Interface) or iface.network.prefixlen == 32:
        raise NetnsError(f"{what} {text!r}: want an IPv4 address/prefix like 10.250.1.1/24")
    return iface


def _index(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _used_networks() -> list[ipaddress.IPv4Network]:
    with IPRoute() as ipr:
        used = [
            ipaddress.ip_interface(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}").network
            for a in ipr.get_addr(family=2)
        ]
        for route in ipr.get_routes(family=2):
            dst = route.get("RTA_DST")
            if dst and route["dst_len"]:
                used.append(ipaddress.ip_network(f"{dst}/{route['dst_len']}", strict=False))
    return [n for n in used if isinstance(n, ipaddress.IPv4Network)]


def free_subnet(
    within: str = "10.250.0.0/16", prefixlen: int = 24, rng: random.Random | None = None
) -> ipaddress.IPv4Network:
    """A random subnet of `within` that no address or route of the root namespace overlaps.

    Random rather than first-free, so that launchers (or test runs) starting at the same
    moment rarely pick the same one.
    """
    pool = ipaddress.IPv4Network(within)
    used = _used_networks()
    free = [s for s in pool.subnets(new_prefix=prefixlen) if not any(s.overlaps(u) for u in used)]
    if not free:
        raise NetnsError(f"no free /{prefixlen} left in {within}: delete unused bridges")
    return (rng or random.Random()).choice(free)


def _iptables(*args: str) -> int:
    done = subprocess.run(
        ["iptables", "-w", "10", *args], capture_output=True, text=True, timeout=30
    )
    return done.returncode


def _forward_rule(bridge: str) -> list[str]:
    # With br_netfilter loaded (Docker loads it), bridged IPv4 frames cross the root
    # namespace's FORWARD chain, whose policy Docker sets to DROP: accept this bridge's own.
    return ["FORWARD", "-i", bridge, "-o", bridge, "-m", "comment", "--comment",
            f"meshctl bridge {bridge}", "-j", "ACCEPT"]  # fmt: skip


def _allow_forwarding(bridge: str) -> None:
    if shutil.which("iptables") is None:
        return  # no iptables, no Docker rules to get past
    rule = _forward_rule(bridge)
    if _iptables("-C", *rule) != 0 and _iptables("-I", *rule) != 0:
        raise NetnsError(f"could not add the FORWARD accept rule for bridge {bridge!r}")


def _disallow_forwarding(bridge: str) -> None:
    if shutil.which("iptables") is None:
        return
    rule = _forward_rule(bridge)
    while _iptables("-C", *rule) == 0:
        if _iptables("-D", *rule) != 0:
            raise NetnsError(f"could not delete the FORWARD accept rule for bridge {bridge!r}")


def create_bridge(name: str, cidr: str) -> Bridge:
    """Create bridge `name` with address `cidr` (e.g. 10.250.7.1/24), up."""
    _check_ifname(name)
    address = _ipv4_interface(cidr, "bridge address")
    with IPRoute() as ipr:
        if _index(ipr, name) is not None:
            raise NetnsError(f"interface {name!r} already exists: delete_bridge({name!r}) first")
        try:
            ipr.link("add", ifname=name, kind="bridge")
            index = _index(ipr, name)
            ipr.addr(
                "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            )
            ipr.link("set", index=index, state="up")
            _allow_forwarding(name)
        except BaseException:
            delete_bridge(name)
            raise
    return Bridge(name, address)


def delete_bridge(name: str) -> None:
    """Delete bridge `name` and its FORWARD rule; a missing bridge is not an error."""
    _check_ifname(name)
    _disallow_forwarding(name)
    with IPRoute() as ipr:
        index = _index(ipr, name)
        if index is not None:
            ipr.link("del", index=index)


def _netns_path(name: str) -> Path:
    _check_host_name(name)
    return NETNS_RUN_DIR / name


def create_host(name: str, bridge: str, address_cidr: str, gateway: str | None = None) -> Host:
    """Create host `name`: a namespace with eth0 = `address_cidr` on `bridge`, lo up.

    `gateway`, when given, becomes the default route (usually the bridge's address).
    On any failure the half-made host is deleted before the error propagates.
    """
    path = _netns_path(name)
    _check_ifname(bridge)
    address = _ipv4_interface(address_cidr, "host address")
    gw = ipaddress.IPv4Address(gateway) if gateway is not None else None
    veth = veth_name(name)
    if path.exists():
        raise NetnsError(f"network namespace {name!r} already exists: delete_host({name!r})")
    with IPRoute() as ipr:
        master = _index(ipr, bridge)
        if master is None:
            raise NetnsError(f"no bridge {bridge!r}: create_bridge() it first")
        pr_netns.create(name)
        try:
            ipr.link("add", ifname=veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": name})
            index = _index(ipr, veth)
            ipr.link("set", index=index, ifalias=name)
            ipr.link("set", index=index, master=master, state="up")
            with NetNS(name) as ns:
                eth0 = _index(ns, "eth0")
                prefix = address.network.prefixlen
                ns.addr("add", index=eth0, address=str(address.ip), prefixlen=prefix)
                ns.link("set", index=eth0, state="up")
                ns.link("set", index=_index(ns, "lo"), state="up")
                if gw is not None:
                    ns.route("add", dst="default", gateway=str(gw))
        except BaseException:
            delete_host(name)
            raise
    return Host(name, bridge, address, gw, veth)


def _pids_in(path: Path) -> list[int]:
    """The processes whose network namespace is the one bound at `path`."""
    try:
        target = os.stat(path)
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # gone, a zombie, or not ours to look at
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry))
    return pids


def _stop_processes(path: Path, grace: float = 3.0) -> None:
    """SIGTERM what still runs in the namespace, then SIGKILL after `grace` seconds.

    A process keeps its namespace (and the veth in it) alive after the name is unbound, so
    a host is not deleted until its processes are gone.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _pids_in(path)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = _pids_in(path)
            time.sleep(0.05)
        if not pids:
            return


def delete_host(name: str) -> None:
    """Delete host `name`: its processes, veth pair, namespace and /etc/netns/NAME.

    Whatever part is already gone is skipped, so this also cleans up a half-made host.
    A process that `run_in` is still starting (not yet inside) is not seen: stop or wait
    for what you started first.
    """
    path = _netns_path(name)
    _stop_processes(path)
    with IPRoute() as ipr:
        index = _index(ipr, veth_name(name))
        if index is not None:
            ipr.link("del", index=index)  # deletes both ends of the pair
    if path.exists():
        pr_netns.remove(name)
    if (ETC_NETNS / name).exists():
        shutil.rmtree(ETC_NETNS / name)


def list_hosts(prefix: str = "") -> list[str]:
    """Names of the network namespaces in /run/netns starting with `prefix`, sorted."""
    if not NETNS_RUN_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_RUN_DIR.iterdir() if p.name.startswith(prefix))


def write_hosts(name: str, entries: Mapping[str, str]) -> Path:
    """Write /etc/netns/NAME/hosts: `entries` maps a host name to its address.

    `ip netns exec` (hence `run_in`) bind-mounts it over /etc/hosts, so `getent hosts web`
    inside resolves. The file is replaced atomically; a process already running keeps the
    copy it started with.
    """
    if not _netns_path(name).exists():
        raise NetnsError(f"no network namespace {name!r}: create_host() it first")
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for host, addr in sorted(entries.items()):
        if not _DNS_NAME.fullmatch(host) or len(host) > 253:
            raise NetnsError(f"{host!r} is not a valid host name for /etc/hosts")
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError as exc:
            raise NetnsError(f"address of {host!r}: {exc}") from exc
        lines.append(f"{ip}\t{host}")
    path = ETC_NETNS / name / "hosts"
    atomic_write(path, "\n".join(lines) + "\n", mode=0o644)
    return path


def run_in(name: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """Start `argv` inside host `name` via `ip netns exec` (see the module docstring)."""
    if not _netns_path(name).exists():
        raise NetnsError(f"no network namespace {name!r}: create_host() it first")
    return subprocess.Popen(["ip", "netns", "exec", name, *argv], **popen_kwargs)
