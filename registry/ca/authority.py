"""The mesh's root CA: its key on disk, X.509-SVIDs signed from CSRs, and SVID verification.

House rules (X509-SVID.md, RFC 5280):
- The CA signs with its own template. From a CSR it takes the public key and nothing else:
  no subject, no SAN, no extension, no lifetime. The identity comes from the caller, who
  has authorised it (join token or current SVID).
- Leaf: exactly one URI SAN, cA=false (critical), keyUsage digitalSignature only (critical),
  EKU serverAuth+clientAuth, SKI/AKI, 128-bit random serial, notBefore backdated by
  CLOCK_SKEW_S, lifetime capped at max_ttl_s.
- Root: cA=true pathlen=0 (it signs leaves only), keyCertSign+cRLSign, URI SAN spiffe://<td>.
  No name constraints: X509-SVID 4.2 warns that URI name constraints break many verifiers.
"""

from __future__ import annotations

import ipaddress
import secrets
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.state import atomic_write, ensure_dir
from registry.ca.csr import generate_key, key_pem, load_cert, spiffe_id_of
from registry.ca.spiffe import SpiffeId

KEY_FILE = "ca.key"
CERT_FILE = "ca.crt"
# Istio, Linkerd and Kuma all issue 24 h workload certificates.
DEFAULT_TTL_S = 24 * 3600.0
# Consul's leaf lifetime, "to last through a weekend": the longest control-plane outage
# connections should survive. A longer leaf only widens the window of a stolen key.
MAX_TTL_S = 72 * 3600.0
# Backdate notBefore and tolerate this much skew when verifying (Linkerd 20 s, Kuma 10 s;
# VMs without good NTP drift more than pods).
CLOCK_SKEW_S = 60.0
ROOT_TTL = timedelta(days=3650)  # Consul's root: 10 years

_SIGNING_CURVES = (ec.SECP256R1, ec.SECP384R1)
_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_ROOT_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_EKU = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)
_LEAF_BC = x509.BasicConstraints(ca=False, path_length=None)

LeafPublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class CaError(RuntimeError):
    """The CA's files on disk are missing, unsafe or inconsistent."""


class CsrError(ValueError):
    """A signing request was refused; the message says why."""


class SvidError(ValueError):
    """A certificate is not a valid SVID of this trust domain; the message says why."""


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware (datetime.now(UTC))")
    return now


def _serial() -> int:
    # 128 random bits, top bit cleared so the DER INTEGER stays positive in 16 bytes.
    return int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1


def _check_leaf_key(key: object) -> LeafPublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, _SIGNING_CURVES):
            return key
        raise CsrError(f"CSR key is on curve {key.curve.name}; only P-256 and P-384 are accepted")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, rsa.RSAPublicKey):
        raise CsrError(
            f"CSR key is RSA-{key.key_size}; only EC P-256/P-384 and Ed25519 keys are "
            "accepted (meshctl proxies generate P-256)"
        )
    raise CsrError(f"CSR key type {type(key).__name__} is not accepted: use EC P-256")


def _root_cert(
    key: ec.EllipticCurvePrivateKey, trust_domain: str, now: datetime
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, f"meshctl root CA {trust_domain}"),
        ]
    )
    pub = key.public_key()
    td_id = str(SpiffeId.for_trust_domain(trust_domain))
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pub)
        .serial_number(_serial())
        .not_valid_before(now - timedelta(seconds=CLOCK_SKEW_S))
        .not_valid_after(now + ROOT_TTL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ROOT_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(pub), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(td_id)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )


_NEW_CA = "move the state directory away to create a new CA and re-join every proxy"


