"""`meshctl route set-weight|show` through CliRunner: output, JSON, refusals, config dirs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from meshctl.commands import route
from registry.config import load_directory
from tests.example import copy_config

app = typer.Typer()
app.add_typer(route.app, name="route")


@pytest.fixture
def mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example config, with no MESH_CONFIG and an empty MESH_HOME."""
    target = copy_config(tmp_path / "mesh")
    monkeypatch.delenv("MESH_CONFIG", raising=False)
    monkeypatch.setenv("MESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    return target


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["route", *args])


def weights(directory: Path) -> list[tuple[str | None, int]]:
    config = load_directory(directory).config
    assert config is not None
    vs = config.virtual_service_for("orders")
    assert vs is not None
    return [(d.destination.subset, d.weight) for d in vs.http[0].route]


# --- set-weight ---------------------------------------------------------------------------


def test_set_weight_writes_and_reports(mesh: Path) -> None:
    before = (mesh / "orders.yaml").read_text()
    mode = 0o640
    os.chmod(mesh / "orders.yaml", mode)
    result = run("set-weight", "orders", "v1=50", "v2=50", "--config", str(mesh))
    assert result.exit_code == 0, result.output
    assert "90% -> 50%" not in result.stdout  # a table, not arrows
    assert "v1" in result.stdout and "50%" in result.stdout and "written" in result.stdout
    assert (mesh / "orders.yaml").read_text() == before.replace("weight: 90", "weight: 50").replace(
        "weight: 10", "weight: 50"
    )
    assert (mesh / "orders.yaml").stat().st_mode & 0o777 == mode
    assert weights(mesh) == [("v1", 50), ("v2", 50)]
    assert not [p for p in mesh.iterdir() if p.name.startswith(".")]  # no temp file left


def test_set_weight_json(mesh: Path) -> None:
    result = run("set-weight", "orders", "v1=100", "-c", str(mesh), "--output", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["service"] == "orders"
    assert data["file"] == str(mesh / "orders.yaml")
    assert data["old"] == {"v1": 90, "v2": 10}
    assert data["new"] == {"v1": 100, "v2": 0}
    assert data["changed"] is True and data["dry_run"] is False
    assert weights(mesh) == [("v1", 100), ("v2", 0)]


def test_dry_run_prints_the_diff_and_writes_nothing(mesh: Path) -> None:
    path = mesh / "orders.yaml"
    raw, mtime = path.read_bytes(), path.stat().st_mtime_ns
    result = run("set-weight", "orders", "v1=80", "v2=20", "-c", str(mesh), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "-          weight: 90" in result.stdout
    assert "+          weight: 80" in result.stdout
    assert "nothing was written" in result.stdout
    assert path.read_bytes() == raw and path.stat().st_mtime_ns == mtime
    data = json.loads(
        run(
            "set-weight", "orders", "v1=80", "v2=20", "-c", str(mesh), "--dry-run", "-o", "json"
        ).stdout
    )
    assert data["dry_run"] is True and "+          weight: 20" in data["diff"]
    assert path.read_bytes() == raw


def test_unchanged_weights_write_nothing(mesh: Path) -> None:
    path = mesh / "orders.yaml"
    mtime = path.stat().st_mtime_ns
    result = run("set-weight", "orders", "v1=90", "v2=10", "-c", str(mesh))
    assert result.exit_code == 0 and "nothing to do" in result.stdout
    assert path.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["orders", "v1=90", "v3=10"],
            "unknown subset `v3` of `orders`: DestinationRule `orders` "
            "(orders.yaml:26:1) defines: v1, v2",
        ),
        (["orders", "v1=90", "v2=20"], "weights add up to 110, not 100 (v1=90 + v2=20)"),
        (["orders", "v1=110", "v2=-10"], "weight 110 for `v1` is over 100"),
        (["orders", "v2=-10", "v1=110"], "weight `-10` for `v2` is negative"),
        (["orders", "v1=90.5", "v2=9.5"], "weight `90.5` for `v1` is not a whole number"),
        (["orders", "v1=50", "v1=50"], "subset `v1` is given twice"),
        (["orders", "v1", "90"], "`v1` is not SUBSET=WEIGHT"),
        (["orders", "v1=100", "--route", "main"], "has no http route `main`; its routes: canary"),
        (["payments", "v1=100"], "no VirtualService routes `payments`: create one"),
        (["ordrs", "v1=100"], "unknown service `ordrs` (did you mean `orders`?)"),
    ],
)
def test_refusals_leave_the_file_untouched(mesh: Path, args: list[str], message: str) -> None:
    path = mesh / "orders.yaml"
    raw, mtime = path.read_bytes(), path.stat().st_mtime_ns
    files = sorted(p.name for p in mesh.iterdir())
    assert "orders.yaml" in files
    result = run("set-weight", *args, "--config", str(mesh))
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("meshctl route set-weight: ")
    assert message in lines[0]
    assert path.read_bytes() == raw and path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in mesh.iterdir()) == files  # no temporary file left


def test_invalid_config_is_refused(mesh: Path) -> None:
    path = mesh / "security.yaml"
    path.write_text(path.read_text().replace("action: ALLOW", "action: CUSTOM"))
    result = run("set-weight", "orders", "v1=100", "-c", str(mesh))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"meshctl route set-weight: the config in {mesh} is invalid")
    assert "security.yaml:19:11" in result.stderr and "meshctl validate" in result.stderr


