"""proxy/run.py: the lean entry of `meshctl proxy` knows the Typer command's options, and a
sidecar process imports neither the CLI's libraries nor aiohttp, YAML or cryptography."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperOption

from meshctl.commands.proxy import app
from proxy.run import OPTIONS, _Refused, parse

REPO = Path(__file__).resolve().parents[2]


def _typer_options() -> dict[str, tuple[str, bool, bool, str | None, object]]:
    command = typer.main.get_command(app)
    out = {}
    for p in command.params:
        assert isinstance(p, TyperOption)
        flag = max(p.opts, key=len)
        default = None if p.multiple and not p.default else p.default
        envvar = p.envvar if isinstance(p.envvar, str) else None
        out[flag] = (str(p.name), p.required, p.multiple, envvar, default)
    return out


def test_the_lean_parser_has_the_typer_commands_options() -> None:
    lean = {o.flag: (o.dest, o.required, o.multiple, o.envvar, o.default) for o in OPTIONS}
    assert lean == _typer_options()


def test_parse_gives_what_typer_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for o in OPTIONS:
        if o.envvar:
            monkeypatch.delenv(o.envvar, raising=False)
    token = tmp_path / "token"
    token.write_text("t")
    argv = ["--service", "orders", "--registry", "https://r:1", "--token-file", str(token),
            "--upstream", "a:80=9001", "--upstream", "b:80=9002", "--app", "8080=127.0.0.1:9",
            "--drain", "2.5", "--max-connections", "7", "--metrics=127.0.0.1:9"]  # fmt: skip
    got = parse(argv)
    seen: dict[str, object] = {}
    command = typer.main.get_command(app)
    with command.make_context("proxy", list(argv)) as ctx:
        seen = dict(ctx.params)
    assert got == {k: list(v) if isinstance(v, tuple) else v for k, v in seen.items()}
    monkeypatch.setenv("MESH_TRACE_SAMPLING", "12.5")
    assert parse(argv)["trace_sampling"] == 12.5
    for bad in (["--help"], argv[:2], [*argv, "--nope", "x"], [*argv, "--drain", "soon"],
                [*argv[:4], "--token-file", str(tmp_path / "missing")], [*argv, "--drain"],
                [*argv, "--trace-sampling", "101"]):  # fmt: skip
        with pytest.raises(_Refused):
            parse(bad)


def test_a_sidecar_imports_no_cli_http_or_yaml_library(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    env = {**os.environ, "MESH_HOME": str(tmp_path / "home")}
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "meshctl", "proxy", "--service", "orders",
         "--registry", "https://127.0.0.1:1", "--token-file", str(token),
         "--ca-file", str(tmp_path / "missing.crt")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and "meshctl proxy: " in r.stderr  # the CA file is missing
    imported = set(re.findall(r"\|\s+([\w.]+)$", r.stderr, re.MULTILINE))
    assert "proxy.main" in imported
    heavy = {"typer", "rich", "click", "aiohttp", "yaml", "pyroute2", "docker", "cryptography"}
    assert {m.split(".")[0] for m in imported} & heavy == set()


def test_dns_flags_parse_as_typer_parses_them(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    base = ["--service", "orders", "--token-file", str(token), "--outbound", "127.0.0.1:15001"]
    command = typer.main.get_command(app)
    for extra in ([], ["--no-dns"], ["--dns-port", "5353"], ["--dns-port=5353", "--no-dns"]):
        with command.make_context("proxy", [*base, *extra]) as ctx:
            want = (ctx.params["dns_port"], ctx.params["no_dns"])
        got = parse([*base, *extra])
        assert (got["dns_port"], got["no_dns"]) == want
    assert parse(base)["dns_port"] == 15053 and parse(base)["no_dns"] is False
    for bad in (["--no-dns=yes"], ["--dns-port", "0"], ["--dns-port", "70000"]):
        with pytest.raises(_Refused):
            parse([*base, *bad])
