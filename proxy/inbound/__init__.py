"""Inbound: peer proxies' mTLS (15006) -> SPIFFE identity -> authorization -> the app."""
