"""CertificateAuthority: its files, its root, and the SVID template it applies to any CSR."""

from __future__ import annotations

import os
import re
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from registry.ca.authority import (
    CERT_FILE,
    CLOCK_SKEW_S,
    KEY_FILE,
    CaError,
    CertificateAuthority,
    CsrError,
)
from registry.ca.csr import build_csr, generate_key
from registry.ca.spiffe import SpiffeId
from tests.registry.ca.builders import hostile_csr, openssl_text, openssl_verify
from tests.registry.ca.conftest import TD


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _sign(ca: CertificateAuthority, identity: SpiffeId, **kw: object) -> x509.Certificate:
    pem = ca.sign_csr(build_csr(generate_key(), identity), identity, **kw)  # type: ignore[arg-type]
    return x509.load_pem_x509_certificate(pem)


# -- files and root --------------------------------------------------------------------


def test_files_and_modes(ca: CertificateAuthority, state_dir: Path) -> None:
    assert _mode(state_dir) == 0o700
    assert _mode(state_dir / KEY_FILE) == 0o600
    assert (state_dir / CERT_FILE).read_bytes() == ca.bundle_pem
    assert b"PRIVATE KEY" not in ca.bundle_pem
    assert "_key" not in repr(ca)


def test_reload_keeps_the_same_root(ca: CertificateAuthority, state_dir: Path) -> None:
    again = CertificateAuthority.load_or_create(state_dir, TD)
    assert again.bundle_pem == ca.bundle_pem
    # A leaf signed by the reloaded CA verifies against the first one.
    identity = SpiffeId.for_service(TD, "default", "orders")
    assert ca.verify_svid(_sign(again, identity)) == identity


def test_group_readable_key_is_refused(ca: CertificateAuthority, state_dir: Path) -> None:
    key = state_dir / KEY_FILE
    os.chmod(key, 0o640)
    with pytest.raises(CaError, match=r"mode 0640 lets other users read the CA key.*chmod 600"):
        CertificateAuthority.load_or_create(state_dir, TD)
    os.chmod(key, 0o400)  # stricter than 0600 is fine
    assert CertificateAuthority.load_or_create(state_dir, TD).bundle_pem == ca.bundle_pem


def test_other_trust_domain_in_same_dir_is_refused(
    ca: CertificateAuthority, state_dir: Path
) -> None:
    with pytest.raises(CaError, match=re.escape("trust domain 'shop.local', not 'other.local'")):
        CertificateAuthority.load_or_create(state_dir, "other.local")


def test_cert_without_key_is_refused(ca: CertificateAuthority, state_dir: Path) -> None:
    (state_dir / KEY_FILE).unlink()
    with pytest.raises(CaError, match="restore the key"):
        CertificateAuthority.load_or_create(state_dir, TD)


def test_key_without_cert_is_repaired_from_the_same_key(
    ca: CertificateAuthority, state_dir: Path
) -> None:
    (state_dir / CERT_FILE).unlink()
    again = CertificateAuthority.load_or_create(state_dir, TD)
    assert again.root.public_key() == ca.root.public_key()
    identity = SpiffeId.for_service(TD, "default", "orders")
    assert again.verify_svid(_sign(ca, identity)) == identity


def test_mismatched_cert_and_key_is_refused(tmp_path: Path, state_dir: Path) -> None:
    CertificateAuthority.load_or_create(state_dir, TD)
    other = CertificateAuthority.load_or_create(tmp_path / "other", TD)
    (state_dir / CERT_FILE).write_bytes(other.bundle_pem)
    with pytest.raises(CaError, match="does not belong to the key"):
        CertificateAuthority.load_or_create(state_dir, TD)


def test_bad_trust_domain_and_ttls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lowercase"):
        CertificateAuthority.load_or_create(tmp_path, "Shop.Local")
    with pytest.raises(ValueError, match="default_ttl_s"):
        CertificateAuthority.load_or_create(tmp_path, TD, default_ttl_s=10, max_ttl_s=5)


