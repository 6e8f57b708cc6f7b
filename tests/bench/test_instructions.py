"""bench.instructions: instructions per request of both proxies, counted by callgrind."""

from __future__ import annotations

import shutil

import pytest

from bench.instructions import measure
from proxy import compiled


@pytest.mark.skipif(
    shutil.which("valgrind") is None or shutil.which("nginx") is None
    or shutil.which("curl") is None,
    reason="needs valgrind, nginx and curl (apt-get install valgrind nginx-light curl; "
           "install.sh --test installs them)",
)
def test_counts_instructions_per_request_of_both_proxies() -> None:
    result = measure(requests=20, warmup=5)
    assert result["compiled"] is True
    for role in "AB":
        r = result[role]
        names = {f["function"] for f in r["functions"]}
        # Counted from the warm-up's end: tens to hundreds of thousands per request, not the
        # start-up's hundreds of millions (instrumentation off until then).
        assert 20_000 < r["ir_per_request"] < 5_000_000, r["ir_per_request"]
        assert "uv_run" in names  # the event loop, inclusive of the whole request path
        if compiled.STATUS.compiled:  # the compiled core's functions, by their C names
            assert "CPyDef_stream___StreamParser____parse" in names, sorted(names)[:40]
        top = r["functions"][0]
        assert top["ir"] <= r["ir_per_request"] * 1.001  # inclusive: nothing above the total
