"""The proxies' TLS objects (identity.DirectSSLObject): the event loop's per-record calls go
straight to C, and they behave as the stdlib's SSLObject does."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from bench.certs import make_tls_files
from proxy.identity import DirectSSLObject, load_identity, tls_context


def _contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    files = make_tls_files(tmp_path)
    bundle = files["ca"].read_bytes()
    # As the proxy makes its inbound context and an Identity its outbound one.
    server = load_identity(tls_context(server=True), files["server"], files["server"], bundle)
    client = load_identity(tls_context(server=False), files["client"], files["client"], bundle)
    return server, client


def _pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    data = src.read()
    if data:
        dst.write(data)


def test_read_write_pending_are_the_c_methods(tmp_path: Path) -> None:
    server_ctx, client_ctx = _contexts(tmp_path)
    bios = [ssl.MemoryBIO() for _ in range(4)]  # client in/out, server in/out
    client = client_ctx.wrap_bio(bios[0], bios[1])
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    for obj in (client, server):
        assert type(obj) is DirectSSLObject
        c = obj._sslobj  # type: ignore[attr-defined]
        # Bound to the C object: no Python frame between the event loop and OpenSSL.
        assert obj.read.__self__ is c and obj.write.__self__ is c  # type: ignore[attr-defined]
        assert obj.pending.__self__ is c  # type: ignore[attr-defined]
    for _ in range(10):  # the TLS 1.3 handshake with client certificates
        done = 0
        for obj, out_bio, peer_in in ((client, bios[1], bios[2]), (server, bios[3], bios[0])):
            try:
                obj.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            _pump(out_bio, peer_in)
        if done == 2:
            break
    assert client.version() == "TLSv1.3"
    assert server.getpeercert(binary_form=True)  # the client's certificate, as policy reads it

    # The same calls and results as the stdlib wrappers: read(n), read(n, buffer), pending().
    with pytest.raises(ssl.SSLWantReadError):
        server.read(1024)
    assert client.write(b"hello, mesh") == 11
    _pump(bios[1], bios[2])
    assert server.read(5) == b"hello"
    assert server.pending() == 6
    buf = bytearray(16)
    assert server.read(16, buf) == 6
    assert bytes(buf[:6]) == b", mesh"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_connection_over_the_event_loop(loop: str, tmp_path: Path) -> None:
    """Both event loops' TLS layers carry data both ways, and the server still reads the SNI
    that the client sent (identity._remember_sni stores it on the TLS object)."""
    server_ctx, client_ctx = _contexts(tmp_path)
    seen: list[object] = []

    async def main() -> bytes:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            obj = w.get_extra_info("ssl_object")
            seen.append((type(obj), getattr(obj, "meshctl_sni", None)))
            w.write((await r.readexactly(4)).upper())
            await w.drain()
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="p8080.orders.default.meshctl"
        )
        w.write(b"ping")
        got = await asyncio.wait_for(r.read(), 5)
        w.close()
        server.close()
        await server.wait_closed()
        return got

    run = asyncio.run
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")  # the proxy's loop
        run = uvloop.run
    assert run(main()) == b"PING"
    assert seen == [(DirectSSLObject, "p8080.orders.default.meshctl")]
