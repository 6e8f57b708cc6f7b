"""`meshctl stat` on a mesh with a port declared `grpc`: its calls are relayed as opaque
TCP, so the tables count them as connections, and stat says so instead of showing a
silent 0 requests (issue 21). The proxies are stood in for by their pages: the config of
/config_dump and an empty /metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from meshctl.commands import stat as stat_cmd
from meshctl.launch.local import load_config
from tests.example import copy_config
from tests.registry.config.conftest import replace_in

app = typer.Typer()
app.command()(stat_cmd.stat)
app.command("noop")(lambda: None)  # two commands, so `stat` is a sub-command as in meshctl


class _Pages:
    """One proxy as stat reads it: its admin JSON pages and its metrics text."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.proxy_id = "frontend-1"
        self.config = config

    def admin_json(self, path: str, timeout: float = 5.0) -> Any:
        assert path == "/config_dump", path
        return {"proxy_id": self.proxy_id, "config": self.config}

    def metrics_text(self, timeout: float = 5.0) -> str:
        return ""


@pytest.fixture
def grpc_orders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mesh = copy_config(tmp_path / "mesh")
    replace_in(mesh, "mesh.yaml", "  orders:\n    ports:\n      - {port: 8080, protocol: http",
               "  orders:\n    ports:\n      - {port: 8080, protocol: grpc")
    proxy = _Pages(load_config(mesh).to_wire())
    monkeypatch.setattr(stat_cmd, "select", lambda *_a, **_k: [proxy])
    monkeypatch.setenv("MESH_HOME", str(tmp_path / "home"))


@pytest.mark.usefixtures("grpc_orders")
def test_stat_says_a_grpc_port_is_counted_as_tcp() -> None:
    result = CliRunner().invoke(app, ["stat", "--interval", "0", "--output", "json"])
    assert result.exit_code == 0, result.output
    (note,) = json.loads(result.stdout)["notes"]
    assert note.startswith("`orders` port 8080 (grpc) is relayed as opaque TCP: its calls are "
                           "counted as TCP connections (tcp open), not as requests")
    text = CliRunner().invoke(app, ["stat", "--interval", "0"], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    assert "note: `orders` port 8080 (grpc) is relayed as opaque TCP" in text.stdout


@pytest.mark.usefixtures("grpc_orders")
def test_stat_of_another_service_has_no_note() -> None:
    result = CliRunner().invoke(app, ["stat", "payments", "--interval", "0", "--output", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["notes"] == []
