"""Outbound: the app's connections to other services, over mTLS to the destination's proxy.

accept (15001 transparent, or one explicit listener per upstream) -> which service
(original destination or the listener) -> protocol (mesh.yaml port) -> HTTP: route ->
fault -> retry/timeout -> pick an endpoint -> pooled mTLS connection; TCP: relay bytes.
"""
