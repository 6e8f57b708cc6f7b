"""Giving the memory of a connection flood back to the system once the flood is over.

A connection that starts TLS costs about 40 KiB of OpenSSL and asyncio state, allocated
by glibc's malloc. When thousands of them close, the memory is free but stays in the
process's RSS: freed chunks sit between live ones, and glibc returns only the top of its
heap on its own (issue 19, item 6: 515 MB after a flood, and there it stayed).
`malloc_trim(0)` hands every whole free page back. It walks the heap, so it runs only
after a flood has ended (`Trimmer.tick`, once a second), never per connection.
Measured (2,000 connections that send a TLS record byte and stall, against a proxy whose
baseline is 28 MB): 107 MB at the peak; 109 MB 15 s after they were closed without a
trim, 38 MB with one.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

log = logging.getLogger("meshctl.proxy.memory")

FLOOD_CONNECTIONS = 256  # a drop in open connections this large is worth a trim


def _libc_trim() -> Callable[[], object] | None:
    try:
        import ctypes  # imported only after a first flood: ~1 MiB of RSS otherwise

        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    return lambda: trim(0)


class Trimmer:
    """Trims once the open connections have fallen FLOOD_CONNECTIONS below their peak."""

    __slots__ = ("_peak", "_trim", "trims")

    def __init__(self) -> None:
        self._peak = 0
        self._trim: Callable[[], object] | None = None
        self.trims = 0

    def tick(self, open_now: int) -> bool:
        """Called periodically with the open connection count; True when it trimmed."""
        if open_now >= self._peak:
            self._peak = open_now
            return False
        if self._peak - open_now < FLOOD_CONNECTIONS:
            return False
        self._peak = open_now
        # Connection state in a reference cycle would not be free yet: it lived through
        # the flood into the collector's oldest generation, collected only rarely.
        # (tls.TLSTransport.forget_failure breaks the cycle a failed handshake made.)
        gc.collect()
        if self._trim is None:
            self._trim = _libc_trim() or (lambda: None)
        self._trim()
        self.trims += 1
        log.info("connections fell from a flood to %d: free memory returned", open_now)
        return True
