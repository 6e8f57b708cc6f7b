"""The proxy's side of issuance: its key, its CSR, and reading the certificate it gets back."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from registry.ca.spiffe import SpiffeId


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key: the curve every TLS stack supports, and the fastest to sign."""
    return ec.generate_private_key(ec.SECP256R1())


def build_csr(key: ec.EllipticCurvePrivateKey, identity: SpiffeId) -> bytes:
    """A PEM CSR for `identity`, signed by `key` (proof of possession).

    The URI SAN is informative only: the CA writes the identity it authorised, not
    the one a CSR asks for.
    """
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(identity))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """`key` as unencrypted PKCS#8 PEM (the file holding it is written 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_cert(cert: x509.Certificate | bytes) -> x509.Certificate:
    """A certificate object from PEM or DER bytes (an object is returned as is)."""
    if isinstance(cert, x509.Certificate):
        return cert
    try:
        if cert.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(cert)
        return x509.load_der_x509_certificate(cert)
    except ValueError as e:
        raise ValueError(f"not an X.509 certificate (PEM or DER): {e}") from None


def cert_expiry(cert_pem: x509.Certificate | bytes) -> datetime:
    """The certificate's notAfter, timezone-aware UTC (renew at half of the lifetime)."""
    return load_cert(cert_pem).not_valid_after_utc


def spiffe_id_of(cert: x509.Certificate | bytes) -> SpiffeId:
    """The SPIFFE ID in the one URI SAN (X509-SVID 2: exactly one, else reject)."""
    c = load_cert(cert)
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError("certificate has no subjectAltName, so no SPIFFE ID") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise ValueError(f"certificate has {len(uris)} URI SANs; an SVID has exactly one")
    return SpiffeId.parse(uris[0])
