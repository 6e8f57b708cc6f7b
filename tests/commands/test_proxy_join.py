"""How a proxy finds and trusts its registry, and comes back after a restart without a new
token: join strings (CA pin), `--registry HOST:PORT`, clear errors, the kept SVID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.example import CONFIG
from tests.integration.harness import Mesh, free_port, http_get, wait_until

# New modules are imported in the tests that use them, so that each test fails on its own
# (not the whole file at import) on a tree without them.


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    m = Mesh(tmp_path, CONFIG)
    try:
        yield m
    finally:
        m.close()


def _join_string(mesh: Mesh, service: str) -> Path:
    res = mesh.api("POST", "/v1/tokens", {"service": service})
    path = mesh.tmp / f"{service}-{free_port()}.join"
    path.write_text(res["join"] + "\n")
    return path


def _proxy(mesh: Mesh, home: Path, *args: str, admin: int | None = None) -> subprocess.Popen[str]:
    env = {**mesh.env, "MESH_HOME": str(home)}
    env.pop("MESH_REGISTRY", None)
    argv = [sys.executable, "-m", "meshctl", "proxy", "--inbound", f"127.0.0.1:{free_port()}",
            "--admin", f"127.0.0.1:{admin or free_port()}", "--metrics",
            f"127.0.0.1:{free_port()}", *args]  # fmt: skip
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


def _finish(p: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise AssertionError(f"proxy did not exit: {out}") from None
    return p.returncode, out


# -- a: --registry ----------------------------------------------------------------------


def test_registry_url_takes_host_port_and_urls() -> None:
    from proxy.control.bootstrap import registry_url

    assert registry_url("10.0.0.5:15012") == "https://10.0.0.5:15012"
    assert registry_url("registry.internal:15012") == "https://registry.internal:15012"
    assert registry_url("https://10.0.0.5:15012/") == "https://10.0.0.5:15012"
    assert registry_url("[fd00::5]:15012") == "https://[fd00::5]:15012"
    for bad in ("ftp://x:1", "10.0.0.5", "https://:1", "host:port"):
        with pytest.raises(ValueError, match="expected HOST:PORT"):
            registry_url(bad)


def test_a_bad_registry_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("mtok.0123456789abcdef." + "a" * 43)
    res = subprocess.run(
        [sys.executable, "-m", "meshctl", "proxy", "--service", "orders", "--registry",
         "ftp://10.0.0.5:15012", "--token-file", str(token)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "MESH_HOME": str(tmp_path)},
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "not a registry address" in res.stderr
    assert "Traceback" not in res.stderr


# -- b: the CA ---------------------------------------------------------------------------


def test_a_bare_token_without_the_ca_names_the_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("mtok.0123456789abcdef." + "a" * 43)
    res = subprocess.run(
        [sys.executable, "-m", "meshctl", "proxy", "--service", "orders", "--registry",
         "10.0.0.5:15012", "--token-file", str(token)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "MESH_HOME": str(tmp_path)},
    )  # fmt: skip
    assert res.returncode == 1
    assert f"no CA certificate at {tmp_path}/registry/ca/ca.crt" in res.stderr
    assert "meshctl token create" in res.stderr and "Traceback" not in res.stderr


def test_a_join_string_is_all_a_proxy_needs(mesh: Mesh, tmp_path: Path) -> None:
    """No --registry, no CA file: the join string carries the address and the CA's pin."""
    from registry.ca import joinstring

    mesh.start_registry()
    join = joinstring.parse(_join_string(mesh, "orders").read_text())
    assert f"https://127.0.0.1:{mesh.port}" in join.registry
    ca = (mesh.home / "registry/ca/ca.crt").read_text()
    assert join.ca_sha256 == joinstring.ca_pin(ca)
    home = tmp_path / "vm"  # another host: nothing of the registry's MESH_HOME
    admin = free_port()
    p = _proxy(mesh, home, "--service", "orders", "--token-file",
               str(_join_string(mesh, "orders")), admin=admin)  # fmt: skip
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200,
                   timeout=30, what="proxy ready with a join string")  # fmt: skip
        assert (home / "proxies/orders/registry-ca.crt").read_text() == ca
    finally:
        p.send_signal(signal.SIGTERM)
        _finish(p)


