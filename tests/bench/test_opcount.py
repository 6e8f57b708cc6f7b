"""bench.opcount: the bytecode count per request of both proxies, on a real two-hop mesh."""

from __future__ import annotations

import shutil

import pytest

from bench.opcount import measure


@pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("curl") is None,
                    reason="needs nginx and curl (apt-get install nginx-light curl)")
def test_counts_both_proxies_request_path() -> None:
    result = measure(requests=20, warmup=5)
    for role in "AB":
        r = result[role]
        names = [f["function"] for f in r["functions"]]
        # Each proxy parsed a request and a response and served them on the fast path.
        assert any(n.startswith("proxy/http1/request.py:") for n in names), names[:20]
        assert any(n.startswith("proxy/http1/response.py:") for n in names)
        assert any(n.startswith("proxy/downstream/fastpath.py:") for n in names)
        # Per request, counted after the warm-up: hundreds to thousands, not the start-up's
        # hundreds of thousands.
        assert 300 < r["opcodes_per_request"] < 20000, r["opcodes_per_request"]
        assert r["calls_per_request"] > 10
