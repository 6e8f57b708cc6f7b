"""SO_ORIGINAL_DST on redirected and direct connections, IPv4, IPv6 and dual-stack."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator

import pytest

from proxy.intercept.origdst import original_dst
from tests.proxy.intercept.support import output_of, python_in


def test_a_direct_connection_was_not_redirected() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2])
        accepted, _ = listener.accept()
        with client, accepted, pytest.raises(OSError):
            original_dst(accepted)


def test_a_unix_socket_is_refused() -> None:
    left, right = socket.socketpair()
    with left, right, pytest.raises(OSError):
        original_dst(left)


# Inside the namespace: a listener on 15001 and, for each case, a client that dials
# port 8080, which the test's own REDIRECT rule (not ours) sends to 15001.
CASES = """
import json, socket
from proxy.intercept.origdst import original_dst
cases = [
    ("v4", socket.AF_INET, "127.0.0.1", "127.0.0.9"),
    ("v6", socket.AF_INET6, "::1", "::1"),
    ("dual-stack-v4", socket.AF_INET6, "::", "127.0.0.1"),
    ("direct", socket.AF_INET, "127.0.0.1", None),
]
result = {}
for label, family, bind, dst in cases:
    with socket.socket(family) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((bind, 15001))
        listener.listen()
        client = socket.create_connection((dst or bind, 8080 if dst else 15001), timeout=5)
        accepted, _ = listener.accept()
        try:
            result[label] = list(original_dst(accepted))
        except OSError as exc:
            result[label] = "OSError"
        accepted.close()
        client.close()
print(json.dumps(result))
"""


@pytest.fixture
def redirecting_netns(bare_netns: str) -> Iterator[str]:
    exec_in = ["ip", "netns", "exec", bare_netns]
    subprocess.run([*exec_in, "ip", "link", "set", "lo", "up"], check=True)
    for tool in ("iptables", "ip6tables"):
        rule = ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "8080",
                "-j", "REDIRECT", "--to-ports", "15001"]  # fmt: skip
        subprocess.run([*exec_in, tool, *rule], check=True)
    yield bare_netns


@pytest.mark.root
def test_original_destination_of_redirected_connections(redirecting_netns: str) -> None:
    result = json.loads(output_of(python_in(redirecting_netns, CASES)))
    assert result == {
        "v4": ["127.0.0.9", 8080],
        "v6": ["::1", 8080],
        "dual-stack-v4": ["127.0.0.1", 8080],
        "direct": "OSError",
    }
