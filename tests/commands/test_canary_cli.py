"""`meshctl route canary` refusals: a bad argument is one line on stderr, exit 1, and
nothing reaches the registry (none runs here: a call would say so instead)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.commands.test_route import app


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize(("args", "message"), [
    (["orders"], "say where traffic goes: meshctl route canary orders --to SUBSET"),
    (["orders", "--to", "v2", "--steps", "5,x"], "--steps `5,x` is not a list of whole percents"),
    (["orders", "--to", "v2", "--steps", "50,10"], "steps [50, 10] must rise"),
    (["orders", "--to", "v2", "--steps", "0,100"], "each weight must be 1..100"),
    (["orders", "--to", "v2", "--interval", "30"], "duration '30' has no unit"),
    (["orders", "--to", "v2", "--interval", "10ms"], "interval must be at least 0.1s"),
    (["orders", "--to", "v2", "--success-rate", "120"], "success rate 120 is not a percent"),
    (["orders", "--to", "v2", "--failures", "0"], "failures must be at least 1"),
    (["promote"], "usage: meshctl route canary promote SERVICE"),
    (["orders", "payments", "--to", "v2"], "one service at a time"),
    (["status"], "no registry is running for MESH_HOME="),
])
def test_refusals(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["route", "canary", *args])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("meshctl route canary: ") and message in line, line
