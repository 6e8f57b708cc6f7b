"""Pieces every process shares, below meshctl/, proxy/ and registry/ (imports point down).

`aio` (the one way to start a background task), `state` (MESH_HOME and atomic,
permission-safe writes), `promtext` (the Prometheus text writer), `vip` (a service's
virtual IP), `sdnotify` (READY=1 to systemd), and the read side of the proxies' metrics
that `meshctl stat` and the registry's canary analysis share: `promparse` (the text format
parsed), `proxies` (this host's proxies and their admin ports), `stats` (golden metrics from
scrapes). Nothing here imports meshctl, proxy or registry.
"""
