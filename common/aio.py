"""Task helpers: the one way to start a background task (ruff bans bare create_task)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
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


async def cancel(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait until each has ended (what a clean stop does)."""
    tasks = list(tasks)
    for t in tasks:
        t.cancel()
    for t in tasks:
        try:
            await t
        except asyncio.CancelledError:
            pass
        except Exception:  # it had died before: say so, and go on stopping the others
            logging.getLogger("meshctl").exception("task %s had failed", t.get_name())
