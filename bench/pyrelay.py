"""The floor of any Python proxy on this machine: a bare uvloop byte relay, two hops, TLS 1.3
with client certificates between them, no HTTP parsing, no policy, one upstream connection
per downstream one. It is a reference system of the bench (`pyrelay-tls-<variant>`), not a
product: what meshctl costs above it is the per-request work of a real proxy (HTTP/1.1
parsing and re-framing, routing, policies, telemetry), what it costs below HAProxy is the
language and the event loop.

    python -m bench.pyrelay A LISTEN_PORT UPSTREAM_PORT PKI_DIR   # plain in, TLS out
    python -m bench.pyrelay B LISTEN_PORT UPSTREAM_PORT PKI_DIR   # TLS in, plain out

PKI_DIR holds bench.certs' ca.crt, server.pem and client.pem.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path
from typing import cast

import uvloop

from common.aio import spawn


class _Upstream(asyncio.Protocol):
    def __init__(self, down: _Downstream) -> None:
        self.down = down
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        assert self.down.transport is not None
        self.down.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.down.transport is not None:
            self.down.transport.close()


class _Downstream(asyncio.Protocol):
    upstream_port = 0
    upstream_tls: ssl.SSLContext | None = None

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.up: _Upstream | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        spawn(self._connect())

    async def _connect(self) -> None:
        up = _Upstream(self)
        tls = self.upstream_tls
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: up, "127.0.0.1", self.upstream_port, ssl=tls,
                server_hostname="upstream" if tls else None,
            )
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        self.up = up
        assert up.transport is not None
        for data in self.early:
            up.transport.write(data)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.up is None or self.up.transport is None:
            self.early.append(data)
        else:
            self.up.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()


def _contexts(role: str, pki: Path) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(TLS to accept with, TLS to connect with) for hop A or B."""
    if role == "A":
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.minimum_version = ssl.TLSVersion.TLSv1_3
        client.load_cert_chain(pki / "client.pem")
        client.load_verify_locations(pki / "ca.crt")
        return None, client
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.load_cert_chain(pki / "server.pem")
    server.load_verify_locations(pki / "ca.crt")
    server.verify_mode = ssl.CERT_REQUIRED
    return server, None


async def _serve(role: str, listen: int, upstream: int, pki: Path) -> None:
    accept_tls, connect_tls = _contexts(role, pki)
    _Downstream.upstream_port = upstream
    _Downstream.upstream_tls = connect_tls
    server = await asyncio.get_running_loop().create_server(
        _Downstream, "127.0.0.1", listen, ssl=accept_tls, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in ("A", "B"):
        print(__doc__, file=sys.stderr)
        return 2
    uvloop.run(_serve(argv[0], int(argv[1]), int(argv[2]), Path(argv[3])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
