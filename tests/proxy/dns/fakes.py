"""A fake upstream resolver on 127.0.0.1 (UDP and TCP, one port) that records what it got."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from proxy.dns import wire

OUTSIDE_IP = bytes([192, 0, 2, 7])  # TEST-NET-1: what the fake resolver answers


def upstream_reply(query: bytes) -> bytes:
    """The fake resolver's reply: the query's id and question, one A 192.0.2.7, and a
    marker TTL (4242) that no reply built by the proxy carries."""
    q = wire.parse_query(query)
    rr = wire.a_record(OUTSIDE_IP, 4242)
    return wire.reply(query, q, wire.NOERROR, rr, 1, authoritative=False)


class FakeResolver:
    """mode: "answer" (upstream_reply), "silent" (never replies), "wrong-id" (replies
    with another id first, then nothing)."""

    def __init__(self, mode: str = "answer") -> None:
        self.mode = mode
        self.got: list[tuple[str, bytes]] = []
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def _answer(self, query: bytes) -> bytes | None:
        if self.mode == "silent":
            return None
        reply = upstream_reply(query)
        if self.mode == "wrong-id":
            return struct.pack("!H", (reply[0] << 8 | reply[1]) ^ 0xFFFF) + reply[2:]
        return reply

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        fake = self

        class _Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                fake.got.append(("udp", data))
                out = fake._answer(data)
                if out is not None:
                    self.transport.sendto(out, addr)  # type: ignore[attr-defined]

        async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                (n,) = struct.unpack("!H", await reader.readexactly(2))
                data = await reader.readexactly(n)
                fake.got.append(("tcp", data))
                out = self._answer(data)
                if out is not None:
                    writer.write(struct.pack("!H", len(out)) + out)
                    await writer.drain()
                await asyncio.sleep(0.5 if out is None else 0)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self._tcp = await asyncio.start_server(on_tcp, host, port)
        self.port = self._tcp.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            _Udp, local_addr=(host, self.port)
        )
        return self.port

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
