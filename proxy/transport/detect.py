"""Protocol detection for ports declared without a protocol: HTTP/1.1 or opaque TCP.

Istio and Linkerd sniff the first bytes a client sends. A server-first protocol (MySQL,
SMTP, PostgreSQL's SSL probe aside) sends nothing until the server speaks, so waiting for
the client must stop after a short timeout and fall back to TCP; the well-known
server-first ports skip detection altogether (Linkerd's default opaque ports).
"""

from __future__ import annotations

import asyncio
import re
from typing import Final

from proxy.transport.streams import ByteReader

# Linkerd's default opaque ports: server-first protocols that a sniffer would hang.
OPAQUE_PORTS: Final = frozenset((25, 587, 3306, 4444, 5432, 6379, 9300, 11211))
DETECT_TIMEOUT_S: Final = 0.3  # wait this long for the client's first bytes, then assume TCP
# An HTTP/1.x request line starts with a method token and a space; the version comes
# later, but the token and the space in the first bytes already tell (RFC 9112 3).
_HTTP_START: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20} ")
_METHODS: Final = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE",
            b"PATCH")


def looks_like_http(first: bytes) -> bool:
    """True when `first` (the client's first bytes) starts an HTTP/1.x request."""
    m = _HTTP_START.match(first)
    if m is None:
        return False
    if first[: m.end() - 1] in _METHODS:
        return True
    # An unknown method: only if the request line (when complete) ends in HTTP/1.x.
    line_end = first.find(b"\r\n")
    return line_end > 0 and first[:line_end].endswith((b" HTTP/1.1", b" HTTP/1.0"))


async def detect(reader: ByteReader, port: int,
                 timeout: float = DETECT_TIMEOUT_S) -> tuple[str, bytes]:
    """("http" | "tcp", the bytes already read, to be replayed to whoever handles them)."""
    if port in OPAQUE_PORTS:
        return "tcp", b""
    try:
        async with asyncio.timeout(timeout):
            first = await reader.read(65536)
    except TimeoutError:
        return "tcp", b""  # the server speaks first
    return ("http" if looks_like_http(first) else "tcp"), first
