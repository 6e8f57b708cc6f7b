"""X-Forwarded-For at the edge, as Envoy does with `use_remote_address` (Istio's gateways):
the connection's source address is appended, and the client's address is the one
`trusted_hops` (Istio's `numTrustedProxies`, Envoy's `xff_num_trusted_hops`) from the right
of what the client sent."""

from __future__ import annotations

__all__ = ["forwarded_for"]


def forwarded_for(sent: bytes | None, remote: str, trusted_hops: int) -> tuple[bytes, bytes]:
    """(the X-Forwarded-For to send on, the client's address).

    With no trusted hop the client is the connection's peer; with N, the Nth address from
    the right of the header as received (the proxies in front of us appended them); with
    fewer addresses than that, Envoy falls back to the peer, and so do we."""
    peer = remote.encode()
    hops = [h.strip() for h in sent.split(b",")] if sent else []
    hops = [h for h in hops if h]
    client = hops[-trusted_hops] if 0 < trusted_hops <= len(hops) else peer
    return b", ".join((*hops, peer)), client