def test_a_registry_whose_ca_does_not_match_the_pin_is_refused(
    mesh: Mesh, tmp_path: Path
) -> None:
    from registry.ca import joinstring

    mesh.start_registry()
    real = joinstring.parse(_join_string(mesh, "orders").read_text())
    forged = joinstring.JoinString(real.token, real.registry, "0" * 64)
    path = tmp_path / "forged.join"
    path.write_text(forged.encode())
    code, out = _finish(_proxy(mesh, tmp_path / "vm", "--service", "orders", "--token-file",
                               str(path)))  # fmt: skip
    assert code == 1
    assert "does not match the pin" in out and "Traceback" not in out
    assert not (tmp_path / "vm/proxies/orders/registry-ca.crt").exists()
    # The token was not spent on a registry that was not trusted: the real string joins.
    path.write_text(real.encode())
    admin = free_port()
    p = _proxy(mesh, tmp_path / "vm", "--service", "orders", "--token-file", str(path),
               admin=admin)  # fmt: skip
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200,
                   timeout=30, what="proxy ready with the real join string")  # fmt: skip
    finally:
        p.send_signal(signal.SIGTERM)
        _finish(p)


# -- c: the advertised address ------------------------------------------------------------


def test_route_source_is_the_address_towards_the_registry() -> None:
    from proxy.control.bootstrap import route_source

    assert route_source("https://127.0.0.1:15012") == "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only asks the routing table
        except OSError:
            pytest.skip("no IPv4 route out of this host")
        want = s.getsockname()[0]
    assert route_source("https://192.0.2.1:15012") == want


# -- e: READY=1 ------------------------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_ready_to_the_notify_socket(tmp_path: Path, abstract: bool) -> None:
    from common.sdnotify import notify

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        name = f"@meshctl-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
        s.bind("\0" + name[1:] if abstract else name)
        assert notify("READY=1", {"NOTIFY_SOCKET": name}) is True
        s.settimeout(5)
        assert s.recv(100) == b"READY=1"
    assert notify("READY=1", {}) is False


# -- g: restarts -----------------------------------------------------------------------------


def test_a_restarted_proxy_reuses_its_svid_not_its_spent_token(mesh: Mesh, tmp_path: Path) -> None:
    mesh.start_registry()
    token = _join_string(mesh, "orders")
    home = tmp_path / "vm"
    admin = free_port()
    args = ("--service", "orders", "--token-file", str(token))
    logs = []
    for _ in range(2):  # the first start joins; the second finds the token spent
        p = _proxy(mesh, home, *args, admin=admin)
        try:
            wait_until(lambda p=p: p.poll() is None and
                       http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200,
                       timeout=30, what="proxy ready")  # fmt: skip
        finally:
            p.kill()  # a crash: no deregistration
            logs.append(_finish(p)[1])
    assert "joined as" in logs[0]
    assert "joined as" not in logs[1] and "renewed certificate" in logs[1], logs[1]
    key = home / "proxies/orders/tls/svid.key"
    assert key.stat().st_mode & 0o777 == 0o600
    proxies = [x for x in mesh.api("GET", "/v1/status")["proxies"] if x["service"] == "orders"]
    assert [x["proxy_id"] for x in proxies] == [f"orders-{socket.gethostname()}"]


def test_an_expired_kept_svid_and_a_spent_token_say_what_to_do(
    mesh: Mesh, tmp_path: Path
) -> None:
    mesh.start_registry()
    token = _join_string(mesh, "orders")
    home = tmp_path / "vm"
    args = ("--service", "orders", "--token-file", str(token))
    admin = free_port()
    p = _proxy(mesh, home, *args, admin=admin)
    wait_until(lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, timeout=30,
               what="proxy ready")  # fmt: skip
    p.kill()
    _finish(p)
    (home / "proxies/orders/tls/svid.crt").unlink()  # as good as expired: nothing to reuse
    code, out = _finish(_proxy(mesh, home, *args))
    assert code == 1
    assert "already used" in out and "create a new one" in out and "Traceback" not in out


