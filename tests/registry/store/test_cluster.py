"""EtcdState against a real etcd, in-process: version allocation and the publisher fence."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from registry.config import MeshConfig, load_directory
from registry.server.snapshots import Notifier, Snapshot, SnapshotStore
from registry.store import parse_store
from registry.store.cluster import EtcdState
from tests.example import CONFIG
from tests.registry.server.test_config_push import set_orders_weights
from tests.registry.store.etcd_support import EtcdCluster

pytestmark = pytest.mark.etcd


class FakeReplica:
    """What EtcdState calls back, recorded."""

    def __init__(self, name: str) -> None:
        self.name, self.leading, self.adopted = name, False, []  # type: ignore[var-annotated]

    def lead(self, *, reload: bool) -> None:
        self.leading = True

    def unlead(self) -> None:
        self.leading = False

    def adopt(self, snap: Snapshot) -> None:
        self.adopted.append(snap.version)

    def whoami(self) -> tuple[str, str]:
        return self.name, f"https://{self.name}"

    def join_urls(self) -> list[str]:
        return [f"https://{self.name}"]


def configs(tmp: Path, weights: list[int]) -> list[MeshConfig]:
    out = []
    for w in weights:
        d = tmp / f"cfg{w}"
        shutil.copytree(CONFIG, d)
        set_orders_weights(d, w)
        cfg = load_directory(d).config
        assert cfg is not None
        out.append(cfg)
    return out


async def until(pred: Any, what: str, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting until {what}")


def test_racing_publishes_get_distinct_consecutive_versions(tmp_path: Path,
                                                           etcd1: EtcdCluster) -> None:
    cfgs = configs(tmp_path, [91, 92, 93, 94, 95, 96])

    async def run() -> list[int]:
        st, rep = EtcdState(parse_store(etcd1.store)), FakeReplica("a")
        await st.open()
        await st.begin(rep, SnapshotStore(Notifier()))
        await until(lambda: rep.leading, "a leads")
        snaps = await asyncio.gather(*(st._publish(c) for c in cfgs))
        await st.close()
        return [s.version for s in snaps if s is not None]

    versions = asyncio.run(run())
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]


def test_a_publisher_that_lost_its_role_cannot_write(tmp_path: Path,
                                                      etcd1: EtcdCluster) -> None:
    first, late = configs(tmp_path, [80, 60])

    async def run() -> tuple[dict[str, Any], bool]:
        spec = parse_store(etcd1.store)
        a, b = EtcdState(spec), EtcdState(spec)
        ra, rb = FakeReplica("a"), FakeReplica("b")
        for st, rep in ((a, ra), (b, rb)):
            await st.open()
            await st.begin(rep, SnapshotStore(Notifier()))
        await until(lambda: ra.leading, "a leads")
        assert await a._publish(first) is not None  # version 1
        # The role taken from `a` without its lease ending (an operator's delete, or a
        # lease etcd expired while `a` was paused): `b` is elected, `a` has not noticed.
        await a.client.delete(a.k_publisher)
        await until(lambda: rb.leading, "b leads")
        assert ra.leading and a.leading
        stale = await a._publish(late)
        await until(lambda: not ra.leading, "a steps down once fenced out")
        kv, _ = await a.client.get(a.k_config)
        assert kv is not None
        for st in (a, b):
            await st.close()
        return json.loads(kv.value), stale is None

    stored, refused = asyncio.run(run())
    assert refused
    assert (stored["version"], stored["digest"]) == (1, first.digest)
