"""Builders for the CA tests: hostile CSRs, hand-made certificates, and openssl's view."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from registry.ca.authority import KEY_FILE

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

PrivateKey = ec.EllipticCurvePrivateKey


def openssl_text(cert_pem: bytes) -> str:
    """`openssl x509 -text -noout` of a PEM certificate."""
    if not Path(OPENSSL).exists():
        pytest.skip("openssl is not installed")
    out = subprocess.run(
        [OPENSSL, "x509", "-text", "-noout"], input=cert_pem, capture_output=True, check=True
    )
    return out.stdout.decode()


def openssl_verify(
    ca_file: Path, cert_pem: bytes, purpose: str
) -> subprocess.CompletedProcess[str]:
    """`openssl verify -CAfile ca_file -purpose <purpose>` of a PEM certificate."""
    if not Path(OPENSSL).exists():
        pytest.skip("openssl is not installed")
    leaf = ca_file.parent / "leaf-under-test.pem"
    leaf.write_bytes(cert_pem)
    return subprocess.run(
        [OPENSSL, "verify", "-CAfile", str(ca_file), "-purpose", purpose, str(leaf)],
        capture_output=True,
        text=True,
    )


def ca_key(state_dir: Path) -> PrivateKey:
    """The CA's private key, read from its file (to forge certs the CA itself never made)."""
    key = serialization.load_pem_private_key((state_dir / KEY_FILE).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def hostile_csr(key: PrivateKey, *, asks_for: str, extra_dns: str, extra_uri: str) -> bytes:
    """A CSR that asks for everything it must not get: CA:true, keyCertSign, more SANs."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evil"),
                ]
            )
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=True,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(asks_for),
                    x509.UniformResourceIdentifier(extra_uri),
                    x509.DNSName(extra_dns),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def make_cert(
    signer: PrivateKey,
    issuer: x509.Name,
    *,
    uris: list[str],
    not_before: datetime,
    not_after: datetime,
    ca: bool = False,
    key_cert_sign: bool = False,
    basic_constraints: bool = True,
) -> bytes:
    """A certificate built by hand, signed by `signer`, for verify_svid's refusal tests."""
    subject_key = ec.generate_private_key(ec.SECP256R1())
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test")]))
        .issuer_name(issuer)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if basic_constraints:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if uris:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    return b.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def window(now: datetime, before_s: float, after_s: float) -> tuple[datetime, datetime]:
    """(now - before_s, now + after_s), for make_cert's validity."""
    return now - timedelta(seconds=before_s), now + timedelta(seconds=after_s)
