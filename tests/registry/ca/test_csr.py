"""The proxy-side helpers: key, CSR, reading back expiry and identity; and the bench runs."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.ca_issuance import run
from registry.ca.authority import CertificateAuthority
from registry.ca.csr import build_csr, cert_expiry, generate_key, key_pem, spiffe_id_of
from registry.ca.spiffe import SpiffeId


def test_key_and_csr(orders: SpiffeId) -> None:
    key = generate_key()
    assert isinstance(key.curve, ec.SECP256R1)
    loaded = serialization.load_pem_private_key(key_pem(key), None)
    assert loaded.public_key() == key.public_key()
    assert b"BEGIN PRIVATE KEY" in key_pem(key)
    csr = x509.load_pem_x509_csr(build_csr(key, orders))
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(orders)]


def test_expiry_and_identity_of_an_issued_cert(
    ca: CertificateAuthority, orders: SpiffeId, now: datetime
) -> None:
    pem = ca.sign_csr(build_csr(generate_key(), orders), orders, 7200, now=now)
    assert cert_expiry(pem) == now + timedelta(hours=2)
    assert spiffe_id_of(pem) == orders
    assert spiffe_id_of(x509.load_pem_x509_certificate(pem)) == orders


def test_spiffe_id_of_the_root_and_of_garbage(ca: CertificateAuthority) -> None:
    assert spiffe_id_of(ca.bundle_pem) == SpiffeId.for_trust_domain("shop.local")
    with pytest.raises(ValueError, match=r"not an X\.509 certificate"):
        spiffe_id_of(b"nonsense")


def test_bench_smoke() -> None:
    figures = run(3)
    assert figures["count"] == 3
    assert figures["svids_per_s"] > 0 and figures["cpu_s"] > 0
