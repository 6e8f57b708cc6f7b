"""proxy.transport.tls: the proxy's own TLS transport, against itself and against the event loop's.

Both ends of a proxy-to-proxy connection use it, so every integration test exercises it;
these pin down what those do not reach on purpose: records split and coalesced at every
byte, interoperation with asyncio/uvloop's TLS, close_notify and abrupt closes, a refused
certificate, a handshake that never finishes, flow control on a large transfer.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bench.certs import make_tls_files
from common.aio import spawn
from proxy.transport import tls
from proxy.transport.streams import Channel, accept_channel, open_channel

T = TypeVar("T")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _client_ctx(files: dict[str, Path]) -> ssl.SSLContext:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_cert_chain(files["client"])
    client.load_verify_locations(files["ca"])
    client.check_hostname = False
    return client


@pytest.fixture(scope="module")
def contexts(files: dict[str, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts with client certificates required, as between proxies."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files["server"])
    server.load_verify_locations(files["ca"])
    server.verify_mode = ssl.CERT_REQUIRED
    return server, _client_ctx(files)


def _run(loop: str, main: Callable[[], Awaitable[T]]) -> T:
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")  # the proxy's loop
        return uvloop.run(main())  # type: ignore[no-any-return]
    return asyncio.run(main())  # type: ignore[arg-type]


class Listener:
    """A listener whose accepted connections arrive as Channels in `accepted`, over this
    module's TLS (`ours`) or the event loop's."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[Channel] = asyncio.Queue()
        self.server: asyncio.AbstractServer | None = None
        self.sock: socket.socket | None = None
        self.task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, ctx: ssl.SSLContext, ours: bool) -> Listener:
        loop = asyncio.get_running_loop()
        if not ours:
            def factory() -> Channel:
                ch = Channel()
                self.accepted.put_nowait(ch)
                return ch

            self.server = await loop.create_server(factory, "127.0.0.1", 0, ssl=ctx)
            self.port = self.server.sockets[0].getsockname()[1]
            return self
        lsock = self.sock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(16)
        lsock.setblocking(False)
        self.port = lsock.getsockname()[1]

        async def serve() -> None:
            while True:
                sock, _ = await loop.sock_accept(lsock)
                try:
                    self.accepted.put_nowait(await accept_channel(sock, ctx))
                except (ssl.SSLError, OSError, TimeoutError):
                    sock.close()

        self.task = spawn(serve())
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self.task is not None:
            self.task.cancel()
        if self.sock is not None:
            self.sock.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("pair", ["ours-ours", "ours-client", "ours-server"])
