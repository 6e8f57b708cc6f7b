"""`python -m bench --quick` builds every topology, loads it and writes a results JSON.

A smoke test of the harness only: it asserts that figures exist, never what they are.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.systems import system_names

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

MISSING = [t for t in ("wrk", "haproxy", "nginx", "taskset") if shutil.which(t) is None]


@pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (apt-get install wrk "
                    "haproxy nginx-light)")
def test_quick_run_writes_results_for_every_topology(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results-dir", str(tmp_path / "results"),
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
