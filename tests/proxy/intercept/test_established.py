"""Installing interception leaves the namespace's established TCP connections alone.

Issue 18: after `intercept install` the next push reached a remote proxy late, its stream
reset or silent. Cause: a namespace with no nat rules tracks no connections; once ours are
loaded, conntrack picks the open connections up mid-stream (nf_conntrack_tcp_loose), and
whichever packet of such a connection comes first is NEW to the nat table. Outbound it went
to MESH_OUTPUT and was redirected to 15001; inbound it went to MESH_INBOUND and, on a
captured port, to 15006, whose listener answers a segment it has no connection for with a
RST. Both happen: on the registry's host (its streams to remote proxies, accepted before
the install), and on a VM, whose proxy opens its stream before the app's ExecStartPre
installs the rules (capture-all: the registry's next ping, to the proxy's ephemeral port,
went to 15006).

A serves, B connects, before the install; then either side is meshed, and after that
either side writes first: the first packet conntrack sees is then inbound on one side and
outbound on the other. Every port is captured (as on a VM), none excluded but the defaults;
a connection opened after the install is captured (nothing listens on 15001/15006 here).
"""

from __future__ import annotations

import subprocess

import pytest

from proxy.intercept import iptables
from proxy.intercept.rules import InterceptConfig
from tests.proxy.intercept.support import Pair, python_in, started

pytestmark = pytest.mark.root

PORT = 15012  # the registry's API port; captured here (no exclusion) like any other

# One end of a TCP connection driven from stdin: `send X` writes a line, `read` prints the
# line that came (or why none did). argv: "serve" PORT, or "connect" PORT ADDRESS.
PEER = """
import socket, sys
if sys.argv[1] == "serve":
    listener = socket.create_server(("0.0.0.0", int(sys.argv[2])))
    print("ready", flush=True)
    conn, _ = listener.accept()
else:
    conn = socket.create_connection((sys.argv[3], int(sys.argv[2])), timeout=10)
    print("ready", flush=True)
conn.settimeout(8)
reader = conn.makefile("rb")
for line in sys.stdin:
    try:
        if line.startswith("send "):
            conn.sendall(line[5:].encode())
            print("sent", flush=True)
        else:
            print("got " + (reader.readline().decode().strip() or "nothing (closed)"), flush=True)
    except OSError as exc:
        print(f"lost ({exc})", flush=True)
"""


def _say(peer: subprocess.Popen[str], command: str) -> str:
    assert peer.stdin is not None and peer.stdout is not None
    peer.stdin.write(command + "\n")
    peer.stdin.flush()
    return peer.stdout.readline().strip()


# B opens a new connection to A's port: "connected", or why not.
DIAL = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    print("connected")
except OSError as exc:
    print(f"refused ({exc})")
"""


def _line(sender: subprocess.Popen[str], receiver: subprocess.Popen[str], text: str) -> str:
    """`sender` writes `text`; what `receiver` read."""
    assert _say(sender, f"send {text}") == "sent"
    return _say(receiver, "read")


def _open_before_the_install_keeps_flowing(
    pair: Pair, meshed: str, first: str, cfg: InterceptConfig, port: int = PORT
) -> None:
    server = python_in(pair.a.name, PEER, args=["serve", str(port)], stdin=subprocess.PIPE)
    client = None
    try:
        started(server, "server in A")
        client = python_in(pair.b.name, PEER, args=["connect", str(port), str(pair.a.address.ip)],
                           stdin=subprocess.PIPE)  # fmt: skip
        started(client, "client in B")
        assert _line(server, client, "before") == "got before"
        iptables.install(cfg, (pair.a if meshed == "server" else pair.b).name)
        order = [(server, client), (client, server)]
        for sender, receiver in order if first == "server" else order[::-1]:
            got = _line(sender, receiver, "after")
            assert got == "got after", (
                f"the connection opened before `intercept install` in the {meshed}'s "
                f"namespace stopped carrying data ({'server' if sender is server else 'client'}"
                f" wrote first after the install): {got}"
            )
        dial = python_in(pair.b.name, DIAL, args=[str(pair.a.address.ip), str(port)])
        out, err = dial.communicate(timeout=30)
        assert out.startswith("refused"), f"a connection opened after the install: {out}{err}"
    finally:
        for proc in (server, client):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)


@pytest.mark.parametrize("first", ["server", "client"])
@pytest.mark.parametrize("meshed", ["server", "client"])
def test_connections_open_before_the_install_keep_flowing(
    pair: Pair, meshed: str, first: str
) -> None:
    _open_before_the_install_keeps_flowing(
        pair, meshed, first, InterceptConfig(proxy_uid=1337, proxy_gid=1337)
    )


def test_a_tcp_dns_connection_open_before_dns_capture_keeps_flowing(pair: Pair) -> None:
    """DNS capture jumps to MESH_DNS before MESH_OUTPUT: it keeps open connections too."""
    cfg = InterceptConfig(proxy_uid=1337, proxy_gid=1337, dns_port=15053)
    _open_before_the_install_keeps_flowing(pair, "client", "client", cfg, port=53)
