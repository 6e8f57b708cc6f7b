"""The certificate authority: who a workload is, and the certificate that proves it.

    spiffe.py     SpiffeId: parse and build `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`
    tokens.py     one-time join tokens, each bound to one SpiffeId (first join only)
    authority.py  the root key and certificate; signs CSRs into X.509-SVIDs; verifies SVIDs
    csr.py        the proxy's side: key, CSR, and reading a returned certificate

Flow: `meshctl join` redeems a token (tokens.py) for an identity, the proxy sends a CSR
(csr.py), the registry signs it with its own template (authority.py); renewals present the
current SVID instead of a token (`CertificateAuthority.verify_svid`). See docs/security-ca.md.
"""

from registry.ca.authority import CaError, CertificateAuthority, CsrError, SvidError
from registry.ca.spiffe import SpiffeId
from registry.ca.tokens import TokenError, TokenStore

__all__ = ["CaError", "CertificateAuthority", "CsrError", "SpiffeId", "SvidError", "TokenError",
           "TokenStore"]
