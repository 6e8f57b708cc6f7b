"""Client side of observability, shared by `meshctl stat/top/tap/check/proxy-config/why`.

    proxies.py   find the proxies of this host (their admin and metrics listeners)
    promtext.py  parse the Prometheus text the proxies serve
    stats.py     success rate, RPS and latency quantiles from two scrapes (pure)
    tap.py       follow proxies' /tap streams
    remote.py    the proxies of other hosts, read through the registry (RegistryRelay)
    checks.py    the health checks of `meshctl check` (pure, over gathered facts)
    explain.py   `meshctl why`: the proxy's own routing and authz code run on the live config

Commands only parse options and print; everything they compute lives here.
"""
