"""Automated canary: the registry moves a service's traffic to a new version step by step,
checking each step against the proxies' metrics, and promotes it or rolls it back.

    analysis.py  the state machine (pure, injected clock): steps, checks, failures, outcome
    metrics.py   one subset's requests, success rate and p99 between two scrapes (pure)
    runner.py    the asyncio loop in the registry: scrape, judge, edit the weights, persist
    api.py       /v1/canaries: start, status, promote, abort (operator only)

Started by `meshctl route canary` or declared in the config (kind: Canary,
registry/config/canary.py); docs/canary.md explains it.
"""