def check_private(path: Path, what: str = "the CA key", otherwise: str = _NEW_CA) -> None:
    """Refuse a key file others could read (CaError)."""
    # Refuse rather than chmod: a key that others could read may already be copied, and
    # quietly fixing the mode would hide that. Same stance as ssh's "UNPROTECTED PRIVATE KEY".
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CaError(
            f"{path}: mode {mode:04o} lets other users read {what}; it must be 0600. "
            f"If nobody else could have read it, run `chmod 600 {path}`; otherwise {otherwise}."
        )


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The CA key in `path` (0600, unencrypted PEM, EC); else CaError."""
    check_private(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise CaError(f"{path}: not a readable unencrypted PEM private key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CaError(f"{path}: the CA key must be EC P-256, found {type(key).__name__}")
    return key


@dataclass(frozen=True, slots=True, eq=False)
class CertificateAuthority:
    """One trust domain's root. Build with `load_or_create`; safe to share between threads."""

    trust_domain: str
    root: x509.Certificate
    bundle_pem: bytes
    _key: ec.EllipticCurvePrivateKey = field(repr=False)
    # Pre-built template parts: nothing that is the same for every leaf is rebuilt per CSR.
    _subject: x509.Name = field(repr=False)
    _aki: x509.AuthorityKeyIdentifier = field(repr=False)
    max_ttl_s: float = MAX_TTL_S
    default_ttl_s: float = DEFAULT_TTL_S

    @classmethod
    def load_or_create(
        cls,
        state_dir: Path,
        trust_domain: str,
        *,
        max_ttl_s: float = MAX_TTL_S,
        default_ttl_s: float = DEFAULT_TTL_S,
        now: datetime | None = None,
    ) -> CertificateAuthority:
        """Load the CA in `state_dir`, or create it there (dir 0700, ca.key 0600, ca.crt).

        A second call loads the same root. Half a CA (key without cert) is repaired by
        re-signing the root from the same key; a cert without its key is an error.
        """
        SpiffeId.for_trust_domain(trust_domain)  # validates the name
        if not 0 < default_ttl_s <= max_ttl_s:
            raise ValueError(f"need 0 < default_ttl_s ({default_ttl_s}) <= max_ttl_s ({max_ttl_s})")
        ensure_dir(state_dir)
        key_path, cert_path = state_dir / KEY_FILE, state_dir / CERT_FILE
        if key_path.exists():
            key = load_key(key_path)
        elif cert_path.exists():
            raise CaError(
                f"{cert_path} exists but {key_path} does not: restore the key from a backup, "
                "or move ca.crt away to create a new CA (every proxy must then re-join)"
            )
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            atomic_write(key_path, key_pem(key), 0o600)
        if cert_path.exists():
            root = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if root.public_key() != key.public_key():
                raise CaError(f"{cert_path} does not belong to the key in {key_path}")
        else:
            root = _root_cert(key, trust_domain, _utc(now))
            atomic_write(cert_path, root.public_bytes(serialization.Encoding.PEM), 0o644)
        return cls.of(key, root, trust_domain, str(state_dir), max_ttl_s=max_ttl_s,
                      default_ttl_s=default_ttl_s)  # fmt: skip

    @classmethod
    def of(
        cls,
        key: ec.EllipticCurvePrivateKey,
        root: x509.Certificate,
        trust_domain: str,
        where: str,
        *,
        max_ttl_s: float = MAX_TTL_S,
        default_ttl_s: float = DEFAULT_TTL_S,
    ) -> CertificateAuthority:
        """The CA of a key and its root certificate, loaded from `where` (for errors)."""
        found = spiffe_id_of(root).trust_domain
        if found != trust_domain:
            raise CaError(
                f"{where} holds the CA of trust domain {found!r}, not {trust_domain!r}: "
                "use another state directory or the configured trust domain"
            )
        return cls(
            trust_domain=trust_domain,
            root=root,
            bundle_pem=root.public_bytes(serialization.Encoding.PEM),
            max_ttl_s=max_ttl_s,
            default_ttl_s=default_ttl_s,
            _key=key,
            _subject=x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)]),
            _aki=x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
        )

    # -- issuance ------------------------------------------------------------------------

    def sign_csr(
        self,
        csr_pem: bytes,
        identity: SpiffeId,
        ttl_s: float | None = None,
        *,
        now: datetime | None = None,
    ) -> bytes:
        """Sign the CSR's public key into an SVID for `identity` (PEM). Raises CsrError."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as e:
            raise CsrError(f"not a PEM certificate signing request: {e}") from None
        try:
            valid = csr.is_signature_valid
        except (ValueError, UnsupportedAlgorithm) as e:
            raise CsrError(f"CSR signature cannot be checked: {e}") from None
        if not valid:
            raise CsrError("CSR signature does not verify: it was not signed by the key it carries")
        try:
            public_key = csr.public_key()
        except (ValueError, UnsupportedAlgorithm) as e:
            raise CsrError(f"CSR public key is not usable: {e}") from None
        return self._issue(_check_leaf_key(public_key), identity, ttl_s, now, [])

    def issue_server_cert(
        self,
        identity: SpiffeId,
        dns_names: list[str],
        ips: list[str],
        ttl_s: float | None = None,
        *,
        now: datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """A key and SVID for the registry's HTTPS listener: the URI SAN plus DNS/IP SANs.

        X509-SVID 2 allows any number of non-URI SANs; clients that check the hostname
        need them. Returns (cert PEM, key PEM).
        """
        extra: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        for ip in ips:
            try:
                extra.append(x509.IPAddress(ipaddress.ip_address(ip)))
            except ValueError:
                raise ValueError(f"server certificate IP SAN {ip!r} is not an IP address") from None
        key = generate_key()
        try:
            cert = self._issue(key.public_key(), identity, ttl_s, now, extra)
        except CsrError as e:
            raise ValueError(str(e)) from None
        return cert, key_pem(key)

    def _issue(
        self,
        public_key: LeafPublicKey,
        identity: SpiffeId,
        ttl_s: float | None,
        now: datetime | None,
        extra_sans: list[x509.GeneralName],
    ) -> bytes:
        if identity.trust_domain != self.trust_domain:
            raise CsrError(
                f"identity {identity} is outside this CA's trust domain {self.trust_domain!r}"
            )
        if not identity.is_workload:
            raise CsrError(
                f"identity {identity} has no path; a leaf SVID needs one (X509-SVID 3.1)"
            )
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        if not ttl > 0:
            raise CsrError(f"certificate lifetime must be positive, got {ttl_s} s")
        t = _utc(now)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(identity))]
        cert = (
            x509.CertificateBuilder()
            .subject_name(self._subject)
            .issuer_name(self.root.subject)
            .public_key(public_key)
            .serial_number(_serial())
            .not_valid_before(t - timedelta(seconds=CLOCK_SKEW_S))
            .not_valid_after(t + timedelta(seconds=min(ttl, self.max_ttl_s)))
            .add_extension(_LEAF_BC, critical=True)
            .add_extension(_LEAF_KEY_USAGE, critical=True)
            .add_extension(_LEAF_EKU, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._aki, critical=False)
            .add_extension(x509.SubjectAlternativeName(sans + extra_sans), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    # -- verification --------------------------------------------------------------------

    def verify_svid(
        self, cert: x509.Certificate | bytes, *, now: datetime | None = None
    ) -> SpiffeId:
        """The SPIFFE ID of a leaf SVID this CA issued and that is valid now; else SvidError."""
        try:
            c = load_cert(cert)
        except ValueError as e:
            raise SvidError(str(e)) from None
        try:
            c.verify_directly_issued_by(self.root)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise SvidError(
                f"certificate was not issued by the {self.trust_domain} root CA "
                "(issuer or signature does not match)"
            ) from None
        t = _utc(now)
        skew = timedelta(seconds=CLOCK_SKEW_S)
        if t + skew < c.not_valid_before_utc:
            raise SvidError(f"certificate is not valid before {c.not_valid_before_utc.isoformat()}")
        if t - skew > c.not_valid_after_utc:
            raise SvidError(f"certificate expired at {c.not_valid_after_utc.isoformat()}")
        # X509-SVID 5.2: a leaf has cA=false and neither keyCertSign nor cRLSign.
        try:
            bc = c.extensions.get_extension_for_class(x509.BasicConstraints).value
            ku_ext = c.extensions.get_extension_for_class(x509.KeyUsage)
        except x509.ExtensionNotFound as e:
            raise SvidError(f"certificate lacks a required extension: {e}") from None
        if bc.ca:
            raise SvidError("certificate is a CA (cA=true), not a leaf SVID")
        ku = ku_ext.value
        if not ku_ext.critical or ku.key_cert_sign or ku.crl_sign or not ku.digital_signature:
            raise SvidError(
                "certificate key usage is not a leaf's: it must be critical, with "
                "digitalSignature and without keyCertSign/cRLSign"
            )
        try:
            identity = spiffe_id_of(c)
        except ValueError as e:
            raise SvidError(str(e)) from None
        if identity.trust_domain != self.trust_domain:
            raise SvidError(f"identity {identity} is not in trust domain {self.trust_domain!r}")
        if not identity.is_workload:
            raise SvidError(f"identity {identity} has no path; it cannot be a leaf SVID")
        return identity
