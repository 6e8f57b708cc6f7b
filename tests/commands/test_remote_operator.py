"""Operator commands from another host: `token operator` makes the credential file, and
`--operator-token-file` (with `--registry` or the file's own addresses) lets `status`,
`token create|list|revoke` and `route set-weight` work from a MESH_HOME with no registry.
Route edits are made by the registry, in place, in its own config directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.example import CONFIG
from tests.integration.harness import Mesh
from tests.registry.server.support import Workload, call, csr_for, join

pytestmark = pytest.mark.slow



@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    m = Mesh(tmp_path, CONFIG)
    m.start_registry()
    try:
        yield m
    finally:
        m.close()


def _meshctl(home: Path, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshctl", *args], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "MESH_HOME": str(home), **(env or {})})  # fmt: skip


@pytest.fixture
def operator_file(mesh: Mesh) -> Path:
    done = _meshctl(mesh.home, "token", "operator")
    assert done.returncode == 0, done.stderr
    path = mesh.tmp / "operator.token"
    path.write_text(done.stdout)
    path.chmod(0o600)
    return path


def test_operator_file_carries_the_credential_addresses_and_pin(
    mesh: Mesh, operator_file: Path
) -> None:
    from registry.ca.joinstring import ca_pin, parse

    cred = parse(operator_file.read_text())
    assert cred.token == (mesh.home / "registry" / "operator.token").read_text().strip()
    assert mesh.url in cred.registry
    assert cred.ca_sha256 == ca_pin((mesh.home / "registry/ca/ca.crt").read_text())


def test_tokens_from_another_host(mesh: Mesh, operator_file: Path, tmp_path: Path) -> None:
    from registry.ca.joinstring import parse

    other = tmp_path / "other-host"  # no registry, no CA: a fresh MESH_HOME
    done = _meshctl(other, "token", "create", "orders", "payments", "--reusable",
                    "--ttl", "24h", "--operator-token-file", str(operator_file))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert [parse(line).service for line in lines] == ["orders", "payments"]
    tokens = [parse(line).token for line in lines]

    env = {"MESH_OPERATOR_TOKEN_FILE": str(operator_file), "MESH_REGISTRY": mesh.url}
    listed = json.loads(_meshctl(other, "token", "list", "-o", "json", env=env).stdout)
    mine = {t["token_id"]: t for t in listed if t["token_id"] in {x.split(".")[1]
                                                                   for x in tokens}}
    assert {t["service"] for t in mine.values()} == {"orders", "payments"}
    for t in mine.values():
        assert t["reusable"] and t["revoked_at"] is None
        assert 24 * 3600 - 120 < t["expires_at"] - t["created_at"] <= 24 * 3600

    # A reusable token joins twice; revoked, it joins no more.
    orders_id = tokens[0].split(".")[1]
    for n in range(2):
        status, body = _join(mesh, tokens[0], tmp_path / f"w{n}")
        assert status == 200, body
    assert _meshctl(other, "token", "revoke", orders_id, env=env).returncode == 0
    status, body = _join(mesh, tokens[0], tmp_path / "w3")
    assert status == 403 and "revoked" in str(body), body
    text = _meshctl(other, "token", "list", env=env).stdout
    [row] = [line for line in text.splitlines() if line.startswith(orders_id)]
    assert "reusable" in row and row.split()[3] == "2" and row.endswith("revoked"), row


def _join(mesh: Mesh, token: str, where: Path) -> tuple[int, Any]:
    w = Workload(mesh, "orders", where)
    return call(mesh, "POST", "/v1/join", {"token": token, "csr": csr_for(w.key)})


def test_status_from_another_host(mesh: Mesh, operator_file: Path, tmp_path: Path) -> None:
    done = _meshctl(tmp_path / "other", "status", "--operator-token-file", str(operator_file),
                    "--registry", mesh.url)
    assert done.returncode == 0, done.stderr
    assert f"registry {mesh.url} (remote)" in done.stdout


def test_registry_without_credential_is_a_clear_error(mesh: Mesh, tmp_path: Path) -> None:
    done = _meshctl(tmp_path / "other", "status", "--registry", mesh.url)
    assert done.returncode == 1
    assert "--operator-token-file" in done.stderr and "meshctl token operator" in done.stderr
    bare = tmp_path / "bare.token"
    bare.write_text((mesh.home / "registry" / "operator.token").read_text())
    bare.chmod(0o644)
    done = _meshctl(tmp_path / "other", "token", "list", "--operator-token-file", str(bare))
    assert done.returncode == 1 and "readable by others than its owner" in done.stderr
    bare.chmod(0o600)
    done = _meshctl(tmp_path / "other", "token", "list", "--operator-token-file", str(bare),
                    "--registry", mesh.url)
    assert done.returncode == 1 and "no CA pin" not in done.stderr
    assert "bare token" in done.stderr and "Traceback" not in done.stderr


def test_route_set_weight_from_another_host_edits_the_registrys_file(
    mesh: Mesh, operator_file: Path, tmp_path: Path
) -> None:
    path = mesh.config / "orders.yaml"
    before = path.read_text()
    done = _meshctl(tmp_path / "other", "route", "set-weight", "orders", "v1=50", "v2=50",
                    "--operator-token-file", str(operator_file))
    assert done.returncode == 0, done.stderr
    after = path.read_text()
    assert after == before.replace("weight: 90", "weight: 50").replace("weight: 10",
                                                                        "weight: 50")
    assert "# Canary: 90 % of orders traffic" in after  # comments kept
    assert "written" in done.stdout and str(path) in done.stdout.replace("\n", "")

    # Bad weights: refused, nothing written.
    done = _meshctl(tmp_path / "other", "route", "set-weight", "orders", "v1=50", "v3=50",
                    "--operator-token-file", str(operator_file))
    assert done.returncode == 1 and "v3" in done.stderr
    assert path.read_text() == after


def test_route_weights_api_is_the_operators_only(mesh: Mesh, tmp_path: Path) -> None:
    w = join(mesh, "frontend", tmp_path / "w")
    before = (mesh.config / "orders.yaml").read_text()
    status, body = w.call("POST", "/v1/routes/orders/weights",
                          {"weights": {"v1": 0, "v2": 100}, "route": None, "dry_run": False})
    assert status == 403, body
    status, body = call(mesh, "POST", "/v1/routes/orders/weights",
                        {"weights": {"v1": 0, "v2": 100}})
    assert status == 401, body
    assert (mesh.config / "orders.yaml").read_text() == before


def test_why_and_check_from_another_host(mesh: Mesh, operator_file: Path,
                                         tmp_path: Path) -> None:
    done = _meshctl(tmp_path / "other", "why", "frontend", "orders", "/", "-o", "json",
                    "--operator-token-file", str(operator_file))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert "canary" in json.dumps(answer), answer
    done = _meshctl(tmp_path / "other", "check", "-o", "json",
                    "--operator-token-file", str(operator_file))
    checks = json.loads(done.stdout)["checks"]
    [reg] = [c for c in checks if c["check"] == "registry"]
    assert reg["status"] == "ok", reg


def test_proxy_pages_relayed_through_the_registry(mesh: Mesh, operator_file: Path,
                                                  tmp_path: Path) -> None:
    """proxy-config from another host reads the proxy through its stream; only the operator
    may ask, only read-only pages, and only the proxy holding the stream may answer."""
    _, port = mesh.app("orders")
    info = mesh.proxy("orders", app_port=port)
    done = _meshctl(tmp_path / "other", "proxy-config", "orders", "certs", "-o", "json",
                    "--operator-token-file", str(operator_file))
    assert done.returncode == 0, done.stderr
    assert "spiffe://shop.local/ns/default/sa/orders" in done.stdout

    from tests.registry.server.support import op

    status, body = op(mesh, "GET", f"/v1/proxies/{info['id']}/admin?path=/tap")
    assert status == 400 and "not relayed" in str(body), body
    status, body = op(mesh, "GET", "/v1/proxies/nobody/admin?path=/stats")
    assert status == 404, body
    w = join(mesh, "frontend", tmp_path / "w")
    status, body = w.call("GET", f"/v1/proxies/{info['id']}/admin?path=/config_dump")
    assert status == 403, body
    status, body = w.call("POST", "/v1/admin-reply",
                          {"proxy_id": info["id"], "request": 1, "status": 200, "body": "x"})
    assert status == 409, body


def test_route_show_from_another_host(mesh: Mesh, operator_file: Path, tmp_path: Path) -> None:
    here = _meshctl(mesh.home, "route", "show", "orders", "-o", "json",
                    env={"MESH_CONFIG": str(mesh.config)})
    there = _meshctl(tmp_path / "other", "route", "show", "orders", "-o", "json",
                     "--operator-token-file", str(operator_file))
    assert there.returncode == 0, there.stderr
    assert json.loads(there.stdout) == json.loads(here.stdout)
    assert json.loads(there.stdout)["routes"][0]["name"] == "canary"
    done = _meshctl(tmp_path / "other", "route", "show", "nothing",
                    "--operator-token-file", str(operator_file))
    assert done.returncode == 1 and "unknown service `nothing`" in done.stderr


@pytest.mark.parametrize("body", [
    {"service": "orders", "reusable": "yes"},
    {"service": "orders", "ttl_s": True},
    {"service": "orders", "ttl_s": -1},
    {"service": "nothing"},
])
def test_bad_token_requests_are_refused_and_mint_nothing(mesh: Mesh, body: dict[str, Any]
                                                         ) -> None:
    from tests.registry.server.support import op

    before = op(mesh, "GET", "/v1/tokens")[1]["tokens"]
    status, answer = op(mesh, "POST", "/v1/tokens", body)
    assert status == 400, answer
    assert op(mesh, "GET", "/v1/tokens")[1]["tokens"] == before