def test_data_both_ways_then_close_notify(
    loop: str, pair: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """Requests and answers of many sizes both ways (1 MiB through the TCP transport's
    flow control), against this module on both ends or the event loop's TLS on one; a
    close sends close_notify and the peer reads the end of the stream."""
    server_ctx, client_ctx = contexts
    ours_server = pair in ("ours-ours", "ours-server")
    ours_client = pair in ("ours-ours", "ours-client")

    async def main() -> None:
        listener = await Listener().start(server_ctx, ours_server)
        if ours_client:
            client = await open_channel("127.0.0.1", listener.port, ssl=client_ctx)
        else:
            client = Channel()
            await asyncio.get_running_loop().create_connection(
                lambda: client, "127.0.0.1", listener.port, ssl=client_ctx
            )
        peer = await asyncio.wait_for(listener.accepted.get(), 10)
        assert isinstance(client.get_extra_info("ssl_object"), ssl.SSLObject)
        assert peer.get_extra_info("peercert")  # the client's certificate, verified
        assert client.get_extra_info("sslcontext") is client_ctx
        assert client.get_extra_info("peername")[0] == "127.0.0.1"
        rng = random.Random(1)
        for size in (1, 100, 16383, 16384, 16385, 70000, 1 << 20):
            data = rng.randbytes(size)
            client.write(data)
            await client.drain()
            assert await asyncio.wait_for(peer.readexactly(size), 20) == data
            peer.write(data[::-1])
            await peer.drain()
            assert await asyncio.wait_for(client.readexactly(size), 20) == data[::-1]
        client.close()
        assert await asyncio.wait_for(peer.read(), 10) == b""  # close_notify: the end
        peer.close()
        await listener.close()

    _run(loop, main)


def test_records_split_and_joined_at_every_byte(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """Two TLSTransports joined by hand: the bytes each writes reach the other cut at
    every offset and glued together in every way TCP may, and the plaintext is whole."""
    server_ctx, client_ctx = contexts

    class Wire:
        """A TCP transport stand-in: keeps what is written for the test to deliver."""

        def __init__(self) -> None:
            self.out = bytearray()
            self.closed = False

        def write(self, data: bytes) -> None:
            self.out += data

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

        def abort(self) -> None:
            self.closed = True

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return default

    async def main() -> None:
        rng = random.Random(7)
        server_app, client_app = Channel(), Channel()
        server = tls.TLSTransport(server_ctx, True, None, server_app, 10)
        client = tls.TLSTransport(client_ctx, False, None, client_app, 10)
        swire, cwire = Wire(), Wire()
        server.connection_made(swire)  # type: ignore[arg-type]
        client.connection_made(cwire)  # type: ignore[arg-type]

        def deliver(wire: Wire, to: tls.TLSTransport, cuts: str) -> None:
            data, wire.out = bytes(wire.out), bytearray()
            if cuts == "bytes":
                pieces = [data[i : i + 1] for i in range(len(data))]
            elif cuts == "random":
                pieces, i = [], 0
                while i < len(data):
                    n = rng.randint(1, 40)
                    pieces.append(data[i : i + n])
                    i += n
            else:
                pieces = [data] if data else []
            for piece in pieces:
                to.data_received(piece)

        for _ in range(4):  # the handshake's flights, whole
            deliver(cwire, server, "whole")
            deliver(swire, client, "whole")
        assert client.connected.done() and server.connected.done()
        for cuts in ("whole", "bytes", "random"):
            messages = [rng.randbytes(rng.choice([1, 300, 5000, 20000])) for _ in range(3)]
            for m in messages:  # several records in the wire at once
                client.write(m)
            deliver(cwire, server, cuts)
            want = b"".join(messages)
            assert await server_app.readexactly(len(want)) == want
            server.write(want[::-1])
            deliver(swire, client, cuts)
            assert await client_app.readexactly(len(want)) == want[::-1]
        client.close()  # close_notify, then the TCP close
        assert cwire.closed
        deliver(cwire, server, "bytes")
        assert await asyncio.wait_for(server_app.read(), 5) == b""  # close_notify: the end

    asyncio.run(main())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_refused_certificate_fails_the_handshake_on_both_ends(
    loop: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext], tmp_path: Path
) -> None:
    server_ctx, _ = contexts
    stranger = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    other = make_tls_files(tmp_path)  # another CA: the server does not trust this client
    stranger.load_cert_chain(other["client"])
    stranger.check_hostname = False
    stranger.verify_mode = ssl.CERT_NONE

    async def main() -> None:
        listener = await Listener().start(server_ctx, True)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            ch = await open_channel("127.0.0.1", listener.port, ssl=stranger)
            await asyncio.wait_for(ch.read(), 5)  # TLS 1.3: the alert comes after
            raise ConnectionResetError("no data expected")
        await asyncio.sleep(0.1)
        assert listener.accepted.empty()
        await listener.close()

    _run(loop, main)


def test_handshake_timeout_and_abrupt_close(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A client that connects and says nothing fails the server's handshake after its
    timeout; a peer that drops TCP mid-stream gives a clean end, not a hang."""
    server_ctx, client_ctx = contexts

    async def main() -> None:
        loop = asyncio.get_running_loop()
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(4)
        lsock.setblocking(False)
        silent = socket.create_connection(lsock.getsockname())
        sock, _ = await loop.sock_accept(lsock)
        started = loop.time()
        with pytest.raises(TimeoutError):
            await tls.accept(sock, server_ctx, Channel(), 0.3)
        assert 0.25 < loop.time() - started < 5
        silent.close()

        async def accept_one() -> Channel:
            s, _ = await loop.sock_accept(lsock)
            return await accept_channel(s, server_ctx)

        accepting = spawn(accept_one())
        client = await open_channel("127.0.0.1", lsock.getsockname()[1], ssl=client_ctx)
        peer = await accepting
        client.write(b"x")
        assert await peer.readexactly(1) == b"x"
        transport = client.transport
        transport.abort()  # no close_notify: a dropped connection
        assert await asyncio.wait_for(peer.read(), 5) == b""
        peer.close()
        lsock.close()

    asyncio.run(main())


def test_a_session_is_resumed_and_the_peer_still_known(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], files: dict[str, Path]
) -> None:
    """The second connection to a peer resumes the first one's session (no certificate
    signatures); both ends still read the peer's verified certificate; a session of
    another client context is not offered (a full handshake instead)."""
    server_ctx, client_ctx = contexts
    renewed = _client_ctx(files)  # the client's context after a renewal: another object

    async def main() -> list[tuple[bool, bool, bool]]:
        listener = await Listener().start(server_ctx, True)
        resume = tls.Resumption()
        seen = []
        for ctx in (client_ctx, client_ctx, client_ctx, renewed):
            ch = await open_channel("127.0.0.1", listener.port, ssl=ctx, resume=resume)
            peer = await asyncio.wait_for(listener.accepted.get(), 10)
            ch.write(b"ping")  # a round trip: the server's tickets reach the client
            assert await peer.readexactly(4) == b"ping"
            peer.write(b"pong")
            assert await ch.readexactly(4) == b"pong"
            ssl_object = ch.get_extra_info("ssl_object")
            server_side = peer.get_extra_info("ssl_object")
            seen.append((
                ssl_object.session_reused,
                ssl_object.getpeercert(binary_form=True) is not None,
                server_side.getpeercert(binary_form=True) is not None,
            ))
            ch.close()
            peer.close()
        await listener.close()
        return seen

    seen = asyncio.run(main())
    assert seen[0] == (False, True, True)  # a full handshake
    assert seen[1] == (True, True, True) and seen[2] == (True, True, True)  # resumed
    assert seen[3][0] is False  # another context: not offered, a full handshake
