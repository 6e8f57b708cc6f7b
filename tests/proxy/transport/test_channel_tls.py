"""Channel over TLS: EOF from the peer ends the stream without asyncio's warning."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest

from bench.certs import make_tls_files
from proxy.transport.streams import Channel, open_channel


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_peer_close_over_tls_is_quiet(
    loop: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = make_tls_files(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files["server"])
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(files["ca"])
    client_ctx.check_hostname = False
    accepted: list[Channel] = []

    async def main() -> bytes:
        ready = asyncio.Event()

        def factory() -> Channel:
            accepted.append(Channel())
            ready.set()
            return accepted[-1]

        server = await asyncio.get_running_loop().create_server(
            factory, "127.0.0.1", 0, ssl=server_ctx
        )
        port = server.sockets[0].getsockname()[1]
        client = await open_channel("127.0.0.1", port, ssl=client_ctx)
        client.write(b"ping")
        await client.drain()
        await asyncio.wait_for(ready.wait(), 5)  # the server accepted
        got = await accepted[0].read(4)
        client.close()  # close_notify, then EOF at the server
        rest = await asyncio.wait_for(accepted[0].read(), 5)  # b"": the stream ended
        server.close()
        await server.wait_closed()
        return got + rest

    run = asyncio.run
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")  # the proxy's loop
        run = uvloop.run
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        assert run(main()) == b"ping"
    assert not [r for r in caplog.records if "eof_received" in r.getMessage()]
