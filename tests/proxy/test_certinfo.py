"""proxy/certinfo.py reads what cryptography reads, and refuses anything malformed."""

from __future__ import annotations

import contextlib
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from proxy import certinfo

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)


def _cert(
    sans: list[x509.GeneralName] | None,
    ca: bool | None = False,
    not_after: datetime.datetime = NOW + datetime.timedelta(hours=2),
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ca")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(not_after)
    )
    if sans is not None:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=True)
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    return b.sign(key, hashes.SHA256())


URI = x509.UniformResourceIdentifier
CASES = {
    "svid": _cert([URI("spiffe://shop.local/ns/default/sa/orders")]),
    "two uris and a dns name": _cert([x509.DNSName("a.b"), URI("spiffe://a/x"), URI("spiffe://b/y")]),
    "ca": _cert([URI("spiffe://shop.local")], ca=True),
    "no san, no basic constraints": _cert(None, ca=None),
    "after 2049 (GeneralizedTime)": _cert([URI("spiffe://a/x")], not_after=datetime.datetime(
        2060, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_reads_what_cryptography_reads(name: str) -> None:
    cert = CASES[name]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(san.get_values_for_type(URI))
    except x509.ExtensionNotFound:
        uris = ()
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    for form in (serialization.Encoding.PEM, serialization.Encoding.DER):
        info = certinfo.read(cert.public_bytes(form))
        assert info.not_before == cert.not_valid_before_utc
        assert info.not_after == cert.not_valid_after_utc
        assert (info.uris, info.is_ca) == (uris, ca)
    assert info.lifetime_s == (cert.not_valid_after_utc - NOW).total_seconds()


def test_refuses_truncated_and_foreign_input() -> None:
    der = CASES["svid"].public_bytes(serialization.Encoding.DER)
    for bad in (b"", der[:-1], der[:40], der + b"\x00", b"\x30\x85\xff\xff\xff\xff\xff",
                b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----",
                b"-----BEGIN CERTIFICATE-----\n"):  # fmt: skip
        with pytest.raises(ValueError):
            certinfo.read(bad)


@given(st.binary(max_size=600))
def test_any_bytes_give_an_answer_or_a_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        certinfo.read(data)


@given(st.integers(0, 400), st.binary(min_size=1, max_size=3))
def test_a_corrupted_certificate_gives_an_answer_or_a_value_error(at: int, junk: bytes) -> None:
    der = bytearray(CASES["svid"].public_bytes(serialization.Encoding.DER))
    der[at % len(der) : at % len(der) + len(junk)] = junk
    with contextlib.suppress(ValueError):
        certinfo.read(bytes(der))
