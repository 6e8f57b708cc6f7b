"""VmRSS of a sidecar proxy while it serves load: a quick check of the 40 MB goal.

Starts a registry, an `orders` app and two proxies (frontend with an explicit upstream,
orders in front of its app) on 127.0.0.1, drives requests through both for a few seconds
from a few threads, and prints the largest VmRSS of each proxy seen meanwhile, in MiB.
`python -m bench` measures the same thing at a fixed rate; this takes 15 s, not 35.

    .venv/bin/python tools/proxy_rss.py [--seconds 8] [--threads 4]
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.harness import REPO, Mesh, free_port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mesh = Mesh(Path(tmp), REPO / "examples" / "compose" / "mesh")
        try:
            mesh.start_registry()
            _, app_port = mesh.app("orders")
            orders = mesh.proxy("orders", app_port=app_port)
            local = free_port()
            front = mesh.proxy("frontend", upstreams={"orders:8080": local})
            procs = {"frontend": front["proc"].p, "orders": orders["proc"].p}
            peak = {k: rss_kib(p.pid) for k, p in procs.items()}
            idle = dict(peak)
            stop = time.monotonic() + args.seconds
            done = [0]

            def load() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", local, timeout=5)
                while time.monotonic() < stop:
                    conn.request("GET", "/echo")
                    conn.getresponse().read()
                    done[0] += 1

            threads = [threading.Thread(target=load) for _ in range(args.threads)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for k, p in procs.items():
                    peak[k] = max(peak[k], rss_kib(p.pid))
                time.sleep(0.1)
            for k in procs:
                print(f"{k:9} idle {idle[k] / 1024:5.1f} MiB, under load {peak[k] / 1024:5.1f} MiB")
            print(f"requests: {done[0]} in {args.seconds:.0f} s")
        finally:
            mesh.close()


if __name__ == "__main__":
    main()
