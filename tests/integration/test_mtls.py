"""mTLS between proxies: who may connect to an inbound listener, and PeerAuthentication modes."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from registry.ca import CertificateAuthority, SpiffeId
from registry.ca.csr import build_csr, generate_key, key_pem
from tests.example import CONFIG
from tests.integration.harness import Mesh, http_get, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    m = Mesh(tmp_path, CONFIG)
    yield m
    m.close()


def _orders(mesh: Mesh) -> dict[str, object]:
    _, app = mesh.app("orders", "v1")
    return mesh.proxy("orders", "v1", app_port=app)


def _app_log(mesh: Mesh, service: str) -> str:
    """What the service's apps logged (each request's line among it)."""
    return "".join(p.read_text() for p in sorted(mesh.tmp.glob(f"app-{service}-*.log")))


def _plain_get(port: int) -> bytes:
    """A plaintext HTTP request straight at an inbound mTLS port; returns what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
        chunks = []
        try:
            while data := s.recv(65536):
                chunks.append(data)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def _tls_get(port: int, cert: Path | None, key: Path | None, bundle: bytes) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=bundle.decode())
    if cert and key:
        ctx.load_cert_chain(cert, key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="p8080.orders.default.meshctl") as s,
    ):
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
        out = b""
        while data := s.recv(65536):
            out += data
        return out


def _stats(px: dict[str, object]) -> dict[str, float]:
    return json.loads(http_get(f"http://127.0.0.1:{px['admin']}/stats")[1])


def _refusals(px: dict[str, object]) -> float:
    """Inbound connections refused before any request: plaintext at STRICT, failed handshakes."""
    stats = _stats(px)
    return (stats.get("meshctl_proxy_inbound_plaintext_refused_total", 0)
            + stats.get("meshctl_proxy_inbound_tls_failures_total", 0))  # fmt: skip


def test_strict_refuses_plaintext(mesh: Mesh) -> None:
    mesh.start_registry()
    px = _orders(mesh)
    before = _refusals(px)
    # Refused means: no byte of an answer, the connection counted as refused (exactly this
    # one), and the app never saw the request.
    assert _plain_get(int(px["inbound"])) == b""  # type: ignore[call-overload]
    wait_until(lambda: _refusals(px) > before, what="refusal counted")
    assert _refusals(px) == before + 1
    assert "/echo" not in _app_log(mesh, "orders")


def test_permissive_accepts_plaintext_and_counts_it(mesh: Mesh) -> None:
    (mesh.config / "peer.yaml").write_text(
        textwrap.dedent("""\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: default}
        spec: {mtls: {mode: PERMISSIVE}}
        """)
    )
    (mesh.config / "peerauthentication.yaml").unlink(missing_ok=True)
    for f in mesh.config.glob("*.yaml"):
        if "PeerAuthentication" in f.read_text() and f.name != "peer.yaml":
            f.unlink()
    mesh.start_registry()
    px = _orders(mesh)
    answer = _plain_get(int(px["inbound"]))  # type: ignore[call-overload]
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"x-forwarded-client-cert" not in answer.lower()  # no identity over plaintext
    assert _stats(px)["meshctl_proxy_inbound_plaintext_total"] >= 1


def _foreign_cert(tmp: Path, identity: str) -> tuple[Path, Path]:
    """A certificate with the right SPIFFE ID from a CA the mesh does not trust."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shop.local")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_p, key_p = tmp / "foreign.crt", tmp / "foreign.key"
    cert_p.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_p.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_p, key_p


def _mesh_cert(mesh: Mesh, tmp: Path, *, expired: bool) -> tuple[Path, Path]:
    """A certificate signed by the mesh's own CA for frontend; expired when asked."""
    ca = CertificateAuthority.load_or_create(mesh.home / "registry" / "ca", "shop.local")
    ident = SpiffeId.for_service("shop.local", "default", "frontend")
    key = generate_key()
    now = datetime.datetime.now(datetime.UTC) - (
        datetime.timedelta(days=2) if expired else datetime.timedelta(0)
    )
    cert = ca.sign_csr(build_csr(key, ident), ident, 3600, now=now)
    cert_p, key_p = tmp / f"mesh-{expired}.crt", tmp / f"mesh-{expired}.key"
    cert_p.write_bytes(cert)
    key_p.write_bytes(key_pem(key))
    return cert_p, key_p


def test_inbound_refuses_foreign_expired_and_missing_certificates(
    mesh: Mesh, tmp_path: Path
) -> None:
    mesh.start_registry()
    px = _orders(mesh)
    port = int(px["inbound"])  # type: ignore[call-overload]
    bundle = (mesh.home / "registry" / "ca" / "ca.crt").read_bytes()
    good_cert, good_key = _mesh_cert(mesh, tmp_path, expired=False)
    ok = _tls_get(port, good_cert, good_key, bundle)
    assert ok.startswith(b"HTTP/1.1 200")
    assert b"URI=spiffe://shop.local/ns/default/sa/frontend" in ok
    failures = "meshctl_proxy_inbound_tls_failures_total"
    before = _stats(px).get(failures, 0)
    for cert, key in (
        _foreign_cert(tmp_path, "spiffe://shop.local/ns/default/sa/frontend"),
        _mesh_cert(mesh, tmp_path, expired=True),
        (None, None),
    ):
        try:
            answer = _tls_get(port, cert, key, bundle)
        except (ssl.SSLError, ConnectionError):
            answer = b""
        assert answer == b"", (cert, answer[:200])  # refused: no answer at all, not a 4xx/5xx
    # Each of the three refused in the handshake, and counted: exactly three, no more.
    wait_until(lambda: _stats(px).get(failures, 0) >= before + 3, what="TLS refusals counted")
    assert _stats(px).get(failures, 0) == before + 3


def test_port_level_mtls_overrides_the_workload_mode(mesh: Mesh) -> None:
    """portLevelMtls PERMISSIVE on 8080 under a STRICT workload policy: plaintext to 8080
    is served (explicit mode: the inbound port's plaintext goes to the first port)."""
    (mesh.config / "peer-port.yaml").write_text(textwrap.dedent("""\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: orders-port}
        spec:
          selector: {matchLabels: {app: orders}}
          mtls: {mode: STRICT}
          portLevelMtls:
            8080: {mode: PERMISSIVE}
        """))
    mesh.start_registry()
    px = _orders(mesh)
    answer = _plain_get(int(px["inbound"]))  # type: ignore[call-overload]
    assert answer.startswith(b"HTTP/1.1 200")
