"""Hostile client certificates at an inbound mTLS listener: each refused, each counted.

Already covered in tests/integration/test_mtls.py: plaintext in STRICT, no client
certificate, a certificate from a foreign CA, an expired one. Here the certificates are
signed by the mesh's OWN CA key (MESH_HOME/registry/ca/ca.key), so OpenSSL's chain check
passes and what refuses them is the proxy's own check of the SVID (proxy/identity.py
peer_identity, registry/ca/csr.py spiffe_id_of, proxy/inbound/stack.py): two URI SANs,
CA:true, a SAN with CR/LF, another trust domain, the trust domain's own ID as a leaf, no
SAN, a DNS SAN only; plus not-yet-valid and a serverAuth-only EKU, which OpenSSL refuses.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.example import copy_config
from tests.integration.harness import Mesh, http_get, wait_until

pytestmark = pytest.mark.slow

GOOD = "spiffe://shop.local/ns/default/sa/frontend"


@dataclass(frozen=True, slots=True)
class Leaf:
    id: str
    what: str
    sans: tuple[x509.GeneralName, ...] = (x509.UniformResourceIdentifier(GOOD),)
    ca: bool = False
    not_before_h: float = -0.1
    eku: tuple[x509.ObjectIdentifier, ...] = (
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    xfail: str = ""


def _uri(u: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(u)


BAD = [
    Leaf("two_uri_sans", "two URI SANs (orders and frontend)",
         sans=(_uri("spiffe://shop.local/ns/default/sa/orders"), _uri(GOOD))),
    Leaf("ca_true", "a leaf with BasicConstraints CA:true", ca=True),
    Leaf("san_crlf", "a URI SAN with CR/LF inside",
         sans=(_uri("spiffe://shop.local/ns/default/sa/front\r\nx-evil: 1"),)),
    Leaf("other_trust_domain", "spiffe://evil.local/... signed by the mesh CA",
         sans=(_uri("spiffe://evil.local/ns/default/sa/frontend"),)),
    Leaf("trust_domain_id", "the trust domain's own ID spiffe://shop.local as a leaf",
         sans=(_uri("spiffe://shop.local"),)),
    Leaf("no_san", "no subjectAltName at all", sans=()),
    Leaf("dns_san_only", "a DNS SAN and no URI SAN", sans=(x509.DNSName("frontend"),)),
    Leaf("not_a_spiffe_uri", "a URI SAN https://shop.local/frontend",
         sans=(_uri("https://shop.local/ns/default/sa/frontend"),)),
    Leaf("not_yet_valid", "notBefore one hour ahead", not_before_h=1.0),
    Leaf("server_auth_only", "extendedKeyUsage serverAuth only",
         eku=(ExtendedKeyUsageOID.SERVER_AUTH,)),
]


def _ca(mesh: Mesh) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    d = mesh.home / "registry" / "ca"
    key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key, x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())


def build(mesh: Mesh, leaf: Leaf, out: Path) -> tuple[Path, Path]:
    """`leaf`'s certificate signed by the mesh CA, and its key, as files in `out`."""
    ca_key, ca = _ca(mesh)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shop.local")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(hours=leaf.not_before_h))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=leaf.ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False,
                          key_agreement=leaf.ca, key_cert_sign=leaf.ca, crl_sign=False,
                          encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(leaf.eku)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if leaf.sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(leaf.sans)), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    cert_p, key_p = out / f"{leaf.id}.crt", out / f"{leaf.id}.key"
    cert_p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_p.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return cert_p, key_p


def tls_get(port: int, cert: Path, key: Path, bundle: bytes) -> bytes:
    """GET /echo over mTLS with `cert`; what came back (b"" when refused)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=bundle.decode())
    ctx.load_cert_chain(cert, key)
    out = b""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="p8080.orders.default.meshctl") as s,
        ):
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
            while data := s.recv(65536):
                out += data
    except (ssl.SSLError, OSError):
        pass
    return out


class Env:
    def __init__(self, mesh: Mesh, px: dict[str, Any], tmp: Path) -> None:
        self.mesh, self.px, self.tmp = mesh, px, tmp
        self.bundle = (mesh.home / "registry" / "ca" / "ca.crt").read_bytes()

    def refusals(self) -> float:
        s = json.loads(http_get(f"http://127.0.0.1:{self.px['admin']}/stats")[1])
        return float(s.get("meshctl_proxy_inbound_tls_failures_total", 0)
                     + s.get("meshctl_proxy_inbound_identity_refused_total", 0))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("tls")
    src = tmp / "src"
    copy_config(src)
    mesh = Mesh(tmp, src)
    try:
        mesh.start_registry()
        _, app = mesh.app("orders", "v1")
        px = mesh.proxy("orders", "v1", app_port=app)
        yield Env(mesh, px, tmp)
    finally:
        mesh.close()


def test_a_good_certificate_from_the_mesh_ca_is_served(env: Env) -> None:
    cert, key = build(env.mesh, Leaf("good", "control"), env.tmp)
    answer = tls_get(int(env.px["inbound"]), cert, key, env.bundle)
    assert answer.startswith(b"HTTP/1.1 200")
    assert f"URI={GOOD}".encode() in answer


@pytest.mark.parametrize(
    "leaf",
    [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)]
                  if c.xfail else []) for c in BAD],
)
def test_hostile_certificate_is_refused_and_counted(env: Env, leaf: Leaf) -> None:
    """EXPECTED: no HTTP answer at all (the connection is closed), nothing reaches the app,
    and the refusal is counted (tls_failures or identity_refused)."""
    cert, key = build(env.mesh, leaf, env.tmp)
    before = env.refusals()
    answer = tls_get(int(env.px["inbound"]), cert, key, env.bundle)
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert answer == b""
    wait_until(lambda: env.refusals() >= before + 1, timeout=10, what="the refusal counted")