def test_root_is_a_signing_svid(ca: CertificateAuthority, now: datetime) -> None:
    root = ca.root
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    san = root.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TD}"]
    assert root.not_valid_after_utc - now == timedelta(days=3650)
    text = openssl_text(ca.bundle_pem)
    assert "CA:TRUE, pathlen:0" in text
    assert "Certificate Sign, CRL Sign" in text
    assert f"URI:spiffe://{TD}\n" in text


# -- the leaf template -----------------------------------------------------------------


def test_leaf_follows_x509_svid(ca: CertificateAuthority, orders: SpiffeId, now: datetime) -> None:
    cert = _sign(ca, orders, ttl_s=3600, now=now)
    ext = cert.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert not (ku.value.key_cert_sign or ku.value.crl_sign)
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(str(orders))]
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = ca.root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TD)])
    assert cert.issuer == ca.root.subject
    assert cert.not_valid_before_utc == now - timedelta(seconds=CLOCK_SKEW_S)
    assert cert.not_valid_after_utc == now + timedelta(hours=1)
    assert 0 < cert.serial_number < 2**127


def test_leaf_as_openssl_sees_it(ca: CertificateAuthority, orders: SpiffeId) -> None:
    pem = ca.sign_csr(build_csr(generate_key(), orders), orders)
    text = openssl_text(pem)
    assert "CA:FALSE" in text
    assert "X509v3 Key Usage: critical\n                Digital Signature\n" in text
    assert "Certificate Sign" not in text and "CRL Sign" not in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert text.count("URI:") == 1
    assert f"URI:{orders}\n" in text
    assert "DNS:" not in text


def test_openssl_accepts_the_chain_for_server_and_client(
    ca: CertificateAuthority, orders: SpiffeId, state_dir: Path, tmp_path: Path
) -> None:
    pem = ca.sign_csr(build_csr(generate_key(), orders), orders)
    work = tmp_path / "verify"
    work.mkdir()
    (work / "ca.crt").write_bytes(ca.bundle_pem)
    for purpose in ("sslserver", "sslclient"):
        out = openssl_verify(work / "ca.crt", pem, purpose)
        assert out.returncode == 0, out.stdout + out.stderr


def test_hostile_csr_gets_only_the_template(ca: CertificateAuthority, orders: SpiffeId) -> None:
    csr = hostile_csr(
        generate_key(),
        asks_for=f"spiffe://{TD}/ns/kube-system/sa/admin",
        extra_dns="registry.internal",
        extra_uri="spiffe://evil.example/root",
    )
    pem = ca.sign_csr(csr, orders, ttl_s=365 * 86400)
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(str(orders))]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TD)])
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == timedelta(hours=72, seconds=CLOCK_SKEW_S)  # capped at max_ttl_s
    text = openssl_text(pem)
    assert "CA:FALSE" in text and "Certificate Sign" not in text
    assert "admin" not in text and "evil" not in text and "DNS:" not in text
    assert ca.verify_svid(pem) == orders


def test_default_ttl_is_24h_and_max_is_configurable(
    state_dir: Path, orders: SpiffeId, now: datetime
) -> None:
    ca = CertificateAuthority.load_or_create(state_dir, TD)
    cert = _sign(ca, orders, now=now)
    assert cert.not_valid_after_utc == now + timedelta(hours=24)
    short = CertificateAuthority.load_or_create(state_dir, TD, max_ttl_s=3600, default_ttl_s=600)
    assert _sign(short, orders, now=now).not_valid_after_utc == now + timedelta(minutes=10)
    assert _sign(short, orders, ttl_s=7200, now=now).not_valid_after_utc == now + timedelta(hours=1)


def test_serials_are_random(ca: CertificateAuthority, orders: SpiffeId) -> None:
    serials = {_sign(ca, orders).serial_number for _ in range(20)}
    assert len(serials) == 20
    assert max(s.bit_length() for s in serials) > 100


# -- refusals --------------------------------------------------------------------------


def test_bad_csr_signature_is_refused(ca: CertificateAuthority, orders: SpiffeId) -> None:
    csr = x509.load_pem_x509_csr(build_csr(generate_key(), orders))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the ECDSA signature's s
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrError, match="signature does not verify"):
        ca.sign_csr(tampered, orders)


