"""The TLS a gateway port terminates: one server context per credentialName pair, picked by
the client's SNI among the port's HTTPS servers (Envoy's filter chain match on server
names). Contexts are kept by (name, sha256) across snapshots: reloaded only when the
registry says the files changed."""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Sequence
from pathlib import Path

from common.hostmatch import host_matches
from registry.config.model import GatewayServer

__all__ = ["CredentialError", "Credentials"]

log = logging.getLogger("meshctl.proxy.gateway")


class CredentialError(Exception):
    """A credentialName pair that cannot be loaded here (missing, unreadable, or not what
    the registry validated)."""


class Credentials:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._contexts: dict[tuple[str, str], ssl.SSLContext] = {}
        self._fronts: dict[tuple[object, ...], ssl.SSLContext] = {}

    def context(self, server: GatewayServer) -> ssl.SSLContext:
        name, digest = server.credential_name, server.credential_sha256
        assert name is not None
        key = (name, digest)
        ctx = self._contexts.get(key)
        if ctx is not None:
            return ctx
        if self.directory is None:
            raise CredentialError(f"credentialName `{name}`: this gateway was started without "
                                  "--credentials DIR (the directory holding NAME.crt/NAME.key)")
        crt, pem_key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        try:
            data = crt.read_bytes() + b"\0" + pem_key.read_bytes()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # Istio's gateway default
            ctx.load_cert_chain(crt, pem_key)
            ctx.set_alpn_protocols(["http/1.1"])
        except (OSError, ssl.SSLError) as exc:
            raise CredentialError(f"credentialName `{name}`: cannot load {crt} and "
                                  f"{pem_key}: {exc}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            # The registry read other files (another host, or a write in between): serve
            # these, but say so; the next snapshot brings the digest of what is there now.
            log.warning("credentialName `%s`: %s differs from what the registry validated",
                        name, crt)
        self._contexts = {k: v for k, v in self._contexts.items() if k[0] != name}
        self._contexts[key] = ctx
        return ctx

    def for_port(self, servers: Sequence[GatewayServer]) -> ssl.SSLContext:
        """The context a port's handshakes start on: its SNI callback switches to the
        context of the server whose hosts match the name the client asked for."""
        key = tuple((s.hosts, s.credential_name, s.credential_sha256) for s in servers)
        cached = self._fronts.get(key)
        if cached is not None:
            return cached
        pairs = [(s.hosts, self.context(s)) for s in servers]
        first = pairs[0][1]
        fallback = next((c for hosts, c in pairs if "*" in hosts), first)
        # A context of its own (not one of the servers', whose callback another port may set).
        front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        front.minimum_version = ssl.TLSVersion.TLSv1_2
        assert servers[0].credential_name is not None and self.directory is not None
        front.load_cert_chain(self.directory / f"{servers[0].credential_name}.crt",
                              self.directory / f"{servers[0].credential_name}.key")
        front.set_alpn_protocols(["http/1.1"])

        def pick(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
            if name is None:
                sslobj.context = fallback
                return None
            host = name.lower()
            for hosts, ctx in pairs:
                if any(host_matches(h, host) for h in hosts):
                    sslobj.context = ctx
                    return None
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME  # no server for that name

        front.sni_callback = pick
        if len(self._fronts) > 64:
            self._fronts.clear()
        self._fronts[key] = front
        return front
