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


def test_status_text_shows_weights_steps_and_checks() -> None:
    from rich.console import Console

    from meshctl.commands.canary import render
    from registry.canary import analysis as a
    from registry.canary.runner import canary_wire
    from registry.config.model import CanaryPolicy

    c = a.start("orders", "v1", "v2", CanaryPolicy(steps=(30, 60, 100), failures=3), 0.0)
    c = a.advance(c, 30.0, a.Window(50, 1.0, 12.0), None)
    c = a.advance(c, 60.0, a.Window(50, 0.5, 12.0), None)
    console = Console(width=160, record=True, color_system=None)
    console.print(render(canary_wire(c)))
    text = console.export_text()
    for part in ("canary orders: v1 -> v2 progressing (meshctl route canary)",
                 "v1 40%, v2 60%", "30 [60] 100", "failed checks", "1/3",
                 "check at 30%", "50 requests, success 100.0%, p99 12ms: pass",
                 "check at 60%", "fail: success rate 50.00% is under 99%"):
        assert part in text, (part, text)
