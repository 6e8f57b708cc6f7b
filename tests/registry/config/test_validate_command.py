"""`meshctl validate`: a summary and exit 0, or every error on stderr and exit 1."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from meshctl.commands.validate import validate
from tests.example import CONFIG as EXAMPLE
from tests.registry.config.conftest import replace_in

app = typer.Typer()
app.command()(validate)
app.command("noop")(lambda: None)  # two commands, so `validate` is a sub-command as in meshctl


def test_valid_directory() -> None:
    result = CliRunner().invoke(app, ["validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.stdout and "orders" in result.stdout


def test_invalid_directory(example_copy: Path) -> None:
    replace_in(example_copy, "orders.yaml", "          weight: 10", "          weight: 20")
    replace_in(example_copy, "security.yaml", "  action: ALLOW", "  action: CUSTOM")
    result = CliRunner().invoke(app, ["validate", str(example_copy)])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == ("orders.yaml:16:9: spec.http[0].route: weights add up to 110, "
                        "not 100 (90 + 20)")
    assert lines[1] == "security.yaml:19:11: spec.action: `CUSTOM` is not supported yet"
    assert "2 error(s)" in lines[2]
