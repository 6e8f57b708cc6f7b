"""TCP keepalive and a user timeout on a long-lived stream: a dead peer noticed in seconds.

The registry's config stream is idle for long stretches, and a push is one write: on a
connection whose peer is gone without a RST (a host powered off, a path black-holed, an
iptables change), the write sits in the send buffer and the kernel retransmits it for
~15 minutes (tcp_retries2) while the registry counts the push as sent. Envoy's xDS
clusters set TCP keepalive for the same reason. Here: keepalive probes after `idle_s` of
silence, every `interval_s`, `count` of them; and TCP_USER_TIMEOUT, so data written and
not acknowledged for `user_timeout_s` ends the connection. Both sides then see an error
and the proxy reconnects, resuming at its ACKed version.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

IDLE_S, INTERVAL_S, COUNT, USER_TIMEOUT_S = 5, 5, 3, 10


def keep_alive(sock: Any, *, idle_s: int = IDLE_S, interval_s: int = INTERVAL_S,
               count: int = COUNT, user_timeout_s: int = USER_TIMEOUT_S) -> bool:
    """Set the options on `sock` (a socket or asyncio's TransportSocket); False if it is not
    a TCP socket (a test's in-memory transport). Options the platform lacks are skipped."""
    if sock is None or getattr(sock, "type", None) != socket.SOCK_STREAM:
        return False
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return False
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", idle_s), ("TCP_KEEPINTVL", interval_s),
                        ("TCP_KEEPCNT", count), ("TCP_USER_TIMEOUT", user_timeout_s * 1000)):
        opt = getattr(socket, name, None)
        if opt is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)
    return True
