"""`meshctl vip` and `meshctl hosts [--apply]` through CliRunner: output, JSON, the marked
block of a temp hosts file (never /etc/hosts), refusals that leave the file as it was."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from common.vip import service_vip
from meshctl.cli import build
from meshctl.hostsfile import BEGIN, END, entries, render_block, replace_block
from tests.example import CONFIG as EXAMPLE
from tests.integration.harness import REPO, Mesh

SERVICES = ("frontend", "inventory", "orders", "payments")  # the example's, sorted
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n10.0.0.5\tdb.internal  # ops\n"


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No MESH_CONFIG, an empty MESH_HOME, and MESH_HOSTS_FILE pointing into tmp: a test
    that forgot --file still cannot reach /etc/hosts."""
    monkeypatch.delenv("MESH_CONFIG", raising=False)
    monkeypatch.setenv("MESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MESH_HOSTS_FILE", str(tmp_path / "unused-hosts"))
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def hosts_file(tmp_path: Path) -> Path:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    path.chmod(0o644)
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(build(), list(args))


def block() -> str:
    return "".join(f"{line}\n" for line in
                   [BEGIN, *(f"{service_vip(s)}\t{s}" for s in SERVICES), END])


def test_vip_prints_the_services_address() -> None:
    result = run("vip", "orders", "--config", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    assert result.stdout == service_vip("orders") + "\n"
    assert result.stdout.startswith("240.240.")
    result = run("vip", "payments", "--config", str(EXAMPLE), "--output", "json")
    assert json.loads(result.stdout) == {"service": "payments", "vip": service_vip("payments")}


def test_vip_of_an_unknown_service_is_an_error() -> None:
    result = run("vip", "oders", "--config", str(EXAMPLE))
    assert result.exit_code == 1
    assert "no service `oders` in the mesh (services: frontend, inventory, orders, payments)" \
        in result.stderr


def test_vip_without_a_mesh_says_what_to_do() -> None:
    result = run("vip", "orders")
    assert result.exit_code == 1
    assert "no registry is running" in result.stderr and "--config DIR" in result.stderr


def test_hosts_prints_the_block(hosts_file: Path) -> None:
    result = run("hosts", "--config", str(EXAMPLE), "--file", str(hosts_file))
    assert result.exit_code == 0, result.output
    assert result.stdout == block()
    assert hosts_file.read_text() == HOSTS  # printing writes nothing
    result = run("hosts", "--config", str(EXAMPLE), "-o", "json")
    data = json.loads(result.stdout)
    assert data["applied"] is False and data["changed"] is None
    assert data["entries"] == [{"service": s, "vip": service_vip(s)} for s in SERVICES]


def test_apply_appends_then_is_idempotent(hosts_file: Path) -> None:
    result = run("hosts", "--apply", "--config", str(EXAMPLE), "--file", str(hosts_file))
    assert result.exit_code == 0, result.output
    assert hosts_file.read_text() == HOSTS + block()
    assert hosts_file.stat().st_mode & 0o777 == 0o644
    assert "4 mesh service(s), updated" in result.stdout
    before = hosts_file.stat().st_mtime_ns
    result = run("hosts", "--apply", "--config", str(EXAMPLE), "--file", str(hosts_file))
    assert "already up to date" in result.stdout
    assert hosts_file.read_text() == HOSTS + block()
    assert hosts_file.stat().st_mtime_ns == before


def test_apply_replaces_only_its_block(hosts_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = f"{BEGIN}\n240.240.1.1\told-service\n{END}\n"
    after = "192.168.1.9\tprinter\n"  # no final newline before: kept exactly
    hosts_file.write_text(HOSTS + stale + after)
    hosts_file.chmod(0o600)
    monkeypatch.setenv("MESH_HOSTS_FILE", str(hosts_file))  # the env var, not --file
    result = run("hosts", "--apply", "--config", str(EXAMPLE), "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["changed"] is True
    assert hosts_file.read_text() == HOSTS + block() + after
    assert hosts_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("broken", [
    f"{BEGIN}\n240.240.1.1\told\n",  # no END
    f"{END}\n",  # END alone
    f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n",  # two blocks
    f"{END}\n{BEGIN}\n",  # reversed
])
def test_a_broken_block_is_refused_and_nothing_written(hosts_file: Path, broken: str) -> None:
    hosts_file.write_text(HOSTS + broken)
    before = (hosts_file.read_bytes(), hosts_file.stat().st_mtime_ns)
    result = run("hosts", "--apply", "--config", str(EXAMPLE), "--file", str(hosts_file))
    assert result.exit_code == 1
    assert "the meshctl block is broken" in result.stderr and "line 4" in result.stderr
    assert (hosts_file.read_bytes(), hosts_file.stat().st_mtime_ns) == before


@pytest.mark.parametrize("args", [
    ("--config", "/nonexistent/mesh"),
    ("--output", "yaml"),
    ("--bogus",),
])
def test_bad_arguments_change_nothing(hosts_file: Path, args: tuple[str, ...]) -> None:
    before = (hosts_file.read_bytes(), hosts_file.stat().st_mtime_ns)
    result = run("hosts", "--apply", "--file", str(hosts_file), *args)
    assert result.exit_code != 0
    assert (hosts_file.read_bytes(), hosts_file.stat().st_mtime_ns) == before
    assert sorted(os.listdir(hosts_file.parent)) == ["hosts"]  # no temp file left behind


def test_an_invalid_config_changes_nothing(hosts_file: Path, tmp_path: Path) -> None:
    broken = tmp_path / "mesh"
    broken.mkdir()
    (broken / "mesh.yaml").write_text("services: {orders: {ports: nope}}\n")
    result = run("hosts", "--apply", "--config", str(broken), "--file", str(hosts_file))
    assert result.exit_code == 1 and "is invalid" in result.stderr
    assert hosts_file.read_text() == HOSTS


def test_apply_to_a_missing_file_is_an_error(tmp_path: Path) -> None:
    result = run("hosts", "--apply", "--config", str(EXAMPLE), "--file", str(tmp_path / "no"))
    assert result.exit_code == 1 and "does not exist" in result.stderr
    assert not (tmp_path / "no").exists()


def test_help_lists_both() -> None:
    out = run("--help").stdout
    assert re.search(r"│ vip +Print a mesh service's virtual IP", out), out
    assert re.search(r"│ hosts +Print \(or with --apply, write\) the /etc/hosts block", out), out


@pytest.mark.slow
def test_services_from_the_running_registry(tmp_path: Path, hosts_file: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    mesh = Mesh(tmp_path / "mesh", EXAMPLE)
    try:
        mesh.start_registry()
        monkeypatch.setenv("MESH_HOME", str(mesh.home))
        assert run("vip", "inventory").stdout == service_vip("inventory") + "\n"
        result = run("hosts", "--apply", "--file", str(hosts_file))
        assert result.exit_code == 0, result.output
        assert hosts_file.read_text() == HOSTS + block()
    finally:
        mesh.close()


def test_the_docs_steps_run_as_written(hosts_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/up.md's three commands, literally (sudo dropped: we are the test), against a temp
    hosts file through MESH_HOSTS_FILE and the example config through MESH_CONFIG."""
    doc = (REPO / "docs" / "up.md").read_text()
    section = doc.split("## Names on hosts without `up`", 1)[1]
    steps = section.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    argvs = [shlex.split(line.split("#", 1)[0].removeprefix("sudo ")) for line in steps]
    assert [a[1] for a in argvs] == ["vip", "hosts", "hosts"]
    monkeypatch.setenv("MESH_CONFIG", str(EXAMPLE))
    monkeypatch.setenv("MESH_HOSTS_FILE", str(hosts_file))
    outputs = []
    for argv in argvs:
        result = run(*argv[1:])
        assert result.exit_code == 0, (argv, result.output)
        outputs.append(result.stdout)
    assert outputs[0] == service_vip("orders") + "\n"
    assert outputs[1] == block()
    assert hosts_file.read_text() == HOSTS + block()


_LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c"
                              "\x1c\x1d\x1e\x85\u2028\u2029"), max_size=30).filter(
    lambda s: not s.startswith(("# BEGIN meshctl", "# END meshctl")))
_LINES = st.lists(_LINE, max_size=6).map(lambda ls: "".join(f"{x}\n" for x in ls))


@settings(max_examples=200, deadline=None)
@given(before=_LINES, after=_LINES, old=st.lists(_LINE, max_size=3),
       services=st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), max_size=4))
def test_replace_block_keeps_every_other_line(before: str, after: str, old: list[str],
                                             services: list[str]) -> None:
    new = render_block(entries(services))
    stale = "".join(f"{x}\n" for x in [BEGIN, *old, END])
    assert replace_block(before + stale + after, new) == before + new + after
    assert replace_block(before, new) == before + new
    assert replace_block(before + new + after, new) == before + new + after
