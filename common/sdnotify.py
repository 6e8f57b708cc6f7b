"""sd_notify(3) by hand: tell systemd a proxy or the registry is ready (`Type=notify`).

The protocol is one datagram of `KEY=VALUE` lines to the AF_UNIX socket named by
$NOTIFY_SOCKET (a path, or `@name` in the abstract namespace). No library needed.
"""

from __future__ import annotations

import os
import socket


def notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1") to $NOTIFY_SOCKET; False when not run by systemd.
    OSError when the socket is named but cannot be written to."""
    path = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path[0] not in "/@":
        raise OSError(f"NOTIFY_SOCKET={path!r} is neither a path nor @abstract")
    addr = "\0" + path[1:] if path[0] == "@" else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(addr)
        s.sendall(state.encode())
    return True
