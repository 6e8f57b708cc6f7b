"""proxy/httpio.py: the side-channel HTTP client and server, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.aio import spawn
from proxy.http1 import Data, EndOfMessage, RequestParser, encode_chunk
from proxy.httpio import (
    ChunkWriter,
    Client,
    HttpError,
    Reply,
    Server,
    ServerRequest,
    Stream,
    _Conn,
    json_reply,
    text_reply,
)

Raw = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _raw_server(handle: Raw) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, Client, list[asyncio.Event]]]:
    gone: list[asyncio.Event] = []

    async def hello(req: ServerRequest) -> Reply:
        return json_reply({"q": req.query, "method": req.method})

    async def boom(_: ServerRequest) -> Reply:
        raise RuntimeError("handler bug")

    async def lines(req: ServerRequest) -> Reply:
        n = int(req.query.get("n", "3"))
        left = asyncio.Event()
        gone.append(left)

        async def produce(out: ChunkWriter) -> None:
            try:
                for i in range(n):
                    await out.write(b'{"i": %d}\n' % i)
                await asyncio.sleep(0 if n else 60)  # n=0: wait for the client to leave
            finally:
                left.set()

        return Reply(content_type="application/x-ndjson", stream=produce)

    server = Server({"/hello": hello, "/boom": boom, "/lines": lines})
    await server.start("127.0.0.1", 0)
    assert server.address is not None
    client = Client(f"http://127.0.0.1:{server.address[1]}")
    yield server, client, gone
    await client.close()
    await server.close()


async def test_requests_and_keep_alive(served: tuple[Server, Client, list[asyncio.Event]]) -> None:
    _, client, _ = served
    r = await client.request("GET", "/hello", query={"a": "1", "b": "x y"})
    assert r.status == 200 and r.json() == {"q": {"a": "1", "b": "x y"}, "method": "GET"}
    conn = client._idle[0]
    r = await client.request("HEAD", "/hello")
    assert r.status == 200 and r.body == b""
    assert client._idle == [conn]  # the same connection, kept alive
    assert (await client.request("GET", "/nope")).status == 404
    assert (await client.request("POST", "/hello", json_body={"x": 1})).status == 405
    r = await client.request("GET", "/boom")
    assert r.status == 500 and b"Internal Server Error" in r.body


async def test_streamed_reply_is_chunked_ndjson(
    served: tuple[Server, Client, list[asyncio.Event]],
) -> None:
    _, client, _ = served
    async with await client.open_stream("GET", "/lines", query={"n": "5"}) as s:
        assert s.status == 200
        assert (b"transfer-encoding", b"chunked") in [(k.lower(), v) for k, v in s.headers]
        got = [json.loads(line) async for line in s.lines(read_timeout=5)]
    assert got == [{"i": i} for i in range(5)]


async def test_a_client_that_leaves_cancels_the_stream(
    served: tuple[Server, Client, list[asyncio.Event]],
) -> None:
    _, client, gone = served
    s = await client.open_stream("GET", "/lines", query={"n": "0"})
    await asyncio.sleep(0.05)
    assert not gone[0].is_set()
    s.close()
    await asyncio.wait_for(gone[0].wait(), 5)  # the producer's finally ran


async def test_server_refuses_bad_framing(
    served: tuple[Server, Client, list[asyncio.Event]],
) -> None:
    server, _, _ = served
    assert server.address is not None
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"GET /hello HTTP/1.1\r\n\r\n")  # no Host
    reply = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in reply


async def test_lines_split_across_chunks_and_a_last_line_without_newline() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b'{"a":', b"1}\n{", b'"b":2}\n\n', b'{"c":3}'):
            writer.write(encode_chunk(piece))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server, port = await _raw_server(handle)
    async with server, await Client(f"http://127.0.0.1:{port}").open_stream("GET", "/") as s:
        got = [line async for line in s.lines(read_timeout=5)]
    assert got == [b'{"a":1}\n', b'{"b":2}\n', b"\n", b'{"c":3}']


async def test_full_duplex_chunked_request_body() -> None:
    """As POST /v1/stream: the response streams while the request body is still open."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = RequestParser()
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while data := await reader.read(65536):
            for ev in parser.feed(data):
                if isinstance(ev, Data):
                    writer.write(encode_chunk(b"echo " + ev.data))
                elif isinstance(ev, EndOfMessage):
                    writer.write(b"0\r\n\r\n")
            await writer.drain()

    server, port = await _raw_server(echo)
    async with server, await Client(f"http://127.0.0.1:{port}").open_stream(
        "POST", "/v1/stream", query={"proxy_id": "p"}, duplex=True
    ) as s:
        lines = s.lines(read_timeout=5)
        for i in range(3):
            await s.send(b"ack %d\n" % i)
            assert await anext(lines) == b"echo ack %d\n" % i


