"""Stable virtual IPs for services (as Kuma's 240.0.0.0/4 VIPs): what `orders` resolves to.

An app calls `http://orders:8080/`; the hosts file of its network namespace maps `orders`
to this address; iptables sends the connection to the proxy, which reads the original
destination and finds the service by its VIP. Derived from the name alone, so the hosts
file written at launch stays right across config changes and registry restarts.
"""

from __future__ import annotations

import hashlib

VIP_NET = "240.240"


def service_vip(service: str) -> str:
    h = hashlib.sha256(service.encode()).digest()
    # 240.240.0.0/16 minus .0 and .255 in the last octet: 254 x 256 addresses.
    return f"{VIP_NET}.{h[0]}.{1 + h[1] % 254}"
