"""The certificate authority: who a workload is, and the certificate that proves it.

    spiffe.py     SpiffeId: parse and build `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`
    tokens.py     one-time join tokens, each bound to one SpiffeId (first join only)
    authority.py  the root key and certificate; signs CSRs into X.509-SVIDs; verifies SVIDs
    csr.py        the proxy's side: key, CSR, and reading a returned certificate

Flow: `meshctl join` redeems a token (tokens.py) for an identity, the proxy sends a CSR
(csr.py), the registry signs it with its own template (authority.py); renewals present the
current SVID instead of a token (`CertificateAuthority.verify_svid`). See docs/security-ca.md.
"""

from typing import TYPE_CHECKING

from registry.ca.spiffe import SpiffeId
from registry.lazy import lazy_attributes

if TYPE_CHECKING:
    from registry.ca.authority import CaError, CertificateAuthority, CsrError, SvidError
    from registry.ca.tokens import TokenError, TokenStore

# The authority and the token store (and `cryptography` under them) are imported on first
# use: a proxy only needs SpiffeId, and would otherwise carry the X.509 library in its RSS.
_LAZY = {
    "CaError": "registry.ca.authority",
    "CertificateAuthority": "registry.ca.authority",
    "CsrError": "registry.ca.authority",
    "SvidError": "registry.ca.authority",
    "TokenError": "registry.ca.tokens",
    "TokenStore": "registry.ca.tokens",
}


__getattr__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = ["CaError", "CertificateAuthority", "CsrError", "SpiffeId", "SvidError", "TokenError",
           "TokenStore"]
