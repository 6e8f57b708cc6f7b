"""SO_ORIGINAL_DST: where a redirected connection was going before iptables REDIRECT.

REDIRECT rewrites the destination to the proxy's own listener; the kernel's connection
tracking still holds the original one and hands it back through getsockopt on the accepted
socket: SO_ORIGINAL_DST at SOL_IP for IPv4 (linux/netfilter_ipv4.h), IP6T_SO_ORIGINAL_DST
at SOL_IPV6 for IPv6 (linux/netfilter_ipv6/ip6_tables.h); both are 80. The answer is a
`struct sockaddr_in` / `struct sockaddr_in6`, port and address in network byte order.

A dual-stack listener (bound to ::) that accepts an IPv4 client sees it as ::ffff:a.b.c.d;
its conntrack entry is IPv4, so it is asked at SOL_IP.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
_SOCKADDR_IN = struct.Struct("!2xH4s8x")  # family (host order, skipped), port, address
_SOCKADDR_IN6 = struct.Struct("!2xHI16sI")  # family, port, flowinfo, address, scope id


def _plain(host: str) -> str:
    """An address as written for its own family: ::ffff:10.0.0.1 -> 10.0.0.1."""
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _ask_kernel(sock: socket.socket) -> tuple[str, int]:
    if (
        sock.family == socket.AF_INET6
        and ipaddress.ip_address(_plain(sock.getpeername()[0])).version == 6
    ):
        raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, _SOCKADDR_IN6.size)
        port, _flow, addr6, _scope = _SOCKADDR_IN6.unpack(raw)
        return str(ipaddress.IPv6Address(addr6)), port
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise OSError(errno.EAFNOSUPPORT, f"not an IP socket: {sock.family!r}")
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, _SOCKADDR_IN.size)
    port, addr4 = _SOCKADDR_IN.unpack(raw)
    return str(ipaddress.IPv4Address(addr4)), port


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """The (address, port) the client connected to before REDIRECT sent it here.

    Raises OSError when the connection was not redirected: the kernel has no NAT entry for
    it (ENOENT), or the entry says the client asked for this very listener, which a proxy
    must refuse rather than forward to itself in a loop.
    """
    host, port = _ask_kernel(sock)
    local_host, local_port = sock.getsockname()[:2]
    if (host, port) == (_plain(local_host), local_port):
        raise OSError(
            errno.ENOENT, f"connection to {host}:{port} was not redirected (no original dst)"
        )
    return host, port
