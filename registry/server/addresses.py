"""The addresses the registry serves on: for its certificate's SANs and the join string's URLs.

`--listen 0.0.0.0` (or `::`) means every local address, so the certificate must name each
one a proxy may dial (and a join string must list them), not only 127.0.0.1. Read from the
kernel over netlink when the registry starts; an address added later needs a restart.
"""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor

WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def local_addresses(*, ipv6: bool) -> list[str]:
    """This host's (this namespace's) addresses: IPv4, and IPv6 but link-local if `ipv6`."""
    # pyroute2's IPRoute runs an event loop of its own, which cannot start inside the
    # registry's running one: ask from a thread.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_read_addresses, ipv6).result(timeout=30)


def _read_addresses(ipv6: bool) -> list[str]:
    from pyroute2 import IPRoute  # netlink; only when the registry starts

    found: list[str] = []
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS")
            if not isinstance(addr, str):
                continue
            ip = ipaddress.ip_address(addr)
            if ip.version == 6 and (not ipv6 or ip.is_link_local):
                continue  # a link-local address is useless without its zone
            if addr not in found:
                found.append(addr)
    return found


def serving_addresses(host: str) -> list[str]:
    """The IP addresses a registry bound to `host` answers on: non-loopback ones first."""
    if host not in WILDCARDS:
        return [host]
    addrs = local_addresses(ipv6=host == "::")
    return sorted(addrs, key=lambda a: ipaddress.ip_address(a).is_loopback)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def join_urls(host: str, port: int, sans: tuple[str, ...]) -> list[str]:
    """The URLs a join string lists, in the order a joiner tries them: the names and
    addresses the operator gave (`--san`), then every address served, loopback last."""
    ordered: list[str] = []
    for h in (*sans, *serving_addresses(host)):
        if h not in ordered:
            ordered.append(h)
    return [f"https://{url_host(h)}:{port}" for h in ordered]
