"""State files: written in a thread after the push, latest content wins, nothing half-written."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from registry.server.statefiles import StateFiles


async def test_latest_content_wins_and_flush_waits_for_it(tmp_path: Path) -> None:
    files = StateFiles()
    snapshot, state = tmp_path / "snapshot.json", tmp_path / "state.json"
    for v in range(1, 6):
        files.write(snapshot, b'{"version":%d}' % v)
        files.write(state, b'{"last_version":%d}' % v)
    await files.flush()
    assert json.loads(snapshot.read_bytes()) == {"version": 5}
    assert json.loads(state.read_bytes()) == {"last_version": 5}
    assert sorted(os.listdir(tmp_path)) == ["snapshot.json", "state.json"]  # no temporaries
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600


async def test_a_failed_write_is_logged_and_the_next_one_still_happens(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = StateFiles()
    files.write(tmp_path / "no-such-dir" / "x" / "state.json", b"{}")
    (tmp_path / "no-such-dir").write_text("a file where a directory should be")
    await files.flush()
    assert "could not save" in caplog.text
    files.write(tmp_path / "state.json", b"{}")
    await files.flush()
    assert (tmp_path / "state.json").read_bytes() == b"{}"


async def test_flush_with_nothing_written() -> None:
    await StateFiles().flush()