def test_csr_with_swapped_public_key_is_refused(ca: CertificateAuthority, orders: SpiffeId) -> None:
    # Proof of possession: a CSR carrying key B but signed by key A must not pass.
    a, b = generate_key(), generate_key()
    good_a = x509.load_pem_x509_csr(build_csr(a, orders)).public_bytes(serialization.Encoding.DER)
    pub_a = a.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_b = b.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = x509.load_der_x509_csr(good_a.replace(pub_a, pub_b))
    with pytest.raises(CsrError, match="signature does not verify"):
        ca.sign_csr(forged.public_bytes(serialization.Encoding.PEM), orders)


def test_garbage_is_not_a_csr(ca: CertificateAuthority, orders: SpiffeId) -> None:
    with pytest.raises(CsrError, match="not a PEM certificate signing request"):
        ca.sign_csr(b"hello", orders)
    with pytest.raises(CsrError, match="not a PEM certificate signing request"):
        ca.sign_csr(ca.bundle_pem, orders)


def _csr_for(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (rsa.generate_private_key(65537, 1024), "RSA-1024"),
        (rsa.generate_private_key(65537, 2048), "RSA-2048"),
        (ec.generate_private_key(ec.SECP521R1()), "curve secp521r1"),
        (ec.generate_private_key(ec.SECP256K1()), "curve secp256k1"),
    ],
    ids=["rsa1024", "rsa2048", "p521", "secp256k1"],
)
def test_weak_or_foreign_keys_are_refused(
    ca: CertificateAuthority,
    orders: SpiffeId,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    message: str,
) -> None:
    with pytest.raises(CsrError, match=message):
        ca.sign_csr(_csr_for(key), orders)


def test_p384_and_ed25519_are_accepted(ca: CertificateAuthority, orders: SpiffeId) -> None:
    p384 = _csr_for(ec.generate_private_key(ec.SECP384R1()))
    assert ca.verify_svid(ca.sign_csr(p384, orders)) == orders
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(ed, None)
        .public_bytes(serialization.Encoding.PEM)
    )
    assert ca.verify_svid(ca.sign_csr(ed_csr, orders)) == orders


def test_identity_outside_trust_domain_or_without_path(
    ca: CertificateAuthority, orders: SpiffeId
) -> None:
    csr = build_csr(generate_key(), orders)
    with pytest.raises(CsrError, match=re.escape("outside this CA's trust domain 'shop.local'")):
        ca.sign_csr(csr, SpiffeId.for_service("other.local", "default", "orders"))
    with pytest.raises(CsrError, match="has no path"):
        ca.sign_csr(csr, SpiffeId.for_trust_domain(TD))
    with pytest.raises(CsrError, match="lifetime must be positive"):
        ca.sign_csr(csr, orders, ttl_s=0)


def test_naive_now_is_refused(ca: CertificateAuthority, orders: SpiffeId) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ca.sign_csr(build_csr(generate_key(), orders), orders, now=datetime(2026, 1, 1))


# -- the registry's own server certificate ---------------------------------------------


def test_server_cert(ca: CertificateAuthority, tmp_path: Path) -> None:
    identity = SpiffeId(TD, "/registry")
    cert_pem, key_pem = ca.issue_server_cert(
        identity, ["registry.shop.local", "localhost"], ["127.0.0.1", "::1"], 3600
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, None)
    assert key.public_key() == cert.public_key()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(identity)]
    assert san.get_values_for_type(x509.DNSName) == ["registry.shop.local", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert ca.verify_svid(cert_pem) == identity
    text = openssl_text(cert_pem)
    assert text.count("URI:") == 1 and "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    work = tmp_path / "verify"
    work.mkdir()
    (work / "ca.crt").write_bytes(ca.bundle_pem)
    assert openssl_verify(work / "ca.crt", cert_pem, "sslserver").returncode == 0
    with pytest.raises(ValueError, match="'not-an-ip' is not an IP address"):
        ca.issue_server_cert(identity, [], ["not-an-ip"])
    with pytest.raises(ValueError, match="outside this CA's trust domain"):
        ca.issue_server_cert(SpiffeId("other.local", "/registry"), [], [])
