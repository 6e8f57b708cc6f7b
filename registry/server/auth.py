"""Who is calling the registry API: a mesh identity (client certificate) or the operator."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from registry.ca import CertificateAuthority, SpiffeId


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
    try:
        identity = ca.verify_svid(der)
    except Exception as exc:  # SvidError and anything a malformed certificate raises
        raise web.HTTPForbidden(text=f"client certificate refused: {exc}\n") from exc
    return Caller(operator=False, identity=identity)