async def test_a_stale_kept_alive_connection_is_replaced() -> None:
    served_on: list[int] = []

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        served_on.append(id(writer))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # without saying Connection: close

    server, port = await _raw_server(once)
    async with server:
        client = Client(f"http://127.0.0.1:{port}")
        assert (await client.request("GET", "/")).body == b"ok"
        await asyncio.sleep(0.05)
        assert (await client.request("GET", "/")).body == b"ok"  # retried on a new one
        await client.close()
    assert len(served_on) == 2


async def test_errors_are_oserrors_or_timeouts() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP\r\n\r\n")
        await writer.drain()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    server, port = await _raw_server(garbage)
    async with server:
        with pytest.raises(HttpError, match="bad response"):
            await Client(f"http://127.0.0.1:{port}").request("GET", "/")
    server, port = await _raw_server(silent)
    async with server:
        with pytest.raises(TimeoutError):
            await Client(f"http://127.0.0.1:{port}").request("GET", "/", timeout=0.2)
    with pytest.raises(OSError):
        await Client(f"http://127.0.0.1:{port}").request("GET", "/")  # closed: refused
    with pytest.raises(ValueError):
        Client("ftp://127.0.0.1/")


def _cert(tmp: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crt, pem = tmp / f"{name}.crt", tmp / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem


async def test_tls_is_verified_against_the_given_ca(tmp_path: Path) -> None:
    crt, key = _cert(tmp_path, "registry")
    other, _ = _cert(tmp_path, "other")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(crt, key)

    async def ok(_: ServerRequest) -> Reply:
        return text_reply("tls\n")

    app = Server({"/": ok})
    app._server = await asyncio.start_server(app._serve, "127.0.0.1", 0, ssl=server_ctx)
    assert app.address is not None
    url = f"https://127.0.0.1:{app.address[1]}"
    try:
        trusted = Client(url, ssl.create_default_context(cafile=str(crt)))
        assert (await trusted.request("GET", "/")).text() == "tls\n"
        await trusted.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await Client(url, ssl.create_default_context(cafile=str(other))).request("GET", "/")
    finally:
        await app.close()


async def test_a_cancel_as_a_line_arrives_is_not_lost() -> None:
    """A proxy stopping while the registry pushes a view: the stream task must end. (Python
    3.11's wait_for returned the read's result and dropped such a cancel.)"""
    reader = asyncio.StreamReader()
    conn = _Conn(reader, None)  # type: ignore[arg-type]  # nothing is written
    conn.parser.expect(b"GET")
    reader.feed_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    stream = Stream(conn, await conn.head())
    got: list[bytes] = []

    async def follow() -> None:
        async for line in stream.lines(read_timeout=45):
            got.append(line)

    task = spawn(follow())
    await asyncio.sleep(0)  # the task waits for the next read
    reader.feed_data(encode_chunk(b"view\n"))  # the read completes...
    task.cancel()  # ...and the stop's cancel arrives in the same turn of the loop
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
