"""/v1/canaries on a real registry: the operator's only, bodies checked, refusals change
nothing, a started canary edits the config file and abort puts it back."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import load_directory
from tests.integration.harness import Mesh, wait_until
from tests.registry.server.support import call, join, op

pytestmark = pytest.mark.slow
START = {"service": "orders", "to": "v2",
         "policy": {"steps": [30, 100], "interval_s": 60.0, "min_requests": 5}}


def _weights(mesh: Mesh) -> dict[str, int]:
    cfg = load_directory(mesh.config).config
    assert cfg is not None
    vs = cfg.virtual_service_for("orders")
    assert vs is not None
    return {d.destination.subset or "": d.weight for d in vs.http[0].route}


def test_only_the_operator(mesh: Mesh, tmp_path: Path) -> None:
    assert call(mesh, "GET", "/v1/canaries")[0] == 401
    assert call(mesh, "POST", "/v1/canaries", START, bearer="wrong")[0] == 403
    orders = join(mesh, "orders", tmp_path / "orders")
    status, data = orders.call("POST", "/v1/canaries", START)
    assert status == 403 and "operator" in data["error"]
    assert orders.call("POST", "/v1/canaries/orders/promote")[0] == 403
    assert _weights(mesh) == {"v1": 90, "v2": 10}


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"service": "orders"}, 400, "`service` and `to` are required"),
    ({**START, "policy": {"steps": "5,10"}}, 400, "`steps` must be a list of integers"),
    ({**START, "policy": {"threshold": 3}}, 400, "unknown policy field(s) threshold"),
    ({**START, "policy": {"steps": [50, 10]}}, 409, "must rise"),
    ({**START, "to": "v3"}, 409, "unknown subset `v3`"),
    ({**START, "service": "payments"}, 409, "no VirtualService routes `payments`"),
])
def test_refusals_change_nothing(mesh: Mesh, body: dict[str, object], status: int,
                                 message: str) -> None:
    raw = (mesh.config / "orders.yaml").read_bytes()
    got, data = op(mesh, "POST", "/v1/canaries", body)
    assert got == status and message in data["error"], data
    assert (mesh.config / "orders.yaml").read_bytes() == raw
    assert op(mesh, "GET", "/v1/canaries") == (200, {"canaries": []})


def test_start_then_abort(mesh: Mesh) -> None:
    status, data = op(mesh, "POST", "/v1/canaries", START)
    assert status == 200, data
    assert data["phase"] == "progressing" and data["weights"] == {"v1": 70, "v2": 30}
    assert _weights(mesh) == {"v1": 70, "v2": 30}
    wait_until(lambda: op(mesh, "GET", "/v1/status")[1]["config_version"] >= 2, 10,
               "the edit to be published")
    assert op(mesh, "POST", "/v1/canaries", START)[0] == 409  # one at a time
    status, data = op(mesh, "POST", "/v1/canaries/orders/abort")
    assert status == 200 and data["phase"] == "rolled_back"
    assert data["events"][-1]["message"].endswith("aborted by the operator")
    assert _weights(mesh) == {"v1": 100, "v2": 0}
    assert op(mesh, "POST", "/v1/canaries/orders/promote")[0] == 409
    (listed,) = op(mesh, "GET", "/v1/canaries")[1]["canaries"]
    assert listed["phase"] == "rolled_back"
