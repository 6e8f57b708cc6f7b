"""Security defaults after a real `meshctl registry` start and a real proxy join.

Every key and state file 0600 and every state directory 0700 (MESH_HOME/registry, its ca/,
ca.key, operator.token, tokens.json, catalog.json, state.json, snapshot.json; a proxy's
tls/svid.key); the registry API and monitor and the proxy's admin listener bound to
127.0.0.1 by default (read from /proc/net/tcp{,6}, not from the config). The other promises
of SECURITY.md are tested where the code lives (see the table there).
"""

from __future__ import annotations

import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.support import config_dir
from tests.integration.harness import Mesh, Proc, free_port, http_get, wait_until

pytestmark = pytest.mark.slow

# Certificates, and the discovery files saying where a running registry or proxy listens
# (read by the CLI as any user; no secret in them, checked below): world-readable is fine.
PUBLIC = {"ca.crt", "svid.crt", "bundle.crt", "server.crt", "endpoint.json", "admin.json"}
SECRET_WORDS = ("token", "key", "BEGIN")


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    m = Mesh(tmp_path, config_dir(tmp_path))
    m.start_registry()
    yield m
    m.close()


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def listening(port: int) -> set[str]:
    """The local addresses a socket LISTENs on at `port`, from /proc/net/tcp and tcp6."""
    out = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            addr, state = fields[1], fields[3]
            host, _, p = addr.partition(":")
            if state != "0A" or int(p, 16) != port:
                continue
            raw = bytes.fromhex(host)
            if v6:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                out.add(socket.inet_ntop(socket.AF_INET6, words))
            else:
                out.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
    return out


def test_state_files_are_0600_and_directories_0700(mesh: Mesh) -> None:
    _, app = mesh.app("backend", "v1")
    px = mesh.proxy("backend", "v1", app_port=app)
    reg = mesh.home / "registry"
    expected_files = ["ca/ca.key", "operator.token", "tokens.json", "state.json"]
    for name in expected_files:
        assert (reg / name).exists(), name
    proxy_home = mesh.home / "proxies" / px["id"]
    key = proxy_home / "tls" / "svid.key"
    assert key.exists()
    bad = []
    for root in (reg, proxy_home):
        for p in [root, *root.rglob("*")]:
            if p == proxy_home:
                continue  # test_proxy_home_directory_is_0700 below
            if p.is_symlink():
                continue
            # An empty *.lock (flock target, no content) needs no secrecy.
            public = p.name in PUBLIC or (p.suffix == ".lock" and p.stat().st_size == 0)
            want = 0o700 if p.is_dir() else (None if public else 0o600)
            if want is not None and _mode(p) != want:
                bad.append(f"{p.relative_to(mesh.home)} is {oct(_mode(p))}, expected {oct(want)}")
            if p.name in PUBLIC and _mode(p) & 0o022:
                bad.append(f"{p.relative_to(mesh.home)} is writable by others: {oct(_mode(p))}")
    assert not bad, bad
    for name in ("endpoint.json",):
        text = (reg / name).read_text()
        assert not any(w in text for w in SECRET_WORDS), text
    text = (proxy_home / "admin.json").read_text()
    assert not any(w in text for w in SECRET_WORDS), text


def test_proxy_home_directory_is_0700(mesh: Mesh) -> None:
    _, app = mesh.app("backend", "v1")
    px = mesh.proxy("backend", "v1", app_port=app)
    proxy_home = mesh.home / "proxies" / px["id"]
    assert _mode(proxy_home / "tls") == 0o700 and _mode(proxy_home / "tls" / "svid.key") == 0o600
    assert _mode(proxy_home) == 0o700, oct(_mode(proxy_home))


def test_registry_api_and_monitor_bind_localhost_by_default(mesh: Mesh) -> None:
    # The harness starts the registry without --listen: the defaults are in force.
    assert listening(mesh.port) == {"127.0.0.1"}
    assert listening(mesh.monitor) == {"127.0.0.1"}


def test_proxy_admin_binds_localhost_by_default(mesh: Mesh, tmp_path: Path) -> None:
    """A proxy started without --admin: its admin listener (default 127.0.0.1:15000)."""
    if listening(15000):
        pytest.skip("port 15000 is taken on this host; the default cannot be observed")
    _, app = mesh.app("backend", "v1")
    inbound, metrics = free_port(), free_port()
    argv = [sys.executable, "-m", "meshctl", "proxy", "--service", "backend",
            "--registry", mesh.url, "--token-file", str(mesh.token("backend")),
            "--inbound", f"127.0.0.1:{inbound}", "--metrics", f"127.0.0.1:{metrics}",
            "--app", f"8080=127.0.0.1:{app}", "--proxy-id", "default-admin"]
    p = Proc(argv, mesh.env, tmp_path / "proxy-default-admin.log").start()
    mesh.procs.append(p)
    wait_until(lambda: http_get("http://127.0.0.1:15000/ready")[0] == 200, timeout=30,
               what="the proxy's default admin port")
    assert listening(15000) == {"127.0.0.1"}
