"""How long a proxy is without a registry when its replica dies (docs/etcd.md).

    python -m bench.etcd_proxy_failover [--runs 5] [--how kill|term]

A three-member etcd and three registries (`--store etcd://...`) on 127.0.0.1; a proxy's
control client (proxy/control/client.py, the real one, in this process) follows the
config stream of a replica that does not publish, so the publisher's election is not
measured (bench/etcd_failover.py measures that). Each run: that replica is stopped, and
two times are taken: until the client's stream is open on another replica, and until a
config edit made at that moment is ACKed there. The stopped replica is started again.
Prints JSON. Needs Debian's etcd-server (`./install.sh --test`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common.aio import spawn
from proxy.control.client import ControlClient, View
from tests.registry.server.support import bundle, mint
from tests.registry.server.test_config_push import set_orders_weights
from tests.registry.store.etcd_support import EtcdCluster
from tests.registry.store.test_replicas import replicas, status


async def _until(pred: Any, what: str, timeout: float = 30.0) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"no {what} within {timeout:g} s")
        await asyncio.sleep(0.01)
    return time.monotonic()


async def measure(runs: int, how: str) -> list[tuple[float, float]]:
    sig = signal.SIGKILL if how == "kill" else signal.SIGTERM
    out: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        etcd = EtcdCluster(Path(tmp), 3).start()
        meshes = replicas(Path(tmp), 3)
        client: ControlClient | None = None
        task = None
        try:
            for m in meshes:
                await asyncio.to_thread(m.start_registry, "--store", etcd.store)
            by_url = {m.url: m for m in meshes}
            first = meshes[1]  # not the publisher: it started after meshes[0] was elected
            (Path(tmp) / "proxy").mkdir()
            client = ControlClient(first.url, bundle(first), Path(tmp) / "proxy", "orders-b")
            await client.join(await asyncio.to_thread(mint, first, "orders"))

            def apply(view: View) -> str | None:
                return None

            task = spawn(client.stream_loop(apply))
            c = client
            await _until(lambda: c.acked_version >= 1 and len(c.urls) >= 3, "first view")
            for run in range(min(runs, 30)):
                on = by_url[c.url]
                publisher = status(meshes[0])["replicas"]["publisher"]
                if status(on)["replicas"]["replica"] == publisher:
                    raise RuntimeError("the proxy follows the publisher: the run would time "
                                       "an election too")  # fmt: skip
                assert on.registry is not None
                version = c.acked_version
                on.registry.stop(sig)
                t0 = time.monotonic()
                moved = await _until(lambda on=on: c.connected and c.url != on.url, "move")
                await asyncio.to_thread(set_orders_weights, meshes[0].config, 61 + run)
                acked = await _until(lambda v=version: c.acked_version > v, "ACK of the edit")
                out.append((moved - t0, acked - t0))
                await asyncio.to_thread(on.start_registry, "--store", etcd.store)
                if by_url[c.url] is meshes[0]:  # moved onto the publisher: move it off
                    spare = next(m for m in meshes[1:] if m.url != c.url)
                    c.url = spare.url  # the next stream goes there
                    c.connected = False
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    task = spawn(c.stream_loop(apply))
                    await _until(lambda s=spare: c.connected and c.url == s.url, "re-seat")
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if client is not None:
                await client.close()
            for m in meshes:
                m.close()
            etcd.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--how", choices=("kill", "term"), default="kill")
    a = p.parse_args()
    took = asyncio.run(measure(a.runs, a.how))
    moved = [t[0] for t in took]
    acked = [t[1] for t in took]
    out: dict[str, Any] = {
        "how": a.how,
        "moved_s": [round(t, 3) for t in moved], "acked_s": [round(t, 3) for t in acked],
        "moved_median_s": round(statistics.median(moved), 3), "moved_max_s": round(max(moved), 3),
        "acked_median_s": round(statistics.median(acked), 3), "acked_max_s": round(max(acked), 3),
    }  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
