"""Protocol detection: the first bytes decide HTTP or TCP; silence means a server-first protocol."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.transport.detect import OPAQUE_PORTS, detect, looks_like_http


@pytest.mark.parametrize("first", [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"POST /x HTTP/1.1\r\n", b"GET ", b"PATCH /a",
    b"PURGE /cache HTTP/1.1\r\n",
])
def test_http_starts(first: bytes) -> None:
    assert looks_like_http(first)


@pytest.mark.parametrize("first", [
    b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
    b"\x00\x00\x00\x08\x04\xd2\x16\x2f",  # PostgreSQL SSLRequest
    b"PURGE /cache",  # unknown method without the version yet: not enough to say HTTP
    b"*1\r\n$4\r\nPING\r\n",  # Redis
    b"", b"GET/ HTTP/1.1",
])
def test_not_http(first: bytes) -> None:
    assert not looks_like_http(first)


@given(st.binary(max_size=64))
def test_never_raises(data: bytes) -> None:
    looks_like_http(data)


def _reader(data: bytes | None) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    if data is not None:
        r.feed_data(data)
    return r


async def test_detect_http_and_keeps_the_bytes() -> None:
    kind, first = await detect(_reader(b"GET / HTTP/1.1\r\n"), 8080)
    assert kind == "http" and first == b"GET / HTTP/1.1\r\n"


async def test_silent_client_means_server_first_tcp() -> None:
    kind, first = await detect(_reader(None), 8080, timeout=0.05)
    assert (kind, first) == ("tcp", b"")


async def test_opaque_ports_skip_detection() -> None:
    for port in OPAQUE_PORTS:
        assert await detect(_reader(b"GET / HTTP/1.1\r\n"), port) == ("tcp", b"")
