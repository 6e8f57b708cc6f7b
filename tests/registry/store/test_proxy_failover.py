"""A proxy knows every registry replica and moves to another when its own dies."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from common.aio import spawn
from proxy.control.client import ControlClient, View
from registry.ca.joinstring import parse
from tests.integration.harness import Mesh
from tests.registry.server.support import bundle, mint, op
from tests.registry.server.test_config_push import set_orders_weights
from tests.registry.server.test_stream_ack import until
from tests.registry.store.etcd_support import EtcdCluster
from tests.registry.store.test_replicas import close_all, replicas

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


def _status(m: Mesh) -> dict[str, Any]:
    return dict(op(m, "GET", "/v1/status")[1])


async def test_a_proxy_moves_to_another_replica_when_its_own_dies(
        tmp_path: Path, etcd1: EtcdCluster) -> None:  # fmt: skip
    meshes = replicas(tmp_path, 2)
    c: ControlClient | None = None
    task = None
    try:
        for m in meshes:
            await asyncio.to_thread(m.start_registry, "--store", etcd1.store)
        a, b = meshes
        await until(lambda: len(_status(a)["replicas"]["replicas"]) == 2, "A sees both replicas")
        # The join string minted at A names both replicas, A first.
        code, made = await asyncio.to_thread(op, a, "POST", "/v1/tokens", {"service": "orders"})
        assert code == 200, made
        urls = parse(made["join"]).registry
        assert urls[0] == a.url and b.url in urls, urls

        (tmp_path / "proxy").mkdir()
        c = ControlClient(a.url, bundle(a), tmp_path / "proxy", "orders-1")
        await c.join(await asyncio.to_thread(mint, a, "orders"))
        joined = c.identity
        applied: list[int] = []

        def apply(view: View) -> str | None:
            applied.append(view.config_version)
            return None

        task = spawn(c.stream_loop(apply))
        await until(lambda: c is not None and c.acked_version == 1 and b.url in c.urls,
                    "version 1 ACKed at A, and B's URL told on the stream")  # fmt: skip

        assert a.registry is not None
        a.registry.stop(signal.SIGKILL)
        await until(lambda: c is not None and c.url == b.url and c.connected,
                    "the proxy's stream moved to B")  # fmt: skip
        # B knows at once what the proxy runs (the stream says it): version 1, ACKed.
        await until(lambda: [p for p in _status(b)["proxies"] if p["proxy_id"] == "orders-1"
                             and p["acked_version"] == 1 and "replica" not in p],
                    "B holds the proxy's row at version 1")  # fmt: skip
        await asyncio.to_thread(set_orders_weights, b.config, 70)
        # B publishes once A's lease is gone (docs/etcd.md), and pushes to the proxy.
        await until(lambda: c is not None and c.acked_version == 2, "version 2 ACKed at B",
                    timeout=25)  # fmt: skip
        # Resumed at its version, never back to 0 (the epoch is the same), and no re-join;
        # its certificate from A renews at B. (B may send version 1 again with its own
        # catalog version: docs/etcd.md, "The catalog".)
        assert applied[0] == 1 and applied[-1] == 2 and min(applied) == 1, applied
        assert c.identity is joined
        row = [p for p in _status(b)["proxies"] if p["proxy_id"] == "orders-1"]
        assert row and row[0]["acked_version"] == 2 and row[0]["connected"], row
        assert "replica" not in row[0], row  # held by B itself
        await c.renew()
        assert c.renewals == 1
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if c is not None:
            await c.close()
        close_all(meshes)
