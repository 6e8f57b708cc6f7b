"""The proxy's workload identity: its key, its SVID, the trust bundle, TLS contexts from them."""

from __future__ import annotations

import contextlib
import os
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.state import atomic_write, ensure_dir
from proxy import certinfo
from registry.ca.spiffe import SpiffeId

# Every proxy-to-proxy hop is TLS 1.3 with certificates on both sides (mTLS).
TLS_MIN = ssl.TLSVersion.TLSv1_3


class PeerIdentityError(ConnectionError):
    """The peer proxy's certificate names another workload than the one dialled.

    Defined here, outside the compiled core (proxy/compiled): mypyc cannot compile a
    subclass of ConnectionError, and a ConnectionError is what the connect path handles."""


@dataclass(frozen=True, slots=True)
class Identity:
    """One issued SVID with its key. Immutable: a renewal makes a new Identity and new contexts.

    Connections already open keep the context they were made with; new ones use the new
    one, so a renewal never drops a connection.
    """

    spiffe_id: SpiffeId
    cert_pem: bytes = field(repr=False)
    bundle_pem: bytes = field(repr=False)
    not_after: datetime
    client_ctx: ssl.SSLContext = field(repr=False)  # outbound: pools are keyed by Identity

    @classmethod
    def build(cls, key_file: Path, cert_pem: bytes, bundle_pem: bytes, files_dir: Path) -> Identity:
        """Move the new key (written 0600 by proxy/control/keygen.py) beside its certificate
        and the bundle, where OpenSSL loads them, and make both contexts."""
        ensure_dir(files_dir)
        certinfo.read(cert_pem)  # a malformed certificate is refused before anything moves
        os.replace(key_file, files_dir / "svid.key")
        atomic_write(files_dir / "svid.crt", cert_pem, mode=0o644)
        atomic_write(files_dir / "bundle.crt", bundle_pem, mode=0o644)
        return cls.load(files_dir)

    @classmethod
    def load(cls, files_dir: Path) -> Identity:
        """The SVID a previous run left in `files_dir` (by `build`), to reuse after a restart.
        OSError or ValueError when it is missing or unreadable."""
        key_path, cert_path = files_dir / "svid.key", files_dir / "svid.crt"
        cert_pem = cert_path.read_bytes()
        bundle_pem = (files_dir / "bundle.crt").read_bytes()
        info = certinfo.read(cert_pem)
        try:
            ctx = load_identity(tls_context(server=False), cert_path, key_path, bundle_pem)
        except ssl.SSLError as exc:
            raise ValueError(f"{files_dir}: the key does not fit the certificate ({exc})") from None
        return cls(
            spiffe_id=_one_spiffe_id(info),
            cert_pem=cert_pem,
            bundle_pem=bundle_pem,
            not_after=info.not_after,
            client_ctx=ctx,
        )

    def lifetime_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(UTC))).total_seconds()


class DirectSSLObject(ssl.SSLObject):
    """What `wrap_bio` makes for the proxies' connections: an `ssl.SSLObject` whose `read`,
    `write` and `pending` are the C methods of the `_ssl` object under it.

    The stdlib's `SSLObject.read`/`write`/`pending` are Python functions that only pass the
    call on. The event loop's TLS layer (uvloop's and asyncio's sslproto) calls them once or
    twice per record each way: two to four interpreted frames per request and hop, about
    1.3 % of a compiled proxy's CPU at saturation (perf), and the last interpreted code on
    proxy A's path. Bound to the instance, the same calls go straight to C with the same
    arguments, results and exceptions. `SSLContext.sslobject_class` is the documented hook for the
    class; `_create` is the stdlib's constructor for it (3.7 to 3.13), extended here."""

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> DirectSSLObject:
        self: DirectSSLObject = super()._create(*args, **kwargs)  # type: ignore[misc]
        c = self._sslobj  # type: ignore[attr-defined]
        self.read = c.read  # type: ignore[method-assign]
        self.write = c.write  # type: ignore[method-assign]
        self.pending = c.pending  # type: ignore[method-assign]
        return self


def tls_context(server: bool) -> ssl.SSLContext:
    """A proxy-to-proxy TLS context with no certificate yet: TLS 1.3 only, the peer's
    certificate required, the SNI remembered on the server side, DirectSSLObject."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.sslobject_class = DirectSSLObject
    ctx.minimum_version = TLS_MIN
    ctx.verify_mode = ssl.CERT_REQUIRED
    # SVIDs carry no DNS names: the peer is checked by its SPIFFE ID (peer_identity), not by
    # hostname, as every SPIFFE-aware TLS client does.
    ctx.check_hostname = False
    if server:
        ctx.sni_callback = _remember_sni
    return ctx


def load_identity(ctx: ssl.SSLContext, cert: Path, key: Path, bundle_pem: bytes) -> ssl.SSLContext:
    """Give `ctx` the SVID (certificate chain and key) and the trust bundle; returns it."""
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cadata=bundle_pem.decode())
    return ctx


def _remember_sni(sslobj: object, server_name: str | None, ctx: ssl.SSLContext) -> None:
    # The client names the service and port it wants in SNI (see sni_for); the inbound
    # proxy reads it back after the handshake.
    with contextlib.suppress(AttributeError):
        sslobj.meshctl_sni = server_name  # type: ignore[attr-defined]
    return None


def sni_for(service: str, port: int, namespace: str, tcp: bool = False) -> str:
    """SNI the outbound proxy sends: which service port behind the peer proxy it wants, and
    (for a port whose protocol was detected rather than declared) which protocol it found:
    `p8080.orders.default.meshctl` for HTTP, `t5432.db.default.meshctl` for opaque TCP."""
    return f"{'t' if tcp else 'p'}{port}.{service}.{namespace}.meshctl"


def parse_sni(name: str | None) -> tuple[str, int, str] | None:
    """(service, port, "http" | "tcp") from sni_for(), or None."""
    if not name:
        return None
    parts = name.split(".")
    if len(parts) != 4 or parts[3] != "meshctl" or parts[0][:1] not in ("p", "t"):
        return None
    try:
        return parts[1], int(parts[0][1:]), "tcp" if parts[0][0] == "t" else "http"
    except ValueError:
        return None


_PEER_CACHE: dict[bytes, SpiffeId | None] = {}


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> SpiffeId | None:
    """The SPIFFE ID of a verified TLS peer (OpenSSL already checked the chain), or None.

    Parsed once per distinct certificate: a pooled peer presents the same DER every time.
    """
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    if der in _PEER_CACHE:
        return _PEER_CACHE[der]
    try:
        ident: SpiffeId | None = _workload_identity(certinfo.read(der))
    except ValueError:
        ident = None
    if len(_PEER_CACHE) > 4096:
        _PEER_CACHE.clear()
    _PEER_CACHE[der] = ident
    return ident


def _workload_identity(cert: certinfo.CertInfo) -> SpiffeId | None:
    """An X509-SVID leaf names a workload: never a CA (cA must be false, X509-SVID 4.1) and
    never the bare trust domain (a SPIFFE ID with a path, 2.)."""
    if cert.is_ca:
        return None
    ident = _one_spiffe_id(cert)
    return ident if ident.is_workload else None


def _one_spiffe_id(cert: certinfo.CertInfo) -> SpiffeId:
    """The SPIFFE ID in the one URI SAN (X509-SVID 2: exactly one, else reject), as
    registry/ca/csr.py spiffe_id_of reads it on the registry's side."""
    if len(cert.uris) != 1:
        raise ValueError(f"certificate has {len(cert.uris)} URI SANs; an SVID has exactly one")
    return SpiffeId.parse(cert.uris[0])
