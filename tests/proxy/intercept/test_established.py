"""Installing interception leaves the namespace's established TCP connections alone.

Issue 18: after `intercept install` on the registry's host, the next push reached only the
local proxy; the remote proxies' streams went silent until their read timeout. Cause: a
namespace with no nat rules tracks no connections; once our rules are loaded, conntrack
picks the open connections up mid-stream (nf_conntrack_tcp_loose), and a picked-up
connection's first packet is NEW to the nat table: the registry's next write to a remote
proxy went to MESH_OUTPUT and was redirected to 15001, and the proxy's next packet to the
registry's port was captured inbound to 15006. Host A (meshed, the registry's side) serves
on 15012, excluded inbound as the registry's port is (meshctl/commands/intercept.py does it
by itself); host B connects before the install, and after it each side must still hear the
other.
"""

from __future__ import annotations

import subprocess

import pytest

from proxy.intercept import iptables
from proxy.intercept.rules import EXCLUDE_INBOUND_DEFAULT, InterceptConfig
from tests.proxy.intercept.support import Pair, python_in, started

pytestmark = pytest.mark.root

PORT = 15012  # the registry's API port

# A: accept one connection, then for each stdin line send it and print what comes back.
SERVER = """
import socket, sys
listener = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
conn, _ = listener.accept()
conn.settimeout(8)
reader = conn.makefile("rb")
for line in sys.stdin:
    conn.sendall(line.encode())
    try:
        back = reader.readline().decode().strip()
    except OSError as exc:
        back = f"lost ({exc})"
    print(back or "lost (closed)", flush=True)
"""

# B: connect, then echo every line back with a mark, until A closes.
CLIENT = """
import socket, sys
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
print("ready", flush=True)
reader = conn.makefile("rb")
while line := reader.readline():
    conn.sendall(b"echo " + line)
"""


def _exchange(server: subprocess.Popen[str], text: str) -> str:
    """Have A send `text` to B; what A read back (B echoes), or why nothing came."""
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(text + "\n")
    server.stdin.flush()
    return server.stdout.readline().strip()


def test_connections_open_before_the_install_keep_flowing(pair: Pair) -> None:
    server = python_in(pair.a.name, SERVER, args=[str(PORT)], stdin=subprocess.PIPE)
    client = None
    try:
        started(server, "server in A")
        client = python_in(pair.b.name, CLIENT, args=[str(pair.a.address.ip), str(PORT)])
        started(client, "client in B")
        assert _exchange(server, "before") == "echo before"
        iptables.install(InterceptConfig(proxy_uid=1337, proxy_gid=1337, exclude_inbound_ports=(
            *EXCLUDE_INBOUND_DEFAULT, PORT)), pair.a.name)
        # A's write (the registry's push) and B's answer (the ACK), after the install.
        assert _exchange(server, "after") == "echo after", (
            "the connection opened before `intercept install` stopped carrying data"
        )
    finally:
        for proc in (server, client):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
