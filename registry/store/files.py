"""The default store: one registry, its state in files under MESH_HOME/registry.

The snapshot in force (snapshot.json) and the version sequence (state.json) are written
after the push, in a thread (registry/server/statefiles.py says why); what a crash in
between can cost, and how versions stay safe anyway, is in `open`.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

from common.state import atomic_write
from registry.ca.authority import CertificateAuthority
from registry.ca.tokens import TokenStore
from registry.config import MeshConfig
from registry.paths import RegistryPaths
from registry.server.catalog import Catalog
from registry.server.proxies import ProxyTracker
from registry.server.snapshots import Rejection, Snapshot, SnapshotStore
from registry.server.statefiles import StateFiles
from registry.store.backend import Opened, Replica
from registry.store.tokens import FileTokens

log = logging.getLogger("meshctl.registry")


class FileState:
    """State files of the only registry; it always publishes."""

    leading = True

    def __init__(self, paths: RegistryPaths, files: StateFiles) -> None:
        self.paths = paths
        self.files = files
        self.epoch = ""
        self._store: SnapshotStore | None = None

    async def open(self) -> Opened:
        self.epoch, last_version, clean = self._load_state()
        if not clean:
            # Versions are pushed before they are saved (statefiles.py): a crash may have
            # lost the save of the last one, which proxies may run. Skipping one number
            # keeps it from being given to other content (one at most: a push is 100 ms
            # of quiet after a save, the save a few ms after the push).
            last_version += 1
            log.warning("the last run did not stop cleanly: config versions go on from %d",
                        last_version + 1)
        return Opened(self.epoch, last_version, self._restore_snapshot())

    async def authority(self, ca_dir: Path, trust_domain: str) -> CertificateAuthority:
        return CertificateAuthority.load_or_create(ca_dir, trust_domain)

    async def begin(self, replica: Replica, store: SnapshotStore) -> None:
        self._store = store
        self._save_state(clean=False)
        replica.lead(reload=False)

    def submit(self, store: SnapshotStore, config: MeshConfig) -> None:
        self._store = store
        snap = store.publish(config)
        if snap is not None:
            self._persist_snapshot(snap)
            log.info("config version %d published (%s)", snap.version, config.digest[:12])

    def catalog(self, ttl_s: float) -> Catalog:
        return Catalog(self.paths.catalog)

    def proxies(self) -> ProxyTracker:
        return ProxyTracker()

    def tokens(self) -> FileTokens:
        return FileTokens(TokenStore(self.paths.tokens))

    def rejected(self, rejection: Rejection) -> None:
        pass  # the only registry: SnapshotStore.reject has recorded it

    async def close(self) -> None:
        await self.files.flush()
        self._save_state(clean=True)

    def status(self) -> dict[str, Any] | None:
        return None

    # -- files ---------------------------------------------------------------------------

    def _load_state(self) -> tuple[str, int, bool]:
        """(epoch, last version used, whether the last run stopped cleanly)."""
        if self.paths.state.exists():
            raw = json.loads(self.paths.state.read_text())
            # No "clean" key: written by a registry that persisted before each push.
            clean = bool(raw.get("clean", True))
            return str(raw["epoch"]), int(raw.get("last_version", 0)), clean
        return secrets.token_hex(8), 0, True

    def _state_json(self, *, clean: bool) -> bytes:
        last = self._store.last_version if self._store else 0
        return json.dumps({"epoch": self.epoch, "last_version": last, "clean": clean}).encode()

    def _save_state(self, *, clean: bool) -> None:
        atomic_write(self.paths.state, self._state_json(clean=clean))

    def _restore_snapshot(self) -> Snapshot | None:
        if not self.paths.snapshot.exists():
            return None
        raw = json.loads(self.paths.snapshot.read_text())
        return Snapshot.build(int(raw["version"]), MeshConfig.from_wire(raw["config"]))

    def _persist_snapshot(self, snap: Snapshot) -> None:
        # After the push, in a thread (statefiles.py says why; open() what a crash costs).
        self.files.write(
            self.paths.snapshot, b'{"version":%d,"config":%s}' % (snap.version, snap.wire)
        )
        self.files.write(self.paths.state, self._state_json(clean=False))
