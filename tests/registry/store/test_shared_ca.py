"""One CA across registry replicas on etcd: a proxy joined at one replica is everyone's peer."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from registry.ca.csr import generate_key
from tests.registry.server.support import Workload, call, client_ctx, csr_for, join
from tests.registry.store.etcd_support import EtcdCluster
from tests.registry.store.test_replicas import close_all, replicas

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


def _ctx(side: ssl._SSLMethod, w: Workload, bundle: str) -> ssl.SSLContext:
    """What a proxy's mTLS does: present its SVID, trust only the bundle it was given."""
    ctx = ssl.SSLContext(side)
    ctx.check_hostname = False  # SPIFFE peers are named by URI SAN, not by host name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(*w.files)
    ctx.load_verify_locations(cadata=bundle)
    return ctx


def mtls_handshake(server: Workload, server_bundle: str, client: Workload,
                   client_bundle: str) -> None:  # fmt: skip
    """A TLS 1.3 handshake on loopback in which each side verifies the other's SVID."""
    a, b = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with _ctx(ssl.PROTOCOL_TLS_SERVER, server, server_bundle).wrap_socket(
                    a, server_side=True) as s:  # fmt: skip
                s.sendall(s.recv(5))
        except (OSError, ssl.SSLError) as exc:
            errors.append(exc)

    t = threading.Thread(target=serve)
    t.start()
    try:
        a.settimeout(10)
        b.settimeout(10)
        with _ctx(ssl.PROTOCOL_TLS_CLIENT, client, client_bundle).wrap_socket(b) as c:
            c.sendall(b"hello")
            assert c.recv(5) == b"hello"
    finally:
        t.join(10)
    assert not errors, errors


def test_replicas_share_one_ca(tmp_path: Path, etcd1: EtcdCluster) -> None:
    meshes = replicas(tmp_path, 2)
    try:
        for m in meshes:
            m.start_registry("--store", etcd1.store)
        a, b = meshes
        wa = join(a, "frontend", tmp_path / "wa")
        wb = join(b, "orders", tmp_path / "wb")
        bundle_a = (a.home / "registry" / "ca" / "ca.crt").read_text()
        bundle_b = (b.home / "registry" / "ca" / "ca.crt").read_text()
        assert bundle_a == bundle_b, "each replica serves its own root"
        # The proxy joined at A renews at B, over mTLS that B verifies with its CA.
        code, body = call(b, "POST", "/v1/renew", {"csr": csr_for(generate_key())},
                          ctx=client_ctx(b, wa.files))  # fmt: skip
        assert code == 200, body
        assert body["spiffe_id"] == wa.spiffe_id and body["bundle"] == bundle_a
        # A proxy joined at B and one joined at A trust each other's SVIDs, both ways.
        mtls_handshake(wa, bundle_a, wb, bundle_b)
        mtls_handshake(wb, bundle_b, wa, bundle_a)
        # The CA key is not written under a replica's MESH_HOME that opened it from etcd.
        assert not (b.home / "registry" / "ca" / "ca.key").exists()
        # A replica without the seal key does not start, and says what to copy.
        (c,) = replicas(tmp_path / "c", 1)
        r = subprocess.run(c.registry_argv("--store", etcd1.store), env=c.env,
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        assert r.returncode == 1, r
        assert "seal.key" in r.stderr and "copy" in r.stderr, r.stderr
        assert not (c.home / "registry" / "ca" / "ca.crt").exists()
    finally:
        close_all(meshes)
