"""What the proxy reads from a certificate: validity, URI SANs, cA. A DER walk, no crypto.

The proxy never verifies a signature itself: OpenSSL verifies peers' chains in the
handshake, and its own SVID comes from the registry over verified TLS. It only needs to
read three fields (RFC 5280 4.1), so it reads them here rather than importing
`cryptography`'s X.509 parser, which costs every sidecar ~10 MiB of RSS for its whole
life. The walk is bounds-checked at every step; anything it cannot read is a ValueError.

    Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
        validity SEQUENCE { notBefore, notAfter }, subject, subjectPublicKeyInfo,
        [1] issuerUniqueID OPTIONAL, [2] subjectUniqueID OPTIONAL, [3] extensions OPTIONAL }
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime

SEQUENCE, BOOLEAN, OID, OCTET_STRING = 0x30, 0x01, 0x06, 0x04
UTC_TIME, GENERALIZED_TIME = 0x17, 0x18
EXTENSIONS = 0xA3  # [3] EXPLICIT
URI = 0x86  # GeneralName uniformResourceIdentifier [6] IMPLICIT IA5String
SUBJECT_ALT_NAME = bytes((0x55, 0x1D, 0x11))  # 2.5.29.17
BASIC_CONSTRAINTS = bytes((0x55, 0x1D, 0x13))  # 2.5.29.19
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)


@dataclass(frozen=True, slots=True)
class CertInfo:
    not_before: datetime  # timezone-aware UTC
    not_after: datetime
    uris: tuple[str, ...]  # the URI SANs, in order (an X509-SVID has exactly one)
    is_ca: bool  # basicConstraints cA

    @property
    def lifetime_s(self) -> float:
        return (self.not_after - self.not_before).total_seconds()


def der_of(cert: bytes) -> bytes:
    """The DER of a certificate given as PEM (the first one) or as DER."""
    if cert.lstrip().startswith(b"-----BEGIN"):
        m = _PEM.search(cert)
        if m is None:
            raise ValueError("not a PEM certificate")
        try:
            return base64.b64decode(b"".join(m.group(1).split()), validate=True)
        except ValueError as exc:
            raise ValueError(f"PEM certificate is not base64: {exc}") from None
    return cert


def read(cert: bytes) -> CertInfo:
    """Validity, URI SANs and cA of a certificate (PEM or DER); ValueError if malformed."""
    der = der_of(cert)
    tag, start, end = _tlv(der, 0, len(der))
    if tag != SEQUENCE or end != len(der):
        raise ValueError("not an X.509 certificate (PEM or DER)")
    tag, pos, tbs_end = _tlv(der, start, end)
    if tag != SEQUENCE:
        raise ValueError("certificate without a TBSCertificate")
    fields = []
    while pos < tbs_end:
        tag, s, e = _tlv(der, pos, tbs_end)
        fields.append((tag, s, e))
        pos = e
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    if len(fields) < 6 or fields[3][0] != SEQUENCE:
        raise ValueError("TBSCertificate is missing fields")
    _, vs, ve = fields[3]
    t1, s1, e1 = _tlv(der, vs, ve)
    t2, s2, e2 = _tlv(der, e1, ve)
    not_before, not_after = _time(t1, der[s1:e1]), _time(t2, der[s2:e2])
    uris: tuple[str, ...] = ()
    is_ca = False
    seen: set[bytes] = set()
    for tag, s, e in fields[6:]:
        if tag != EXTENSIONS:
            continue
        t, s, e = _tlv(der, s, e)
        if t != SEQUENCE:
            raise ValueError("extensions are not a SEQUENCE")
        pos = s
        while pos < e:
            t, es, ee = _tlv(der, pos, e)
            pos = ee
            oid, value = _extension(der, es, ee)
            if oid in seen:  # RFC 5280 4.2: an extension appears at most once
                raise ValueError("duplicate extension in certificate")
            seen.add(oid)
            if oid == SUBJECT_ALT_NAME:
                uris = _uris(der, *value)
            elif oid == BASIC_CONSTRAINTS:
                is_ca = _ca(der, *value)
    return CertInfo(not_before, not_after, uris, is_ca)


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the element at `pos`, within `end`."""
    if pos + 2 > end:
        raise ValueError("truncated DER")
    tag, n = buf[pos], buf[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("high tag numbers are not used in certificates")
    pos += 2
    if n & 0x80:
        count = n & 0x7F
        if not 1 <= count <= 4 or pos + count > end:
            raise ValueError("bad DER length")
        n = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    if pos + n > end:
        raise ValueError("DER element runs past its container")
    return tag, pos, pos + n


def _extension(der: bytes, start: int, end: int) -> tuple[bytes, tuple[int, int]]:
    """(OID bytes, (start, end) of extnValue's content) of one Extension."""
    tag, s, e = _tlv(der, start, end)
    if tag != OID:
        raise ValueError("extension without an OID")
    oid = der[s:e]
    tag, vs, ve = _tlv(der, e, end)
    if tag == BOOLEAN:  # critical
        tag, vs, ve = _tlv(der, ve, end)
    if tag != OCTET_STRING:
        raise ValueError("extension value is not an OCTET STRING")
    return oid, (vs, ve)


def _uris(der: bytes, start: int, end: int) -> tuple[str, ...]:
    tag, pos, e = _tlv(der, start, end)
    if tag != SEQUENCE:
        raise ValueError("subjectAltName is not a SEQUENCE")
    out = []
    while pos < e:
        tag, s, pos = _tlv(der, pos, e)
        if tag == URI:
            try:
                out.append(der[s:pos].decode("ascii"))
            except UnicodeDecodeError:
                raise ValueError("URI SAN is not ASCII (IA5String)") from None
    return tuple(out)


def _ca(der: bytes, start: int, end: int) -> bool:
    tag, pos, e = _tlv(der, start, end)
    if tag != SEQUENCE:
        raise ValueError("basicConstraints is not a SEQUENCE")
    if pos < e:
        tag, s, ve = _tlv(der, pos, e)
        if tag == BOOLEAN:
            return ve - s == 1 and der[s] != 0
    return False


def _time(tag: int, raw: bytes) -> datetime:
    """UTCTime (YYMMDDHHMMSSZ, years 1950-2049) or GeneralizedTime (RFC 5280 4.1.2.5)."""
    try:
        text = raw.decode("ascii")
        if tag == UTC_TIME and len(text) == 13 and text.endswith("Z"):
            year = int(text[:2])
            text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
        elif not (tag == GENERALIZED_TIME and len(text) == 15 and text.endswith("Z")):
            raise ValueError
        if not text[:14].isdigit():
            raise ValueError
        # By hand: datetime.strptime imports _strptime and calendar (~0.5 MiB of RSS).
        year, mon, day, hour, minute, sec = (int(text[i : i + 2]) for i in (2, 4, 6, 8, 10, 12))
        year += int(text[:2]) * 100
        return datetime(year, mon, day, hour, minute, sec, tzinfo=UTC)
    except ValueError:
        raise ValueError(f"bad certificate time {raw[:20]!r}") from None
