"""Who is calling the registry API: a mesh identity (client certificate) or the operator."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from aiohttp import web

from registry.ca import CertificateAuthority, SpiffeId
from registry.ca.csr import load_cert


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the operator, or a workload with its SPIFFE ID."""

    operator: bool
    identity: SpiffeId | None

    @property
    def service(self) -> str | None:
        return self.identity.service_account if self.identity else None


def caller_of(request: web.Request, ca: CertificateAuthority, operator_token: str) -> Caller:
    """Authenticate a request or raise 401/403. Only join is open to anyone (it checks a token)."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        if hmac.compare_digest(auth[7:].strip().encode(), operator_token.encode()):
            return Caller(operator=True, identity=None)
        raise web.HTTPForbidden(
            text="operator credential refused: use the token in MESH_HOME/registry/operator.token\n"
        )
    ssl_obj = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
    if not der:
        raise web.HTTPUnauthorized(
            text="a mesh identity (client certificate) or the operator credential is required\n"
        )
    return Caller(operator=False, identity=_verified(ca, der))


# A proxy sends every ACK and heartbeat with the same certificate over a kept-alive
# connection; checking it again each time (an ECDSA verify and an X.509 parse, about a third
# of the registry's CPU while 100 proxies ACK a push) learns nothing new. The result is kept
# per exact certificate bytes and CA, until the certificate's notAfter; then it is checked
# again, which refuses it with the usual message.
_VERIFIED: dict[tuple[bytes, bytes], tuple[SpiffeId, float]] = {}
_VERIFIED_MAX = 4096


def _verified(ca: CertificateAuthority, der: bytes) -> SpiffeId:
    key = (ca.bundle_pem, der)
    hit = _VERIFIED.get(key)
    if hit is not None and time.time() < hit[1]:
        return hit[0]
    try:
        identity = ca.verify_svid(der)
        not_after = load_cert(der).not_valid_after_utc.timestamp()
    except Exception as exc:  # SvidError and anything a malformed certificate raises
        _VERIFIED.pop(key, None)
        raise web.HTTPForbidden(text=f"client certificate refused: {exc}\n") from exc
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()  # renewed certificates replace old ones; start over, rarely
    _VERIFIED[key] = (identity, not_after)
    return identity
