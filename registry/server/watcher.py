"""Watches the config directory and turns each settled change into a snapshot or a rejection."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from watchfiles import awatch

from registry.config import LoadResult, load_directory

log = logging.getLogger("meshctl.registry.watch")

# istiod's PILOT_DEBOUNCE_AFTER (100 ms of quiet) and PILOT_DEBOUNCE_MAX (10 s at most):
# an editor's save (truncate, write, rename) lands as one change, and a stream of edits
# cannot starve the proxies of updates for more than 10 s.
DEBOUNCE_QUIET_MS = 100
DEBOUNCE_MAX_MS = 10_000


def _relevant(change: object, path: str) -> bool:
    name = Path(path).name
    if name.startswith(".") or name.endswith("~"):
        return False  # editor swap and backup files, our own atomic-write temporaries
    return name.endswith((".yaml", ".yml"))


async def watch(
    directory: Path,
    on_result: Callable[[LoadResult], None],
    *,
    quiet_ms: int = DEBOUNCE_QUIET_MS,
    max_ms: int = DEBOUNCE_MAX_MS,
) -> None:
    """Reload the whole directory after each debounced batch of changes; runs until cancelled."""
    async for _changes in awatch(
        directory,
        watch_filter=_relevant,
        step=quiet_ms,
        debounce=max_ms,
        recursive=False,
        force_polling=False,
    ):
        result = load_directory(directory)
        on_result(result)