# -- h: the registry's certificate -------------------------------------------------------


def _sans(mesh: Mesh) -> tuple[set[str], set[str]]:
    der = ssl.PEM_cert_to_DER_cert((mesh.home / "registry/server.crt").read_text())
    ext = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    ips = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return ips, set(ext.get_values_for_type(x509.DNSName))


def test_listen_on_every_address_certifies_every_address(mesh: Mesh) -> None:
    from pyroute2 import IPRoute

    def addresses() -> set[str]:
        with IPRoute() as ipr:
            return {str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(family=socket.AF_INET)}

    # Other tests add and remove bridges meanwhile: check those there all along.
    before = addresses()
    mesh.start_registry("--listen", "0.0.0.0", "--san", "registry.internal", "--san", "10.9.9.9")
    ips, names = _sans(mesh)
    want = before & addresses()
    assert want - {"127.0.0.1"}, "this host has only loopback: nothing to check"
    assert want <= ips, (want, ips)
    assert "10.9.9.9" in ips and "registry.internal" in names
    from registry.ca import joinstring

    join = joinstring.parse(_join_string(mesh, "orders").read_text())
    assert join.registry[0] == f"https://registry.internal:{mesh.port}"  # --san first
    assert join.registry[-1] == f"https://127.0.0.1:{mesh.port}"  # loopback last


# -- i: stopping --------------------------------------------------------------------------


def _open_stream(mesh: Mesh) -> ssl.SSLSocket:
    """A config stream held open, as a connected proxy's is."""
    ctx = ssl.create_default_context(cafile=str(mesh.home / "registry/ca/ca.crt"))
    token = (mesh.home / "registry/operator.token").read_text().strip()
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", mesh.port), timeout=10),
                           server_hostname="127.0.0.1")  # fmt: skip
    sock.sendall(f"GET /v1/stream?proxy_id=held HTTP/1.1\r\nHost: r\r\n"
                 f"Authorization: Bearer {token}\r\n\r\n".encode())  # fmt: skip
    assert sock.recv(4096).startswith(b"HTTP/1.1 200"), "stream opened"
    return sock


def test_sigterm_stops_the_registry_with_streams_open(mesh: Mesh) -> None:
    reg = mesh.start_registry()
    streams = [_open_stream(mesh) for _ in range(3)]
    try:
        assert reg.p is not None
        reg.p.send_signal(signal.SIGTERM)
        try:
            code = reg.p.wait(10)  # generous: it is ~1 s; systemd's TimeoutStopSec is 10
        except subprocess.TimeoutExpired:
            raise AssertionError("the registry did not stop within 10 s of SIGTERM") from None
        assert code == 0
        streams[0].settimeout(5)  # a stream left open would time out here
        while streams[0].recv(4096):  # read to the end: the stream was closed
            pass
    finally:
        for s in streams:
            s.close()


def test_a_kept_svid_from_another_ca_gives_way_to_a_new_token(mesh: Mesh, tmp_path: Path) -> None:
    """The mesh was made again (a new CA): the kept SVID is refused, the new token joins."""
    mesh.start_registry()
    home = tmp_path / "vm"
    admin = free_port()
    args = ("--service", "orders", "--token-file")
    p = _proxy(mesh, home, *args, str(_join_string(mesh, "orders")), admin=admin)
    wait_until(lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, timeout=30,
               what="proxy ready")  # fmt: skip
    p.kill()
    _finish(p)
    assert mesh.registry is not None
    mesh.registry.stop()
    shutil.rmtree(mesh.home / "registry")  # a new mesh: another CA
    mesh.start_registry()
    p = _proxy(mesh, home, *args, str(_join_string(mesh, "orders")), admin=admin)
    try:
        wait_until(lambda: p.poll() is None and
                   http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200,
                   timeout=30, what="proxy ready in the new mesh")  # fmt: skip
    except AssertionError:
        p.kill()
        raise AssertionError(_finish(p)[1][-3000:]) from None
    p.send_signal(signal.SIGTERM)
    out = _finish(p)[1]
    assert "was refused" in out and "joined as" in out, out
