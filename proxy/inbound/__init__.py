"""Inbound: peer proxies' mTLS connections (15006) -> SPIFFE identity -> authorization -> the app."""
