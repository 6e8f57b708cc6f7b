"""`meshctl systemd render|install gateway`: the gateway proxy's unit, checked directive by
directive, by systemd-analyze verify, and installed under --root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshctl.commands.systemd import app
from meshctl.launch.gateway_unit import render_gateway_unit
from proxy.run import parse
from tests.launch.test_systemd import _analyze, _directives, _etc, needs_analyze


def _unit(**kw: object) -> str:
    args: dict[str, object] = dict(
        service="ingressgateway", meshctl_bin="/usr/bin/meshctl",
        mesh_home="/var/lib/meshctl-gateway", registry="10.0.0.5:15012",
        token_file="/etc/meshctl/ingressgateway.token", config_dir="/etc/meshctl",
        credentials=["shop-cert"])  # fmt: skip
    args.update(kw)
    return render_gateway_unit(**args)  # type: ignore[arg-type]


def test_gateway_unit_directives(tmp_path: Path) -> None:
    d = _directives(_unit())
    (exec_start,) = d["ExecStart"]
    assert exec_start == (
        "/usr/bin/meshctl proxy --service ingressgateway --gateway --registry 10.0.0.5:15012 "
        "--token-file %d/join-token --gateway-address 0.0.0.0 --credentials %d")
    # The command the unit runs is one `meshctl proxy` takes (its lean parser).
    (tmp_path / "join-token").write_text("mjoin1.x\n")  # what %d holds at run time
    kwargs = parse(exec_start.replace("%d", str(tmp_path)).split()[2:])
    assert kwargs["gateway"] is True and kwargs["credentials"] == tmp_path
    assert d["LoadCredential"] == [
        "join-token:/etc/meshctl/ingressgateway.token",
        "shop-cert.crt:/etc/meshctl/shop-cert.crt",
        "shop-cert.key:/etc/meshctl/shop-cert.key",
    ]
    assert d["User"] == ["meshctl-gateway"] and d["Type"] == ["notify"]
    assert d["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert d["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert d["WantedBy"] == ["multi-user.target"]
    assert "PartOf" not in d and "Before" not in d  # beside no app
    assert d["ProtectSystem"] == ["strict"] and d["NoNewPrivileges"] == ["yes"]


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="not a mesh service name"):
        _unit(service="Ingress Gateway")
    with pytest.raises(ValueError, match="not a credentialName"):
        _unit(credentials=["../etc/shadow"])
    with pytest.raises(ValueError, match="absolute path"):
        _unit(config_dir="etc/meshctl")


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    meshctl = tmp_path / "meshctl"
    meshctl.write_text("#!/bin/sh\nexit 0\n")
    meshctl.chmod(0o755)
    unit = tmp_path / "meshctl-gateway-ingressgateway.service"
    unit.write_text(_unit(meshctl_bin=str(meshctl)))
    res = _analyze([str(unit)], "notice")
    ours = [x for x in (res.stdout + res.stderr).splitlines() if "gateway" in x]
    assert res.returncode == 0, res.stderr
    assert ours == []


def test_cli_render_gateway() -> None:
    res = CliRunner().invoke(app, [
        "render", "gateway", "--service", "ingressgateway", "--credential", "shop-cert",
        "--gateway-address", "192.0.2.10", "--meshctl-bin", "/usr/bin/meshctl"])
    assert res.exit_code == 0, res.output
    assert "# ---- meshctl-gateway-ingressgateway.service" in res.output
    assert "--gateway-address 192.0.2.10 --credentials %d" in res.output
    assert "Environment=MESH_HOME=/var/lib/meshctl-gateway" in res.output
    res = CliRunner().invoke(app, ["render", "gateway"])
    assert res.exit_code == 2 and "a gateway unit needs --service" in res.output


@pytest.mark.root
def test_cli_install_gateway_under_root(tmp_path: Path) -> None:
    if shutil.which("useradd") is None:
        pytest.skip("needs useradd")
    root = _etc(tmp_path)
    (root / "etc/meshctl").mkdir()
    (root / "etc/meshctl/ingressgateway.token").write_text("mjoin1.x\n")
    argv = ["install", "gateway", "--service", "ingressgateway", "--root", str(root),
            "--credential", "shop-cert", "--meshctl-bin", "/usr/bin/meshctl"]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 1  # the credential pair is not there yet
    assert f"{root}/etc/meshctl/shop-cert.crt does not exist" in res.output
    assert not (root / "etc/systemd").exists()  # nothing written
    (root / "etc/meshctl/shop-cert.crt").write_text("x")
    (root / "etc/meshctl/shop-cert.key").write_text("x")
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert (root / "etc/systemd/system/meshctl-gateway-ingressgateway.service").is_file()
    state = root / "var/lib/meshctl-gateway"
    assert state.is_dir() and state.stat().st_mode & 0o777 == 0o700
    assert "meshctl-gateway:x:" in (root / "etc/passwd").read_text()
    assert "systemctl enable --now meshctl-gateway-ingressgateway.service" in res.output
