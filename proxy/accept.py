"""Listening sockets and accepted connections as asyncio streams, with an optional TLS sniff."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from meshctl.aio import spawn


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(backlog)
    s.setblocking(False)
    return s


async def streams_for(
    sock: socket.socket, tls: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**16)
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_accepted_socket(
        lambda: protocol, sock, ssl=tls, ssl_handshake_timeout=10 if tls else None
    )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def first_byte(sock: socket.socket, timeout: float) -> bytes:
    """Peek at the first byte without consuming it (b"" on EOF): a TLS ClientHello is 0x16."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        await asyncio.wait_for(fut, timeout)
    finally:
        loop.remove_reader(sock.fileno())
    return sock.recv(1, socket.MSG_PEEK)


async def accept_loop(
    lsock: socket.socket, on_conn: Callable[[socket.socket], Coroutine[Any, Any, None]]
) -> None:
    """Accept forever; each connection is served by its own task."""
    loop = asyncio.get_running_loop()
    while True:
        conn, _ = await loop.sock_accept(lsock)
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        spawn(on_conn(conn))
