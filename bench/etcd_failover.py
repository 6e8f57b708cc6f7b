"""How long config publishing is away when the publishing registry replica dies (docs/etcd.md).

    python -m bench.etcd_failover [--runs 5] [--how kill|term]

A three-member etcd and three registries (`--store etcd://...`) on 127.0.0.1, over one
config directory; a workload's config stream on a replica that does not publish. Each
run: the publisher is stopped (`kill`: SIGKILL, its lease must run out; `term`: SIGTERM,
a clean stop revokes it), the config is edited at once, and the time until the stream
shows the edit is measured; the stopped replica is started again before the next run.
Prints JSON: each run's seconds, the median and the maximum. Goal (issue 22): within 5 s.
Needs Debian's etcd-server (`./install.sh --test`).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration.harness import Mesh
from tests.registry.server.support import StreamFollower, join
from tests.registry.server.test_config_push import canary_weights, set_orders_weights
from tests.registry.store.etcd_support import EtcdCluster
from tests.registry.store.test_replicas import replicas, status


def measure(runs: int, how: str) -> list[float]:
    sig = signal.SIGKILL if how == "kill" else signal.SIGTERM
    took: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        etcd = EtcdCluster(Path(tmp), 3).start()
        meshes = replicas(Path(tmp), 3)
        follower: StreamFollower | None = None
        watching: Mesh | None = None
        try:
            for m in meshes:
                m.start_registry("--store", etcd.store)
            for run in range(min(runs, 30)):
                by_id = {status(m)["replicas"]["replica"]: m for m in meshes}
                publisher = by_id[status(meshes[0])["replicas"]["publisher"]]
                watcher = next(m for m in meshes if m is not publisher)
                if follower is None or watching is not watcher:
                    if follower is not None:
                        follower.close()
                    w = join(watcher, "frontend", Path(tmp) / f"w{run}")
                    follower, watching = StreamFollower(watcher, w.ctx(), f"fe-{run}"), watcher
                    follower.next_view()
                assert publisher.registry is not None
                publisher.registry.stop(sig)
                t0 = time.monotonic()
                weight = 61 + run  # a new split every run
                set_orders_weights(watcher.config, weight)
                follower.view_where(lambda v, w=weight: w in canary_weights(v), timeout=30,
                                    what=f"the edit of run {run}")  # fmt: skip
                took.append(time.monotonic() - t0)
                publisher.start_registry("--store", etcd.store)
        finally:
            if follower is not None:
                follower.close()
            for m in meshes:
                m.close()
            etcd.close()
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--how", choices=("kill", "term"), default="kill")
    a = p.parse_args()
    took = measure(a.runs, a.how)
    out: dict[str, Any] = {"how": a.how, "runs": [round(t, 3) for t in took],
                           "median_s": round(statistics.median(took), 3),
                           "max_s": round(max(took), 3)}  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
