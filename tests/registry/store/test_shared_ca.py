"""One CA across registry replicas on etcd: a proxy joined at one replica is everyone's peer."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from registry.ca.csr import generate_key
from registry.store import parse_store
from registry.store.etcd import EtcdClient
from registry.store.sealed_ca import SEAL_FILE, shared_authority
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
    # Before the thread starts: its wrap_socket takes `a` over (and closes it after).
    a.settimeout(10)
    b.settimeout(10)
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


async def test_replicas_starting_at_once_agree_on_one_ca(tmp_path: Path,
                                                         etcd1: EtcdCluster) -> None:
    """Both find no CA in etcd and make one; the one whose transaction loses gives its up."""
    seal_key = base64.b64encode(os.urandom(32))
    dirs = [tmp_path / f"r{i}" / "ca" for i in range(2)]
    for d in dirs:
        d.mkdir(parents=True, mode=0o700)
        (d / SEAL_FILE).write_bytes(seal_key)
        (d / SEAL_FILE).chmod(0o600)
    clients = [EtcdClient(parse_store(etcd1.store)) for _ in dirs]
    try:
        cas = await asyncio.gather(*(shared_authority(c, "/meshctl", d, "example.org")
                                     for c, d in zip(clients, dirs, strict=True)))  # fmt: skip
    finally:
        for c in clients:
            await c.close()
    assert cas[0].bundle_pem == cas[1].bundle_pem
    assert [(d / "ca.crt").read_bytes() for d in dirs] == [cas[0].bundle_pem] * 2
    assert sum((d / "ca.key").exists() for d in dirs) == 1  # the loser keeps no key on disk
