"""A one-member etcd for each test that asks for it (tests/registry/store/etcd_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry.store.etcd_support import EtcdCluster


@pytest.fixture
def etcd1(tmp_path: Path) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path, 1).start()
    yield c
    c.close()
