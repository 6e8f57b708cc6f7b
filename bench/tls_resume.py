"""TLS connections between proxies, full handshakes against resumed ones, side by side.

    python -m bench.tls_resume [--connections 300] [--rounds 2]

One process on uvloop, proxy.transport.tls on both ends (client certificates required, EC P-256, as
between proxies): `connections` sequential connections, each with one round trip, first
with no session offered, then with `tls.Resumption` offering the last one's. Prints the
CPU time per connection (both ends together) and how many were resumed. Run it pinned
(`taskset -c 1`) on an idle machine; only the ratio of the two rows means much.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
import tempfile
import time
from pathlib import Path

from bench.certs import make_tls_files
from proxy.transport import tls
from proxy.transport.streams import Channel, accept_channel, open_channel


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    files = make_tls_files(Path(tempfile.mkdtemp(prefix="meshctl-tls-resume-")))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files["server"])
    server.load_verify_locations(files["ca"])
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_cert_chain(files["client"])
    client.load_verify_locations(files["ca"])
    client.check_hostname = False
    return server, client


async def _run(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, n: int,
               resume: bool) -> tuple[float, int]:
    loop = asyncio.get_running_loop()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    lsock.setblocking(False)
    port = lsock.getsockname()[1]
    holder = tls.Resumption() if resume else None
    reused = 0
    started = time.process_time()
    for _ in range(n):
        opening = loop.create_task(open_channel("127.0.0.1", port, ssl=client_ctx,
                                                resume=holder))
        sock, _ = await loop.sock_accept(lsock)
        peer: Channel = await accept_channel(sock, server_ctx)
        ch = await opening
        ch.write(b"x")  # a round trip: TLS 1.3 tickets reach the client after the handshake
        await peer.readexactly(1)
        peer.write(b"y")
        await ch.readexactly(1)
        reused += bool(ch.get_extra_info("ssl_object").session_reused)
        ch.close()
        peer.close()
    cpu = time.process_time() - started
    lsock.close()
    return cpu / n * 1e3, reused


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=300)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    import uvloop

    server_ctx, client_ctx = _contexts()
    for _ in range(args.rounds):
        for resume in (False, True):
            cpu, reused = uvloop.run(_run(server_ctx, client_ctx, args.connections, resume))
            kind = "resumed" if resume else "full   "
            print(f"{kind} {cpu:.2f} ms CPU per connection (both ends), "
                  f"{reused}/{args.connections} resumed")


if __name__ == "__main__":
    main()
