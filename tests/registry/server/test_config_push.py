"""File edits reach subscribed clients: next version, nothing for a no-op save, one per burst."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Mesh, wait_until
from tests.registry.server.support import StreamFollower, join, metric, op

pytestmark = pytest.mark.slow

def set_orders_weights(config: Path, v1: int) -> None:
    """Rewrite the canary's 90/10 split (as it is in the example) as v1/(100-v1), in place."""
    path = config / "orders.yaml"
    text = path.read_text()
    text = re.sub(r"(subset: v1\n\s+weight: )\d+", rf"\g<1>{v1}", text)
    text = re.sub(r"(subset: v2\n\s+weight: )\d+", rf"\g<1>{100 - v1}", text)
    path.write_text(text)


def canary_weights(view: dict[str, object]) -> list[int]:
    """The weights of the orders VirtualService's routes, as the proxy receives them."""
    config = view["config"]
    assert isinstance(config, dict), config
    (orders,) = [vs for vs in config["virtual_services"] if vs["name"] == "orders"]
    text = repr(orders)  # not the example's gateway VirtualService (one route, weight 100)
    return [int(w) for w in re.findall(r"'weight': (\d+)", text)]


@pytest.fixture
def follower(mesh: Mesh, tmp_path: Path) -> Iterator[StreamFollower]:
    w = join(mesh, "frontend", tmp_path / "frontend")
    f = StreamFollower(mesh, w.ctx(), "frontend-1")
    assert f.status == 200
    yield f
    f.close()  # before the registry stops (a stream left open holds it: issue 18)


def test_edit_publishes_next_version_to_subscriber(mesh: Mesh, follower: StreamFollower) -> None:
    first = follower.next_view()
    assert first["config_version"] == 1
    assert 90 in canary_weights(first)
    set_orders_weights(mesh.config, 70)
    second = follower.next_view()
    assert second["config_version"] == 2
    assert second["epoch"] == first["epoch"]
    assert sorted(canary_weights(second)) == [30, 70]
    assert op(mesh, "GET", "/v1/config")[1]["version"] == 2
    assert metric(mesh, "meshctl_registry_config_version") == 2


def test_saving_a_file_unchanged_publishes_nothing(mesh: Mesh,
                                                   follower: StreamFollower) -> None:
    assert follower.next_view()["config_version"] == 1
    for name in ("orders.yaml", "mesh.yaml"):
        path = mesh.config / name
        path.write_bytes(path.read_bytes())  # an editor's :w with no change
        path.touch()
    assert follower.no_view_within(2.0)
    assert op(mesh, "GET", "/v1/status")[1]["config_version"] == 1
    # The watcher is alive: a real change after the no-op saves still goes out.
    set_orders_weights(mesh.config, 60)
    assert follower.next_view()["config_version"] == 2


def test_burst_of_edits_ends_on_the_last_edit(mesh: Mesh, follower: StreamFollower) -> None:
    """Edits back to back: the debounce usually folds them into one version, but how many
    versions a burst makes depends on the machine's speed (not asserted). What must hold:
    the last edit is published, versions count up by one, none goes back to an older edit."""
    assert follower.next_view()["config_version"] == 1
    edits = (80, 70, 60, 50, 40, 30)
    for v1 in edits:
        set_orders_weights(mesh.config, v1)
    seen: list[dict[str, Any]] = []
    follower.view_where(lambda v: seen.append(v) or canary_weights(v)[0] == 30,
                        what="view with the last edit (v1 30)")  # fmt: skip
    versions = [v["config_version"] for v in seen]
    assert versions == list(range(2, 2 + len(seen))), versions
    v1s = [canary_weights(v)[0] for v in seen]
    assert set(v1s) <= set(edits) and v1s == sorted(v1s, reverse=True), v1s  # in edit order
    assert sorted(canary_weights(seen[-1])) == [30, 70]
    assert follower.no_view_within(1.5)
    assert op(mesh, "GET", "/v1/status")[1]["config_version"] == versions[-1]


def test_invalid_edit_keeps_old_version_and_reports_error(mesh: Mesh,
                                                         follower: StreamFollower) -> None:
    assert follower.next_view()["config_version"] == 1
    orders = mesh.config / "orders.yaml"
    good = orders.read_text()
    orders.write_text(good.replace("weight: 10", "weight: ten"))
    status = wait_until(lambda: (s := op(mesh, "GET", "/v1/status")[1])["last_config_error"]
                        and s, what="config error reported")
    errors = status["last_config_error"]["errors"]
    assert errors and all(re.match(r"\S*orders\.yaml:\d+:\d+: \S", e) for e in errors), errors
    assert status["config_version"] == 1
    assert metric(mesh, "meshctl_registry_config_error") == 1
    assert op(mesh, "GET", "/v1/config")[1]["version"] == 1
    assert follower.no_view_within(1.0)

    orders.write_text(good)
    set_orders_weights(mesh.config, 75)
    view = follower.next_view()
    assert view["config_version"] == 2
    assert sorted(canary_weights(view)) == [25, 75]
    status = op(mesh, "GET", "/v1/status")[1]
    assert status["last_config_error"] is None
    assert metric(mesh, "meshctl_registry_config_error") == 0
    assert metric(mesh, "meshctl_registry_config_rejections_total") == 1
