"""The two shapes of the registry's state store, and what each asks of the registry.

`FileState` (registry/store/files.py, the default) and `EtcdState` (cluster.py) answer the
same calls; registry/server/main.py calls them and nothing else about storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from registry.ca.authority import CertificateAuthority
from registry.config import MeshConfig
from registry.server.catalog import Catalog
from registry.server.proxies import ProxyTracker
from registry.server.snapshots import Rejection, Snapshot, SnapshotStore
from registry.store.tokens import Tokens


@dataclass(frozen=True, slots=True)
class Opened:
    """What a store held when the registry started."""

    epoch: str  # names this mesh's version sequence (a proxy seeing another one re-syncs)
    last_version: int  # versions go on after it
    restored: Snapshot | None  # the snapshot in force before this start


class Replica(Protocol):
    """The registry as a store sees it: told when it publishes, and what was published."""

    def lead(self, *, reload: bool) -> None:
        """Become the publisher: watch the config directory (reload it first if asked)."""

    def unlead(self) -> None:
        """Stop publishing: another replica does now."""

    def adopt(self, snap: Snapshot) -> None:
        """A snapshot the store has made the one in force (by this replica or another)."""

    def whoami(self) -> tuple[str, str]:
        """(replica id, API URL), once the API is bound: how other replicas and status name it."""

    def join_urls(self) -> list[str]:
        """Where proxies may reach this replica: told to proxies of the other replicas."""


class StateBackend(Protocol):
    @property
    def leading(self) -> bool:
        """Whether this replica publishes config changes now."""

    async def open(self) -> Opened: ...

    async def begin(self, replica: Replica, store: SnapshotStore) -> None:
        """Start serving: files lead at once; etcd campaigns, follows and keeps a lease."""

    def submit(self, store: SnapshotStore, config: MeshConfig) -> None:
        """Publish a valid config (only the leading replica is asked)."""

    def rejected(self, rejection: Rejection) -> None:
        """Tell the other replicas that a change was rejected (files: there are none)."""

    def catalog(self, ttl_s: float) -> Catalog:
        """The endpoints: a file (one registry), or this replica's copy of etcd's."""

    def proxies(self) -> ProxyTracker:
        """Proxies' ACK state: this registry's, or also the other replicas' (from etcd)."""

    def tokens(self) -> Tokens:
        """Where join tokens are kept (registry/store/tokens.py)."""

    async def authority(self, ca_dir: Path, trust_domain: str) -> CertificateAuthority:
        """The CA: the one under MESH_HOME (files), or the mesh's sealed in etcd."""

    async def close(self) -> None: ...

    def status(self) -> dict[str, Any] | None:
        """The replicas and the publisher, for /v1/status (None: one registry, files)."""
