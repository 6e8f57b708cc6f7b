"""Benchmarks. `python -m bench` runs the data-plane suite and writes BENCHMARKS.md; the
other modules are standalone scripts (`python -m bench.<name>`) that print JSON.

The suite, in the order a run flows:
- systems: builds direct, meshctl two-hop (mTLS) and HAProxy two-hop (plain, TLS) on
  127.0.0.1, HTTP and TCP variants, pinned (load generator | proxies) with taskset;
- load: wrk at a fixed rate (lua/paced.lua, corrected for coordinated omission) and closed
  loop, with each proxy's CPU (/proc/PID/stat) and RSS sampled over the load;
- suite: repetitions interleaved A B C, A B C; medians, spreads, ratios; control-plane
  scripts (ca_issuance, push_latency) as subprocesses;
- profile: py-spy on the meshctl proxies under closed-loop load, own time per function;
- report, plots: BENCHMARKS.md and PNGs; compare: `--compare OLD.json`.

Standalone, among others: gateway (`python -m bench.gateway`): the gateway hop (https ->
gateway proxy -> mTLS -> sidecar) beside HAProxy as an edge proxy, in one lab.
"""
