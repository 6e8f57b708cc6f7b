"""How long the registry takes to stop on SIGTERM, with and without config streams open.

    python -m bench.registry_stop [--streams 10] [--runs 3] [--cap 180]

Each run: a registry on 127.0.0.1 over the example config (fresh MESH_HOME), N config
streams held open as connected proxies hold theirs (GET /v1/stream, operator credential),
then SIGTERM and the wall time until the process has exited (killed at --cap seconds).
Prints JSON: each run's seconds, and the median, for 0 and N streams. Goal (issue 18):
well under 2 s with proxies connected; systemd's TimeoutStopSec=10 in the unit.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.commands.test_proxy_join import CONFIG, _open_stream
from tests.integration.harness import Mesh


def one_run(streams: int, cap: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        mesh = Mesh(Path(tmp), CONFIG)
        reg = mesh.start_registry()
        held = [_open_stream(mesh) for _ in range(streams)]
        assert reg.p is not None
        t0 = time.monotonic()
        reg.p.send_signal(signal.SIGTERM)
        try:
            reg.p.wait(cap)
        except subprocess.TimeoutExpired:
            reg.p.kill()
            reg.p.wait()
        took = time.monotonic() - t0
        for s in held:
            s.close()
        return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cap", type=float, default=180.0)
    a = p.parse_args()
    out: dict[str, Any] = {}
    for n in (0, a.streams):
        runs = [round(one_run(n, a.cap), 3) for _ in range(a.runs)]
        out[f"{n}_streams"] = {"runs_s": runs, "median_s": statistics.median(runs)}
    out["goal_s"] = 2.0
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
