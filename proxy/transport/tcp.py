"""Opaque TCP: byte-for-byte relays, including half-close across the mTLS hop.

TLS in asyncio cannot half-close (no write_eof on an SSL transport), yet server-first and
request/response protocols rely on the client's FIN (a client that shuts down its write
side and then waits for the answer). Between two proxies the bytes therefore travel in
frames: a 4-byte big-endian length and the data; a zero-length frame is the FIN, which
the far proxy turns back into a real half-close towards its side.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Final

from proxy.transport.streams import ByteReader, ByteWriter

_LEN: Final = struct.Struct("!I")
FIN: Final = _LEN.pack(0)
CHUNK: Final = 65536


async def relay(
    r1: ByteReader,
    w1: ByteWriter,
    r2: ByteReader,
    w2: ByteWriter,
) -> tuple[int, int]:
    """Copy both directions until both are done, passing half-closes through (write_eof)."""

    async def pipe(r: ByteReader, w: ByteWriter) -> int:
        n = 0
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                n += len(data)
                w.write(data)
                await w.drain()
            if w.can_write_eof():
                w.write_eof()
        except (ConnectionError, OSError):
            with contextlib.suppress(Exception):
                w.close()
        return n

    a, b = await asyncio.gather(pipe(r1, w2), pipe(r2, w1))
    return a, b


async def _plain_to_framed(r: ByteReader, w: ByteWriter,
                           initial: bytes = b"") -> int:
    n = len(initial)
    try:
        if initial:
            w.write(_LEN.pack(len(initial)) + initial)
        while data := await r.read(CHUNK):
            n += len(data)
            w.write(_LEN.pack(len(data)) + data)
            await w.drain()
        w.write(FIN)
        await w.drain()
    except (ConnectionError, OSError):
        with contextlib.suppress(Exception):
            w.close()
    return n


async def _framed_to_plain(r: ByteReader, w: ByteWriter) -> int:
    n = 0
    try:
        while True:
            (size,) = _LEN.unpack(await r.readexactly(4))
            if size == 0:
                break
            if size > 4 * CHUNK:
                raise ConnectionError(f"frame of {size} bytes is larger than any we send")
            data = await r.readexactly(size)
            n += size
            w.write(data)
            await w.drain()
        if w.can_write_eof():
            w.write_eof()
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        with contextlib.suppress(Exception):
            w.close()
    return n


async def relay_framed(
    plain_r: ByteReader,
    plain_w: ByteWriter,
    tls_r: ByteReader,
    tls_w: ByteWriter,
    initial: bytes = b"",
) -> tuple[int, int]:
    """Relay between a plain TCP side and a framed mTLS side until both directions end;
    `initial` (what protocol detection already read from the plain side) goes first.
    Returns (bytes plain->tls, bytes tls->plain)."""
    sent, received = await asyncio.gather(
        _plain_to_framed(plain_r, tls_w, initial), _framed_to_plain(tls_r, plain_w)
    )
    return sent, received
