"""`meshctl up` to ready, and `route set-weight` to every proxy running the new weights.

    python -m bench.up_ready [--runs 3]

Local runtime on the example shop (root: network namespaces and iptables; otherwise
explicit mode, said in the output). For each run: a fresh MESH_HOME and a copy of the
example config; the wall time of `meshctl up` (it returns once every proxy is ready and has
ACKed the current config); then `meshctl route set-weight orders v1=50 v2=50` and the time
until the registry reports every proxy ACKed the new config version; then `meshctl down`.
Prints JSON: each run's figures, the median, and the goals (issue 5: up <= 5 s, set-weight
<= 1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.commands.support import copy_example, mesh_home

MESHCTL = [sys.executable, "-m", "meshctl"]


def _run(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run([*MESHCTL, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"meshctl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _status(env: dict[str, str]) -> dict[str, Any]:
    from meshctl.client import RegistryClient

    home = Path(env["MESH_HOME"])
    result: dict[str, Any] = RegistryClient.from_home(home).call("GET", "/v1/status")
    return result


def one_run() -> dict[str, Any]:
    with mesh_home("meshctl-bench-") as cli, tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        config = copy_example(Path(tmp))
        t0 = time.monotonic()
        _run(cli.env, "up", str(config), "--runtime", "local")
        up_s = time.monotonic() - t0
        before = _status(cli.env)
        proxies = len(before["proxies"])
        t1 = time.monotonic()
        _run(cli.env, "route", "set-weight", "orders", "v1=50", "v2=50", "--config", str(config))
        deadline = t1 + 30
        while time.monotonic() < deadline:
            st = _status(cli.env)
            version = st["config_version"]
            if version > before["config_version"] and all(
                    p["acked_version"] >= version for p in st["proxies"]):
                break
            time.sleep(0.01)
        else:
            raise SystemExit("set-weight: not every proxy ACKed the new version within 30 s")
        weight_s = time.monotonic() - t1
        mode = "transparent" if os.geteuid() == 0 and "MESH_FORCE_EXPLICIT" not in cli.env \
            else "explicit"
        return {"up_s": round(up_s, 3), "set_weight_to_all_acked_s": round(weight_s, 3),
                "proxies": proxies, "mode": mode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    up = statistics.median(r["up_s"] for r in runs)
    weight = statistics.median(r["set_weight_to_all_acked_s"] for r in runs)
    print(json.dumps({"runs": runs, "median_up_s": up, "median_set_weight_s": weight,
                      "goals": {"up_s": 5.0, "set_weight_s": 1.0},
                      "met": {"up": up <= 5.0, "set_weight": weight <= 1.0}}, indent=1))


if __name__ == "__main__":
    main()
