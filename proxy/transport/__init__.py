"""Bytes and connections, below every protocol: listeners and accepted connections
(``accept``), the per-connection asyncio Protocol and the upstream pool (``streams``), the
proxy's own TLS transport (``tls``), protocol detection on undeclared ports (``detect``)
and the opaque TCP relay with half-close across the mTLS hop (``tcp``).
"""
