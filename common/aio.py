"""Task helpers: the one way to start a background task (ruff bans bare create_task)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

# The event loop keeps only weak references to tasks: a task nobody holds can be
# garbage-collected mid-flight. Every background task is held here until it ends.
_BACKGROUND: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any]:
    """Start `coro` as a task that lives until it finishes, even if the caller drops it."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task
