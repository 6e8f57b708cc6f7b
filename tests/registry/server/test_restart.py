"""A registry restart keeps the CA, tokens, catalog, epoch and the version sequence."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import Mesh, wait_until
from tests.registry.server.support import (
    StreamFollower,
    bundle,
    call,
    csr_for,
    join,
    metric,
    mint,
    op,
)
from tests.registry.server.test_config_push import set_orders_weights

pytestmark = pytest.mark.slow

POSITIONED = re.compile(r"\S*\.yaml:\d+:\d+: \S")


def restart(mesh: Mesh) -> None:
    assert mesh.registry is not None and mesh.registry.p is not None
    mesh.registry.stop()  # SIGTERM
    assert mesh.registry.p.returncode == 0
    mesh.start_registry()


def config_version(mesh: Mesh) -> int:
    return int(op(mesh, "GET", "/v1/status")[1]["config_version"])


def test_restart_keeps_ca_tokens_catalog_epoch_and_versions(mesh: Mesh, tmp_path: Path) -> None:
    ca_before = bundle(mesh).read_bytes()
    used = mint(mesh, "orders")
    spare = mint(mesh, "payments")
    w = join(mesh, "frontend", tmp_path / "frontend")
    status, data = call(mesh, "POST", "/v1/join", {"token": used, "csr": csr_for(w.key)})
    assert status == 200, data
    ep = {"id": "orders-1", "service": "orders", "address": "127.0.0.1",
          "inbound_port": 15006, "labels": {"version": "v2"}}
    assert op(mesh, "POST", "/v1/endpoints", ep)[0] == 200
    set_orders_weights(mesh.config, 50)
    wait_until(lambda: config_version(mesh) == 2, what="version 2")
    before = op(mesh, "GET", "/v1/status")[1]

    restart(mesh)

    assert bundle(mesh).read_bytes() == ca_before
    after = op(mesh, "GET", "/v1/status")[1]
    assert after["epoch"] == before["epoch"]
    assert after["config_version"] == 2  # same files: same version, not 1 and not 3
    assert after["config_digest"] == before["config_digest"]
    # The SVID issued before the restart is still a valid mesh identity.
    assert w.call("GET", "/v1/catalog")[0] == 200
    # Catalog: the endpoint is still there, with its labels; the version did not go back.
    cat = op(mesh, "GET", "/v1/catalog")[1]
    assert [(e["id"], e["labels"]) for e in cat["endpoints"]] == [("orders-1", {"version": "v2"})]
    assert cat["version"] >= before["catalog_version"]
    # Tokens: the spent one stays spent, the spare one still works.
    status, data = call(mesh, "POST", "/v1/join", {"token": used, "csr": csr_for(w.key)})
    assert status == 403 and "already used" in data["error"]
    status, data = call(mesh, "POST", "/v1/join", {"token": spare, "csr": csr_for(w.key)})
    assert status == 200 and data["spiffe_id"].endswith("/sa/payments")
    # Versions continue from where they were.
    set_orders_weights(mesh.config, 40)
    wait_until(lambda: config_version(mesh) == 3, what="version 3 after the restart")

    # Restart over an invalid directory: the last good snapshot is served, the error shown.
    mesh.registry.stop()  # type: ignore[union-attr]
    (mesh.config / "orders.yaml").write_text("kind: VirtualService\nspec: [\n")
    mesh.start_registry()
    status, cfg = op(mesh, "GET", "/v1/config")
    assert status == 200 and cfg["version"] == 3
    st = op(mesh, "GET", "/v1/status")[1]
    assert st["epoch"] == before["epoch"]
    assert st["last_config_error"] is not None
    assert all(POSITIONED.match(e) for e in st["last_config_error"]["errors"])
    assert metric(mesh, "meshctl_registry_config_error") == 1
    assert bundle(mesh).read_bytes() == ca_before


def test_invalid_config_and_no_state_exits_1_with_positions(idle_mesh: Mesh) -> None:
    orders = idle_mesh.config / "orders.yaml"
    orders.write_text(orders.read_text().replace("weight: 10", "weight: ten"))
    r = subprocess.run(idle_mesh.registry_argv(), env=idle_mesh.env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert re.search(r"orders\.yaml:\d+:\d+: ", r.stderr), r.stderr
    assert "Traceback" not in r.stderr
    assert not (idle_mesh.home / "registry" / "snapshot.json").exists()


def test_after_a_crash_no_version_number_is_given_twice(mesh: Mesh, tmp_path: Path) -> None:
    """A version is pushed before it is saved: a crash can lose the save, never the number."""
    state = mesh.home / "registry"
    wait_until(lambda: (state / "snapshot.json").exists(), what="version 1 saved")
    saved_v1 = {n: (state / n).read_bytes() for n in ("snapshot.json", "state.json")}
    w = join(mesh, "frontend", tmp_path / "frontend")
    follower = StreamFollower(mesh, w.ctx(), "frontend-1")
    epoch = follower.next_view()["epoch"]
    set_orders_weights(mesh.config, 50)
    # this proxy runs version 2
    assert follower.next_view(what="view of version 2 (weights 50)")["config_version"] == 2
    follower.close()
    assert mesh.registry is not None
    mesh.registry.stop(signal.SIGKILL)
    for name, data in saved_v1.items():  # as if the crash came before version 2 was saved
        (state / name).write_bytes(data)
    set_orders_weights(mesh.config, 30)  # and the files changed while it was down

    mesh.start_registry()
    again = StreamFollower(mesh, w.ctx(), "frontend-1", config=2, catalog=-1, epoch=epoch)
    # version 2 must not name the new content: a view comes
    view = again.next_view(what="view of the files changed while the registry was down")
    assert view["epoch"] == epoch
    assert view["config_version"] == 3
    assert "'weight': 30" in repr(view["config"])
    again.close()
    restart(mesh)  # a clean stop keeps the exact sequence again
    assert config_version(mesh) == 3
