"""systemd units: the rendered directives, systemd quoting, and systemd-analyze verify."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from meshctl.commands.systemd import app
from meshctl.launch import systemd

SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
needs_analyze = pytest.mark.skipif(
    not os.access(SYSTEMD_ANALYZE, os.X_OK), reason="systemd-analyze is not installed"
)


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def _proxy_units(meshctl_bin: str = "/usr/local/bin/meshctl", **kw: object) -> dict[str, str]:
    args: dict[str, object] = dict(
        service="orders",
        version="v1",
        app_unit="orders.service",
        meshctl_bin=meshctl_bin,
        mesh_home="/var/lib/meshctl",
        registry="10.0.0.5:15012",
        token_file="/etc/meshctl/orders.token",
        inbound_ports=[8080],
    )
    args.update(kw)
    return systemd.render_proxy_units(**args)  # type: ignore[arg-type]


def test_proxy_unit_directives() -> None:
    units = _proxy_units()
    assert set(units) == {"meshctl-proxy-orders.service", "orders.service.d/10-meshctl.conf"}
    d = _directives(units["meshctl-proxy-orders.service"])
    assert d["Before"] == ["orders.service"]
    assert d["PartOf"] == ["orders.service"]
    assert "BindsTo" not in d
    assert d["Type"] == ["notify"]
    assert d["ExecStart"] == [
        "/usr/local/bin/meshctl proxy --service orders --version v1 "
        "--registry 10.0.0.5:15012 --token-file %d/join-token --advertise auto "
        "--outbound 127.0.0.1:15001 --dns-port 15053"
    ]
    assert d["LoadCredential"] == ["join-token:/etc/meshctl/orders.token"]
    assert d["Restart"] == ["always"] and d["RestartSec"] == ["1"]
    # By name: systemd refuses a User= without a passwd entry (217/USER); install makes it.
    assert d["User"] == ["meshctl-proxy"] and d["Group"] == ["meshctl-proxy"]
    assert d["TimeoutStopSec"] == ["15"]
    assert d["CapabilityBoundingSet"] == [""]  # no privilege at all
    assert d["ReadWritePaths"] == ["/var/lib/meshctl"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "LockPersonality": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    }.items():
        assert d[key] == [value], key
    assert d["MemoryMax"] == ["256M"]
    # Interception is the app's, never the proxy's: a proxy restart must not remove it.
    assert "ExecStartPre" not in d and "ExecStopPost" not in d


def test_app_dropin_orders_and_intercepts() -> None:
    d = _directives(_proxy_units(inbound_ports=[9090, 8080])["orders.service.d/10-meshctl.conf"])
    assert d["Wants"] == ["meshctl-proxy-orders.service"]
    assert d["After"] == ["meshctl-proxy-orders.service"]
    # Every inbound port is captured (Istio's "*"), not only the declared 8080 and 9090.
    assert d["ExecStartPre"] == [
        "+/usr/local/bin/meshctl intercept install --service orders --proxy-uid 1337 "
        "--inbound-ports * --dns --dns-port 15053"
    ]
    assert d["ExecStopPost"] == ["-+/usr/local/bin/meshctl intercept remove --service orders"]


def test_app_dropin_hides_the_proxys_state_and_token_from_the_app() -> None:
    # Workloads are not trusted (SECURITY.md) and an app unit may run as root: the proxy's
    # state directory (its key and SVID) and the join token are not in the app's view.
    d = _directives(_proxy_units(mesh_home="/srv/mesh home")["orders.service.d/10-meshctl.conf"])
    assert d["InaccessiblePaths"] == ['-"/srv/mesh home" -/etc/meshctl/orders.token']


def test_the_proxy_unit_wires_what_the_app_dropin_needs() -> None:
    # The drop-in's interception sends the app's outbound connections to 15001: the proxy
    # must listen there. Peers must reach it at a real address, not 127.0.0.1.
    text = _proxy_units(registry=None, advertise="10.1.2.3")["meshctl-proxy-orders.service"]
    [start] = _directives(text)["ExecStart"]
    assert "--registry" not in start  # the join string carries the registry's addresses
    assert "--advertise 10.1.2.3" in start and "--outbound 127.0.0.1:15001" in start
    # ... and the app's port 53 to 15053, where the proxy answers mesh names (proxy/dns).
    dropin = _proxy_units()["orders.service.d/10-meshctl.conf"]
    assert "--dns --dns-port 15053" in _directives(dropin)["ExecStartPre"][0]
    assert start.endswith("--dns-port 15053")


def test_app_dropin_excludes_inbound_ports_as_istio_names_them() -> None:
    units = _proxy_units(inbound_ports=[8080], exclude_inbound_ports=[9100, 5000])
    d = _directives(units["orders.service.d/10-meshctl.conf"])
    assert d["ExecStartPre"] == [
        "+/usr/local/bin/meshctl intercept install --service orders --proxy-uid 1337 "
        "--inbound-ports * --exclude-inbound-ports 5000,9100 --dns --dns-port 15053"
    ]


def test_no_version_no_flag_and_notify_off() -> None:
    text = _proxy_units(version=None, notify=False)["meshctl-proxy-orders.service"]
    assert "--version" not in text
    assert _directives(text)["Type"] == ["exec"]


def test_registry_unit() -> None:
    d = _directives(
        systemd.render_registry_unit(
            meshctl_bin="/usr/bin/meshctl",
            config_dir="/etc/meshctl",
            mesh_home="/var/lib/meshctl",
            listen="0.0.0.0",
            sans=["registry.internal", "10.9.9.9"],
        )
    )
    assert d["ExecStart"] == [
        "/usr/bin/meshctl registry --config /etc/meshctl --listen 0.0.0.0 "
        "--san registry.internal --san 10.9.9.9"
    ]
    assert d["Type"] == ["notify"] and d["TimeoutStopSec"] == ["10"]
    assert d["Environment"] == ["MESH_HOME=/var/lib/meshctl"]
    assert d["User"] == ["meshctl"]
    assert d["WantedBy"] == ["multi-user.target"]
    assert d["ProtectSystem"] == ["strict"]


def test_quoting_spaces_percent_dollar_quotes() -> None:
    units = _proxy_units(
        meshctl_bin="/opt/mesh ctl/bin/meshctl",
        mesh_home="/srv/state 100%",
        registry="reg$ist:1",
        version='v"1\\',
        token_file="/etc/tok 5%.token",
    )
    d = _directives(units["meshctl-proxy-orders.service"])
    assert d["ExecStart"] == [
        '"/opt/mesh ctl/bin/meshctl" proxy --service orders --version "v\\"1\\\\" '
        "--registry reg$$ist:1 --token-file %d/join-token --advertise auto "
        "--outbound 127.0.0.1:15001 --dns-port 15053"
    ]
    assert d["Environment"] == ['"MESH_HOME=/srv/state 100%%"']
    assert d["ReadWritePaths"] == ['"/srv/state 100%%"']
    assert d["LoadCredential"] == ["join-token:/etc/tok 5%%.token"]  # the rest of the line
    assert d["Description"] == ["meshctl sidecar proxy for orders (orders.service)"]


@pytest.mark.parametrize(
    "kw",
    [
        {"service": "Orders"},
        {"app_unit": "orders"},
        {"meshctl_bin": "meshctl"},
        {"mesh_home": "relative"},
        {"inbound_ports": []},
        {"inbound_ports": [70000]},
        {"registry": "a\nExecStart=/bin/evil"},
    ],
)
def test_bad_values_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _proxy_units(**kw)


def test_install_units_writes_atomically(tmp_path: Path) -> None:
    units = _proxy_units()
    written = systemd.install_units(units, tmp_path, reload=False)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(units)
    for rel, text in units.items():
        path = tmp_path / rel
        assert path.read_text() == text
        assert path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(ValueError):
        systemd.install_units({"../evil.service": ""}, tmp_path, reload=False)


def test_install_units_needs_systemd_to_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd, "systemd_booted", lambda: False)
    with pytest.raises(systemd.SystemdError, match="systemd is not running"):
        systemd.install_units(_proxy_units(), tmp_path)
    assert list(tmp_path.iterdir()) == []  # checked before anything was written


# -- systemd-analyze verify --------------------------------------------------------------


def _verify_setup(tmp_path: Path) -> tuple[Path, list[str]]:
    """Units in a temporary directory, with an executable meshctl and a dummy app."""
    bindir = tmp_path / "bin dir"  # a space, to check the quoting against systemd itself
    bindir.mkdir()
    meshctl = bindir / "meshctl"
    meshctl.write_text("#!/bin/sh\nexit 0\n")
    meshctl.chmod(0o755)
    unit_dir = tmp_path / "units"
    units = _proxy_units(
        meshctl_bin=str(meshctl), mesh_home="/var/lib/mesh 100%", registry="127.0.0.1:15012"
    )
    units["orders.service"] = "[Unit]\nDescription=orders\n\n[Service]\nExecStart=/bin/sleep 1000\n"
    units[systemd.REGISTRY_UNIT] = systemd.render_registry_unit(
        meshctl_bin=str(meshctl), config_dir="/etc/meshctl", mesh_home="/var/lib/meshctl"
    )
    systemd.install_units(units, unit_dir, reload=False)
    names = ["orders.service", "meshctl-proxy-orders.service", systemd.REGISTRY_UNIT]
    return unit_dir, [str(unit_dir / n) for n in names]


def _analyze(paths: list[str], level: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": level}
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *paths],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    _, paths = _verify_setup(tmp_path)
    res = _analyze(paths, "notice")
    ours = [
        line
        for line in (res.stdout + res.stderr).splitlines()
        if re.search(r"meshctl|orders|10-meshctl", line)
    ]
    assert res.returncode == 0, res.stderr
    assert ours == []


@needs_analyze
def test_systemd_reads_our_quoting_back(tmp_path: Path) -> None:
    # At debug level, verify dumps each unit as systemd understood it.
    _, paths = _verify_setup(tmp_path)
    res = _analyze(paths, "debug")
    dump = res.stdout + res.stderr
    if "Command Line:" not in dump:
        pytest.skip("this systemd-analyze prints no unit dump")
    assert f'Command Line: "{tmp_path}/bin dir/meshctl" proxy --service orders' in dump
    assert "--token-file /run/credentials/meshctl-proxy-orders.service/join-token" in dump
    assert "ReadWritePaths: /var/lib/mesh 100%\n" in dump
    assert "Environment: MESH_HOME=/var/lib/mesh 100%\n" in dump
    assert "DropIn Path: " + str(tmp_path / "units/orders.service.d/10-meshctl.conf") in dump


# -- the command -------------------------------------------------------------------------


def test_cli_render_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "render",
            "proxy",
            "--service",
            "orders",
            "--version",
            "v2",
            "--port",
            "8080",
            "--port",
            "8443",
            "--registry",
            "10.0.0.5:15012",
            "--meshctl-bin",
            "/usr/bin/meshctl",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    proxy = (out / "meshctl-proxy-orders.service").read_text()
    assert "--version v2" in proxy
    assert "LoadCredential=join-token:/etc/meshctl/orders.token" in proxy
    dropin = (out / "orders.service.d/10-meshctl.conf").read_text()
    assert "--inbound-ports *" in dropin and "declares 8080,8443" in dropin


def test_cli_render_registry_to_stdout() -> None:
    res = CliRunner().invoke(
        app, ["render", "registry", "--meshctl-bin", "/usr/bin/meshctl", "--listen", "0.0.0.0"]
    )
    assert res.exit_code == 0, res.output
    assert "# ---- meshctl-registry.service" in res.output
    assert (
        "ExecStart=/usr/bin/meshctl registry --config /etc/meshctl --listen 0.0.0.0" in res.output
    )


def test_cli_render_names_the_user_it_expects() -> None:
    res = CliRunner().invoke(
        app, ["render", "proxy", "--service", "orders", "--port", "8080",
              "--meshctl-bin", "/usr/bin/meshctl"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "runs as user meshctl-proxy (uid 1337)" in res.output


def _etc(tmp_path: Path) -> Path:
    """A copy of this system's user database, for useradd --prefix."""
    (tmp_path / "etc").mkdir()
    for f in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        if Path("/etc", f).exists():
            shutil.copy2(Path("/etc", f), tmp_path / "etc" / f)
    return tmp_path


