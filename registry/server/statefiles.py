"""State files written in a worker thread, off the push's path; the latest content wins.

Persisting a new snapshot (snapshot.json, state.json: write, fsync, rename, fsync of the
directory) took 1 to 20 ms on the shared CI disk with test suites running, and even the
rename alone 1 to 4 ms (ext4 flushes the data of a file renamed over another): time spent
between a file save and the proxies, who already wait 100 ms of quiet. So the registry
pushes first and persists in a thread, one batch at a time; `flush()` waits for it (clean
stop). What a crash in between could lose, and how the version sequence stays safe
anyway, is in main.Registry.start (an unclean stop skips one version number).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from common.aio import spawn
from common.state import atomic_write

log = logging.getLogger("meshctl.registry.state")


class StateFiles:
    """Queues whole-file writes; a worker thread does them with atomic_write, in order."""

    def __init__(self) -> None:
        self._pending: dict[Path, tuple[bytes, int]] = {}
        self._writing: asyncio.Task[Any] | None = None

    def write(self, path: Path, data: bytes, mode: int = 0o600) -> None:
        """Have `path` hold `data` soon; a later write of the same path replaces this one."""
        self._pending.pop(path, None)  # keep the order of the latest writes
        self._pending[path] = (data, mode)
        if self._writing is None or self._writing.done():
            self._writing = spawn(self._drain(), name="state files")

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                await asyncio.to_thread(_write_all, batch)
            except OSError as exc:  # disk full, permissions: say so, keep serving
                log.error("could not save %s: %s", ", ".join(map(str, batch)), exc)

    async def flush(self) -> None:
        """Wait until every write asked for so far is on disk (fsynced)."""
        while self._writing is not None and not self._writing.done():
            await asyncio.shield(self._writing)


def _write_all(batch: dict[Path, tuple[bytes, int]]) -> None:
    for path, (data, mode) in batch.items():
        atomic_write(path, data, mode=mode)
