"""Immutable, versioned config snapshots and the subscribers waiting for the next one."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from registry.config import MeshConfig


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One accepted config, numbered. The wire body is rendered once, here, not per proxy."""

    version: int
    config: MeshConfig
    created_at: float
    wire: bytes = field(repr=False, compare=False)

    @classmethod
    def build(cls, version: int, config: MeshConfig) -> Snapshot:
        body = json.dumps(config.to_wire(), separators=(",", ":"), sort_keys=True).encode()
        return cls(version=version, config=config, created_at=time.time(), wire=body)


@dataclass(frozen=True, slots=True)
class Rejection:
    """The last config change that failed validation, kept for the API, metrics and `status`."""

    at: float
    errors: tuple[str, ...]


class Notifier:
    """Wakes every waiter once per change; waiters re-check state themselves."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        # Every waiter holds the old Event; swapping in a fresh one makes the next wait()
        # block again, with no race between set() and clear().
        old, self._event = self._event, asyncio.Event()
        old.set()

    async def wait(self, timeout: float) -> bool:
        """True when something changed, False after `timeout` seconds of quiet."""
        # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own, and
        # every stream waits here, so a push created (and scheduled) one task per proxy.
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


class SnapshotStore:
    """Holds the snapshot in force and tells the notifier when a new version is published.

    A change is published only when its content digest differs from the current one, so
    saving a file unchanged (or touching it) does not push a new version to every proxy.
    Versions continue from `last_version` so that they keep growing across restarts.
    """

    def __init__(self, notifier: Notifier, last_version: int = 0) -> None:
        self._notifier = notifier
        self._current: Snapshot | None = None
        self._last_version = last_version
        self.last_rejection: Rejection | None = None
        self.rejections_total = 0

    @property
    def current(self) -> Snapshot | None:
        return self._current

    @property
    def last_version(self) -> int:
        return self._last_version

    def restore(self, snap: Snapshot) -> None:
        """Put back the snapshot a previous run of the registry had in force."""
        self._current = snap
        self._last_version = max(self._last_version, snap.version)

    def adopt(self, snap: Snapshot) -> bool:
        """Put in force a snapshot numbered by the shared store (registry/store/cluster.py),
        published by this replica or another; only a newer version moves it."""
        if self._current is not None and snap.version <= self._current.version:
            return False
        self._current = snap
        self._last_version = max(self._last_version, snap.version)
        self._notifier.notify()
        return True

    def publish(self, config: MeshConfig) -> Snapshot | None:
        """Make `config` the snapshot in force; returns it, or None if nothing changed."""
        self.last_rejection = None
        if self._current is not None and self._current.config.digest == config.digest:
            return None
        self._last_version += 1
        snap = Snapshot.build(self._last_version, config)
        self._current = snap
        self._notifier.notify()
        return snap

    def reject(self, errors: tuple[str, ...]) -> None:
        """Record a rejected change; the snapshot in force does not move."""
        self.last_rejection = Rejection(at=time.time(), errors=errors)
        self.rejections_total += 1
        self._notifier.notify()
