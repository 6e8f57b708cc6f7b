"""SPIFFE IDs: parse, validate and build `spiffe://<trust-domain>/<path>` per SPIFFE-ID.md."""

from __future__ import annotations

import string
from dataclasses import dataclass

SCHEME = "spiffe://"
# SPIFFE-ID.md 2.3: implementations MUST support 2048 bytes and SHOULD NOT generate more;
# RFC 3986 caps the host at 255, hence the trust-domain limit.
MAX_ID_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255

# The character sets of the SPIFFE ID spec (the same ones go-spiffe enforces):
# trust domains are lowercase, path segments may use both cases. No percent-encoding.
_TD_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-_")
_SEGMENT_CHARS = frozenset(string.ascii_letters + string.digits + ".-_")


def _check_trust_domain(td: str) -> None:
    if not td:
        raise ValueError("SPIFFE ID has no trust domain: expected spiffe://<trust-domain>/...")
    if len(td.encode()) > MAX_TRUST_DOMAIN_BYTES:
        raise ValueError(f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
    # userinfo before port: in `user:pw@host` the ':' belongs to the userinfo.
    if "@" in td:
        raise ValueError(f"trust domain {td!r} must not contain userinfo ('@')")
    if ":" in td:
        raise ValueError(f"trust domain {td!r} must not contain a port (':')")
    for i, ch in enumerate(td):
        if ch in _TD_CHARS:
            continue
        if ch == "%":
            raise ValueError(f"trust domain {td!r} must not be percent-encoded ('%')")
        hint = " (trust domains are lowercase)" if ch.isupper() else ""
        raise ValueError(
            f"trust domain {td!r} has invalid character {ch!r} at position {i}: only "
            f"lowercase letters, digits, '.', '-' and '_' are allowed{hint}"
        )


def _check_path(path: str) -> None:
    if not path:
        return
    if not path.startswith("/"):
        raise ValueError(f"SPIFFE ID path {path!r} must start with '/'")
    if path.endswith("/"):
        raise ValueError(f"SPIFFE ID path {path!r} must not end with '/'")
    for seg in path[1:].split("/"):
        if seg == "":
            raise ValueError(f"SPIFFE ID path {path!r} has an empty segment ('//')")
        if seg in (".", ".."):
            raise ValueError(f"SPIFFE ID path {path!r} has a {seg!r} segment")
        for ch in seg:
            if ch in _SEGMENT_CHARS:
                continue
            if ch == "%":
                raise ValueError(f"SPIFFE ID path {path!r} must not be percent-encoded ('%')")
            raise ValueError(
                f"SPIFFE ID path segment {seg!r} has invalid character {ch!r}: only "
                f"letters, digits, '.', '-' and '_' are allowed"
            )


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A valid SPIFFE ID. `path` is '' for a trust domain's own ID, else starts with '/'."""

    trust_domain: str
    path: str = ""

    def __post_init__(self) -> None:
        _check_trust_domain(self.trust_domain)
        _check_path(self.path)
        if len(SCHEME) + len(self.trust_domain) + len(self.path.encode()) > MAX_ID_BYTES:
            raise ValueError(f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")

    @classmethod
    def parse(cls, s: str) -> SpiffeId:
        """Parse `s`, raising ValueError that names the rule it breaks."""
        if not isinstance(s, str) or not s:
            raise ValueError("SPIFFE ID is empty")
        if len(s.encode()) > MAX_ID_BYTES:
            raise ValueError(f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")
        if not s.startswith(SCHEME):
            if s.lower().startswith(SCHEME):
                raise ValueError(f"SPIFFE ID {s!r}: the scheme must be lowercase 'spiffe://'")
            raise ValueError(f"SPIFFE ID {s!r} must start with 'spiffe://'")
        if "?" in s:
            raise ValueError(f"SPIFFE ID {s!r} must not have a query ('?')")
        if "#" in s:
            raise ValueError(f"SPIFFE ID {s!r} must not have a fragment ('#')")
        rest = s[len(SCHEME) :]
        td, slash, tail = rest.partition("/")
        return cls(td, slash + tail)

    @classmethod
    def for_trust_domain(cls, trust_domain: str) -> SpiffeId:
        """The trust domain's own ID (`spiffe://td`), carried by the root certificate."""
        return cls(trust_domain, "")

    @classmethod
    def for_service(cls, trust_domain: str, namespace: str, service: str) -> SpiffeId:
        """Istio's workload identity: spiffe://<td>/ns/<namespace>/sa/<service>."""
        # Each name must be one segment: "a/sa/b" would build a different, valid identity.
        for what, name in (("namespace", namespace), ("service", service)):
            if not name or "/" in name:
                raise ValueError(f"{what} {name!r} must be one non-empty path segment (no '/')")
        return cls(trust_domain, f"/ns/{namespace}/sa/{service}")

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}{self.path}"

    @property
    def principal(self) -> str:
        """Istio's principal form, the ID without `spiffe://` (`td/ns/default/sa/orders`)."""
        return f"{self.trust_domain}{self.path}"

    @property
    def is_workload(self) -> bool:
        """True when the ID has a path: only such IDs may go in a leaf SVID (X509-SVID 3.1)."""
        return self.path != ""

    def _istio_parts(self) -> tuple[str, str] | None:
        segs = self.path.split("/")
        if len(segs) == 5 and segs[1] == "ns" and segs[3] == "sa":
            return segs[2], segs[4]
        return None

    @property
    def namespace(self) -> str | None:
        """The namespace of an Istio-shaped path /ns/<ns>/sa/<sa>, else None."""
        parts = self._istio_parts()
        return parts[0] if parts else None

    @property
    def service_account(self) -> str | None:
        """The service account of an Istio-shaped path /ns/<ns>/sa/<sa>, else None."""
        parts = self._istio_parts()
        return parts[1] if parts else None