@pytest.mark.root
def test_ensure_system_user_creates_it_with_the_uid_if_free(tmp_path: Path) -> None:
    if shutil.which("useradd") is None:
        pytest.skip("needs useradd")
    root = _etc(tmp_path)
    assert systemd.ensure_system_user("meshctl-proxy", 1337, root=root)[0] == 1337
    passwd = (root / "etc/passwd").read_text()
    assert re.search(r"^meshctl-proxy:x:1337:\d+:meshctl:/nonexistent:", passwd, re.M), passwd
    # Asked again: found, not made twice.
    assert systemd.ensure_system_user("meshctl-proxy", 1337, root=root)[0] == 1337
    assert (root / "etc/passwd").read_text() == passwd
    # 1337 taken: another user gets whichever uid useradd picks.
    other = systemd.ensure_system_user("meshctl-other", 1337, root=root)[0]
    assert other != 1337
    with pytest.raises(ValueError, match="not a valid system user name"):
        systemd.ensure_system_user("Bad Name", root=root)


@pytest.mark.root
def test_cli_install_root_makes_user_units_and_state_dir(tmp_path: Path) -> None:
    if shutil.which("useradd") is None:
        pytest.skip("needs useradd")
    root = _etc(tmp_path)
    (root / "etc/meshctl").mkdir()
    (root / "etc/meshctl/orders.token").write_text("mjoin1.x\n")
    res = CliRunner().invoke(
        app, ["install", "proxy", "--service", "orders", "--port", "8080", "--root", str(root),
              "--token-file", "/etc/meshctl/orders.token", "--meshctl-bin", "/usr/bin/meshctl"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    unit = (root / "etc/systemd/system/meshctl-proxy-orders.service").read_text()
    assert "User=meshctl-proxy" in unit
    state = root / "var/lib/meshctl"
    assert state.stat().st_uid == 1337 and state.stat().st_mode & 0o777 == 0o700
    assert "meshctl-proxy:x:1337:" in (root / "etc/passwd").read_text()


def test_cli_install_refuses_a_missing_token_file(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("install needs root")
    res = CliRunner().invoke(
        app, ["install", "proxy", "--service", "orders", "--port", "8080", "--root",
              str(tmp_path), "--token-file", "/etc/meshctl/orders.token"],
    )  # fmt: skip
    assert res.exit_code == 1
    assert f"token file {tmp_path}/etc/meshctl/orders.token does not exist" in res.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_render_says_what_is_missing() -> None:
    res = CliRunner().invoke(app, ["render", "proxy", "--service", "orders"])
    assert res.exit_code == 2
    assert "needs --port" in res.output
