"""Pieces every process shares, below meshctl/, proxy/ and registry/ (imports point down).

`aio` (the one way to start a background task), `state` (MESH_HOME and atomic,
permission-safe writes), `promtext` (the Prometheus text writer), `vip` (a service's
virtual IP), `sdnotify` (READY=1 to systemd). Nothing here imports meshctl, proxy or
registry.
"""
