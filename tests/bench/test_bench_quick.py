"""`python -m bench --quick` builds every topology, loads it and writes a results JSON.

A smoke test of the harness only: it asserts that figures exist, never what they are.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bench.systems import system_names

REPO = Path(__file__).resolve().parents[2]
# Longer than the default per-test timeout (pyproject.toml): a quick bench run takes
# up to 240 s on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MISSING = [t for t in ("wrk", "haproxy", "nginx", "taskset") if shutil.which(t) is None]


@pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (apt-get install wrk "
                    "haproxy nginx-light)")
def test_quick_run_writes_results_for_every_topology(tmp_path: Path) -> None:
    out = subprocess.run(
        # 1 s loads (not --quick's 3 s): the figures' existence is what is checked here.
        [sys.executable, "-m", "bench", "--quick", "--fixed-seconds", "1",
         "--saturate-seconds", "1", "--results-dir", str(tmp_path / "results"),
         "--report", str(tmp_path / "BENCHMARKS.md"), "--plots-dir", str(tmp_path / "plots")],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    files = list((tmp_path / "results").glob("*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())
    assert set(result["runs"]) == set(system_names(("http",)))
    for name, reps in result["runs"].items():
        assert len(reps) == 1
        for load in ("fixed", "saturate"):
            assert reps[0][load]["requests"] > 0, (name, load)
            assert reps[0][load]["errors"] == 0, (name, load)
        if name != "direct":
            assert set(reps[0]["fixed"]["proxies"]) == {"A", "B"}
    assert set(result["summary"]) == set(result["runs"])
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Data plane, HTTP" in report and result["meta"]["command"] in report


@pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (apt-get install wrk "
                    "haproxy nginx-light)")
def test_netns_topology_runs_through_meshctl_up_and_leaves_nothing(tmp_path: Path) -> None:
    """As root: `meshctl up` in namespaces, wrk in the client's, 1 s loads, then all gone."""
    from bench.netns import leftovers, reason_unavailable

    why = reason_unavailable()
    if why:
        pytest.skip(f"the netns topology cannot run here: {why}")
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--topology", "netns", "--fixed-seconds", "1",
         "--saturate-seconds", "1", "--no-control-plane",
         "--results-dir", str(tmp_path / "results"), "--report", str(tmp_path / "BENCHMARKS.md"),
         "--plots-dir", str(tmp_path / "plots")],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    assert set(result["runs"]) == set(system_names(("http",), ("netns",)))
    for name, reps in result["runs"].items():
        for load in ("fixed", "saturate"):
            assert reps[0][load]["requests"] > 0, (name, load)
            assert reps[0][load]["errors"] == 0, (name, load)
            assert reps[0][load].get("non200", reps[0][load].get("non2xx")) == 0, (name, load)
        if name != "netns-direct":
            assert set(reps[0]["fixed"]["proxies"]) == {"A", "B"}
    assert "netns-meshctl-mtls-http / netns-haproxy-tls-http" in result["ratios"]
    assert "netns-meshctl-mtls-http" in result["summary"]
    assert result["summary"]["netns-meshctl-mtls-http"]["added_p50_ms"]["n"] == 1
    prefix = result["meta"]["netns"]["prefix"]
    assert prefix and leftovers(prefix) == []  # namespaces, bridge, veths, FORWARD rule
    for warning in result["meta"]["netns"]["teardown_warnings"]:
        warnings.warn(warning, stacklevel=1)  # `meshctl down` left something, the bench not
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Data plane in network namespaces, HTTP" in report
    assert "## Data plane, HTTP" not in report
