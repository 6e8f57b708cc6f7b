"""CertificateAuthority.verify_svid: what the registry accepts as proof of identity on renew."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from registry.ca.authority import CLOCK_SKEW_S, CertificateAuthority, SvidError
from registry.ca.csr import build_csr, generate_key
from registry.ca.spiffe import SpiffeId
from tests.registry.ca.builders import ca_key, make_cert, window
from tests.registry.ca.conftest import TD

ORDERS = f"spiffe://{TD}/ns/default/sa/orders"


def _issued(ca: CertificateAuthority, identity: SpiffeId, now: datetime, ttl_s: float) -> bytes:
    return ca.sign_csr(build_csr(generate_key(), identity), identity, ttl_s, now=now)


def test_accepts_its_own_svid_as_pem_der_or_object(
    ca: CertificateAuthority, orders: SpiffeId, now: datetime
) -> None:
    pem = _issued(ca, orders, now, 3600)
    cert = x509.load_pem_x509_certificate(pem)
    assert ca.verify_svid(pem, now=now) == orders
    assert ca.verify_svid(cert.public_bytes(serialization.Encoding.DER), now=now) == orders
    assert ca.verify_svid(cert, now=now) == orders


def test_refuses_another_ca_even_with_the_same_names(
    ca: CertificateAuthority, orders: SpiffeId, tmp_path: Path, now: datetime
) -> None:
    impostor = CertificateAuthority.load_or_create(tmp_path / "impostor", TD, now=now)
    assert impostor.root.subject == ca.root.subject
    with pytest.raises(SvidError, match=r"not issued by the shop\.local root CA"):
        ca.verify_svid(_issued(impostor, orders, now, 3600), now=now)


def test_refuses_another_trust_domain_signed_by_our_key(
    ca: CertificateAuthority, state_dir: Path, now: datetime
) -> None:
    nb, na = window(now, 60, 3600)
    pem = make_cert(
        ca_key(state_dir),
        ca.root.subject,
        uris=["spiffe://other.local/ns/default/sa/orders"],
        not_before=nb,
        not_after=na,
    )
    with pytest.raises(SvidError, match=r"not in trust domain 'shop\.local'"):
        ca.verify_svid(pem, now=now)


def test_validity_window_with_skew(
    ca: CertificateAuthority, orders: SpiffeId, now: datetime
) -> None:
    pem = _issued(ca, orders, now, 3600)
    skew = timedelta(seconds=CLOCK_SKEW_S)
    # notBefore is now-60 s, and verification allows 60 s more: 119 s early is fine.
    assert ca.verify_svid(pem, now=now - 2 * skew + timedelta(seconds=1)) == orders
    with pytest.raises(SvidError, match="not valid before"):
        ca.verify_svid(pem, now=now - 2 * skew - timedelta(seconds=1))
    end = now + timedelta(hours=1)
    assert ca.verify_svid(pem, now=end + skew) == orders
    with pytest.raises(SvidError, match="expired at"):
        ca.verify_svid(pem, now=end + skew + timedelta(seconds=1))


def test_refuses_expired_and_not_yet_valid_certs(
    ca: CertificateAuthority, state_dir: Path, now: datetime
) -> None:
    key = ca_key(state_dir)
    old = make_cert(
        key,
        ca.root.subject,
        uris=[ORDERS],
        not_before=now - timedelta(days=2),
        not_after=now - timedelta(days=1),
    )
    with pytest.raises(SvidError, match="expired at"):
        ca.verify_svid(old, now=now)
    future = make_cert(
        key,
        ca.root.subject,
        uris=[ORDERS],
        not_before=now + timedelta(hours=1),
        not_after=now + timedelta(hours=2),
    )
    with pytest.raises(SvidError, match="not valid before"):
        ca.verify_svid(future, now=now)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ca": True}, r"is a CA \(cA=true\)"),
        ({"key_cert_sign": True}, "key usage is not a leaf's"),
        ({"basic_constraints": False}, "lacks a required extension"),
        ({"uris": [ORDERS, f"spiffe://{TD}/ns/default/sa/admin"]}, "2 URI SANs"),
        ({"uris": []}, "no subjectAltName"),
        ({"uris": ["https://shop.local/orders"]}, "must start with 'spiffe://'"),
        ({"uris": [f"spiffe://{TD}"]}, "has no path"),
    ],
    ids=[
        "ca-true",
        "keycertsign",
        "no-basic-constraints",
        "two-uris",
        "no-san",
        "https",
        "root-id",
    ],
)
def test_refuses_non_leaf_shapes(
    ca: CertificateAuthority,
    state_dir: Path,
    now: datetime,
    kwargs: dict[str, object],
    message: str,
) -> None:
    nb, na = window(now, 60, 3600)
    args: dict[str, object] = {"uris": [ORDERS], "not_before": nb, "not_after": na, **kwargs}
    pem = make_cert(ca_key(state_dir), ca.root.subject, **args)  # type: ignore[arg-type]
    with pytest.raises(SvidError, match=message):
        ca.verify_svid(pem, now=now)


def test_refuses_the_root_itself(ca: CertificateAuthority, now: datetime) -> None:
    with pytest.raises(SvidError, match="cA=true"):
        ca.verify_svid(ca.bundle_pem, now=now)


def test_refuses_garbage(ca: CertificateAuthority) -> None:
    with pytest.raises(SvidError, match=r"not an X\.509 certificate"):
        ca.verify_svid(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(SvidError, match=r"not an X\.509 certificate"):
        ca.verify_svid(b"\x30\x03\x02\x01\x01")