def test_missing_subset_argument_is_a_usage_error(mesh: Path) -> None:
    assert run("set-weight", "orders", "-c", str(mesh)).exit_code == 2


# --- the config directory -----------------------------------------------------------------


def test_config_from_env(mesh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_CONFIG", str(mesh))
    result = run("set-weight", "orders", "v1=70", "v2=30")
    assert result.exit_code == 0, result.output
    assert weights(mesh) == [("v1", 70), ("v2", 30)]


def test_config_from_the_running_registry(mesh: Path, tmp_path: Path) -> None:
    home = tmp_path / "home" / "registry"
    home.mkdir(parents=True)
    (home / "endpoint.json").write_text(json.dumps({"config_dir": str(mesh), "pid": os.getpid()}))
    result = run("set-weight", "orders", "v1=60", "v2=40")
    assert result.exit_code == 0, result.output
    assert f"the registry (pid {os.getpid()}) publishes it" in result.stdout
    assert weights(mesh) == [("v1", 60), ("v2", 40)]


def test_config_from_the_current_directory(mesh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(mesh.parent)
    result = run("show", "orders", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["file"] == "mesh/orders.yaml"


def test_no_config_directory(mesh: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    result = run("show", "orders")
    assert result.exit_code == 1
    assert result.stderr.startswith("meshctl route show: no config directory: pass --config")
    result = run("set-weight", "orders", "v1=100", "--config", str(empty / "nope"))
    assert result.stderr.startswith("meshctl route set-weight: config directory ")


# --- show ---------------------------------------------------------------------------------


def test_show_table(mesh: Path) -> None:
    result = run("show", "orders", "-c", str(mesh))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in (
        "VirtualService orders",
        "canary",
        "any request",
        "v1 90%, v2 10%",
        "3 x 500ms on 5xx,reset,connect-failure",
        "none",
        "orders.yaml:10:7",
        "v1 (version=v1)",
    ):
        assert text in out, text


def test_show_json(mesh: Path) -> None:
    result = run("show", "orders", "-c", str(mesh), "--output", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["virtual_service"] == "orders"
    (canary,) = data["routes"]
    assert canary["name"] == "canary" and canary["defined_at"] == "orders.yaml:10:7"
    assert [(d["subset"], d["weight"]) for d in canary["destinations"]] == [("v1", 90), ("v2", 10)]
    assert canary["retries"] == {
        "attempts": 3,
        "per_try_timeout": "500ms",
        "retry_on": ["5xx", "reset", "connect-failure"],
        "default": False,
    }
    assert canary["timeout"] is None and canary["match"] == []


def test_show_matches_and_defaults(mesh: Path) -> None:
    path = mesh / "orders.yaml"
    path.write_text(
        path.read_text().replace(
            """\
    - name: canary
      retries:
        attempts: 3
        perTryTimeout: 500ms
        retryOn: "5xx,reset,connect-failure"
""",
            """\
    - name: header
      match:
        - headers: {x-canary: {exact: "1"}}
          uri: {prefix: /api}
        - method: {exact: POST}
      timeout: 2s
      route:
        - destination: {host: orders, subset: v2}
    - name: canary
""",
        )
    )
    data = json.loads(run("show", "orders", "-c", str(mesh), "-o", "json").stdout)
    header, canary = data["routes"]
    assert header["match"] == ["uri prefix /api and header x-canary exact 1", "method exact POST"]
    assert header["timeout"] == "2s" and header["defined_at"] == "orders.yaml:10:7"
    assert canary["retries"]["default"] is True and canary["defined_at"] == "orders.yaml:18:7"
    # two routes to orders' subsets: set-weight needs --route
    result = run("set-weight", "orders", "v1=100", "-c", str(mesh))
    assert result.exit_code == 1 and "say which with --route NAME" in result.stderr
    result = run("set-weight", "orders", "v1=100", "-c", str(mesh), "--route", "canary")
    assert result.exit_code == 0, result.output


def test_show_without_virtual_service(mesh: Path) -> None:
    result = run("show", "payments", "-c", str(mesh))
    assert result.exit_code == 0 and "no VirtualService routes payments" in result.stdout
    data = json.loads(run("show", "payments", "-c", str(mesh), "-o", "json").stdout)
    assert data["virtual_service"] is None and data["routes"] == []
    result = run("show", "nope", "-c", str(mesh))
    assert result.exit_code == 1
    assert result.stderr.startswith("meshctl route show: unknown service `nope`")


def test_symlinked_file_keeps_its_link(mesh: Path, tmp_path: Path) -> None:
    real = tmp_path / "orders-real.yaml"
    (mesh / "orders.yaml").rename(real)
    (mesh / "orders.yaml").symlink_to(real)
    result = run("set-weight", "orders", "v1=10", "v2=90", "-c", str(mesh))
    assert result.exit_code == 0, result.output
    assert (mesh / "orders.yaml").is_symlink() and "weight: 90" in real.read_text()
    assert weights(mesh) == [("v1", 10), ("v2", 90)]
