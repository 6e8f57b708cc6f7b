"""meshctl.launch.plan: config in, what to run out (pure: no sockets, no namespaces)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from common.vip import service_vip
from meshctl.launch import plan as pm
from registry.config import MeshConfig, load_directory
from tests.example import CONFIG as EXAMPLE
from tests.example import copy_config

NET = pm.Network("meshbr0", "10.250.7.0/24")


def _config(directory: Path = EXAMPLE) -> MeshConfig:
    result = load_directory(directory)
    assert result.config is not None, result.errors
    return result.config


def _ports(start: int = 20000) -> Callable[[], int]:
    counter = itertools.count(start)
    return lambda: next(counter)


def _transparent(cfg: MeshConfig | None = None, **kw: object) -> pm.Plan:
    args: dict[str, object] = {
        "mode": pm.TRANSPARENT,
        "config_dir": str(EXAMPLE),
        "registry_port": 15012,
        "monitor_port": 15014,
        "network": NET,
        "alloc_port": _ports(),  # `up` passes one in every mode (the gateway's admin ports)
    }
    args.update(kw)
    return pm.build_plan(cfg or _config(), **args)  # type: ignore[arg-type]


def _explicit(cfg: MeshConfig | None = None, **kw: object) -> pm.Plan:
    args: dict[str, object] = {
        "mode": pm.EXPLICIT,
        "config_dir": str(EXAMPLE),
        "registry_port": 15012,
        "monitor_port": 15014,
        "alloc_port": _ports(),
    }
    args.update(kw)
    return pm.build_plan(cfg or _config(), **args)  # type: ignore[arg-type]


def _with_mesh_yaml(tmp_path: Path, edit: Callable[[str], str]) -> MeshConfig:
    """A copy of the example in tmp_path/mesh, its mesh.yaml edited."""
    copy_config(tmp_path / "mesh")
    return _edit_mesh_yaml(tmp_path, edit)


def _edit_mesh_yaml(tmp_path: Path, edit: Callable[[str], str]) -> MeshConfig:
    config = tmp_path / "mesh"
    (config / "mesh.yaml").write_text(edit((config / "mesh.yaml").read_text()))
    return _config(config)


# --- transparent mode ------------------------------------------------------------------------


def test_one_namespace_per_workload_named_service_version() -> None:
    plan = _transparent()
    assert plan.names == ("frontend-v1", "orders-v1", "orders-v2", "payments-v1", "inventory-v1")
    assert all(w.netns == w.name for w in plan.workloads)
    assert plan.registry_url == "https://10.250.7.1:15012"  # the bridge's address
    assert plan.registry_listen == "10.250.7.1"


def test_addresses_are_distinct_hosts_of_the_subnet_never_the_gateway() -> None:
    addrs = [w.address for w in _transparent().workloads]
    assert addrs == ["10.250.7.2", "10.250.7.3", "10.250.7.4", "10.250.7.5", "10.250.7.6"]


def test_hosts_file_maps_every_service_to_its_vip() -> None:
    for w in _transparent().workloads:
        assert dict(w.hosts) == {
            s: service_vip(s) for s in ("frontend", "orders", "payments", "inventory")
        }


def test_proxy_arguments_transparent() -> None:
    w = _transparent().workload("orders-v2")
    assert w is not None
    assert w.proxy_args == (
        "proxy", "--service", "orders", "--version", "v2",
        "--registry", "https://10.250.7.1:15012", "--proxy-id", "orders-v2",
        "--advertise", "10.250.7.4", "--inbound", "0.0.0.0:15006",
        "--outbound", "127.0.0.1:15001", "--admin", "127.0.0.1:15000",
        "--metrics", "0.0.0.0:15090",
    )  # fmt: skip
    assert w.inbound_ports == (8080,)


def test_app_runs_its_command_from_the_config_dirs_parent() -> None:
    w = _transparent().workload("orders-v1")
    assert w is not None
    assert w.app_argv == ("python3", "apps/shop.py", "--service", "orders", "--version", "v1")
    assert w.cwd == str(EXAMPLE.parent)
    env = dict(w.app_env)
    assert env["PORT"] == "8080"
    assert env["MESH_SERVICE"] == "orders" and env["MESH_VERSION"] == "v1"


def test_workload_env_wins_over_ours(tmp_path: Path) -> None:
    cfg = _with_mesh_yaml(
        tmp_path,
        lambda t: t.replace(
            '"--service", "payments", "--version", "v1"]',
            '"--service", "payments", "--version", "v1"]\n'
            "        env: {PORT: '9000', CALLS: inventory}",
        ),
    )
    w = _transparent(cfg).workload("payments-v1")
    assert w is not None
    assert dict(w.app_env)["PORT"] == "9000"
    assert dict(w.app_env)["CALLS"] == "inventory"


def test_replicas_get_an_index_suffix_and_zero_replicas_none(tmp_path: Path) -> None:
    cfg = _with_mesh_yaml(
        tmp_path,
        lambda t: t.replace(
            '"--service", "inventory", "--version", "v1"]',
            '"--service", "inventory", "--version", "v1"]\n        replicas: 3',
        ).replace(
            '"--service", "payments", "--version", "v1"]',
            '"--service", "payments", "--version", "v1"]\n        replicas: 0',
        ),
    )
    names = _transparent(cfg).names
    assert "payments-v1" not in names
    assert [n for n in names if n.startswith("inventory")] == [
        "inventory-v1-1",
        "inventory-v1-2",
        "inventory-v1-3",
    ]


def test_prefix_names_namespaces_and_bridge() -> None:
    plan = _transparent(prefix="t0a1b2-")
    assert plan.names[0] == "t0a1b2-frontend-v1"
    assert pm.bridge_name("t0a1b2-") == "t0a1b2-br0"
    assert pm.bridge_name("") == "meshbr0"
    assert len(pm.bridge_name("abcdefghijkl")) <= 15


@pytest.mark.parametrize("bad", ["UPPER", "a_b", "x" * 13, "-lead", "a b"])
def test_bad_prefixes_are_refused(bad: str) -> None:
    with pytest.raises(pm.PlanError, match="prefix"):
        _transparent(prefix=bad)


def test_a_full_subnet_is_an_error() -> None:
    with pytest.raises(pm.PlanError, match="no address left"):
        _transparent(network=pm.Network("meshbr0", "10.250.7.0/30"))  # 2 hosts: gw + 1


def test_modes_need_their_inputs() -> None:
    with pytest.raises(pm.PlanError, match="network"):
        _transparent(network=None)
    with pytest.raises(pm.PlanError, match="allocator"):
        _explicit(alloc_port=None)
    with pytest.raises(pm.PlanError, match="mode"):
        _explicit(mode="magic")


# --- explicit mode ---------------------------------------------------------------------------


def test_explicit_mode_one_upstream_listener_per_other_service() -> None:
    plan = _explicit()
    assert plan.network is None and plan.registry_url == "https://127.0.0.1:15012"
    w = plan.workload("frontend-v1")
    assert w is not None and w.netns is None and w.address == "127.0.0.1"
    ports = dict(w.ports)
    ups = [a for a in w.proxy_args if a.startswith(("orders:", "payments:", "inventory:"))]
    assert ups == [
        f"orders:8080=127.0.0.1:{ports['upstream:orders:8080']}",
        f"payments:8080=127.0.0.1:{ports['upstream:payments:8080']}",
        f"inventory:8080=127.0.0.1:{ports['upstream:inventory:8080']}",
    ]
    assert "upstream:frontend:8080" not in ports  # not its own service
    assert f"8080=127.0.0.1:{ports['app:8080']}" in w.proxy_args
    assert f"127.0.0.1:{ports['inbound']}" in w.proxy_args
    assert "--outbound" not in w.proxy_args


def test_explicit_mode_tells_the_app_where_its_upstreams_are() -> None:
    w = _explicit().workload("orders-v1")
    assert w is not None
    ports, env = dict(w.ports), dict(w.app_env)
    pay = f"127.0.0.1:{ports['upstream:payments:8080']}"
    assert env["MESH_UPSTREAM_PAYMENTS"] == pay
    assert env["MESH_UPSTREAM_PAYMENTS_8080"] == pay
    assert env["PORT"] == str(ports["app:8080"]) and env["HOST"] == "127.0.0.1"
    # shop.py takes them as arguments too (it does not read MESH_UPSTREAM_*)
    argv = list(w.app_argv)
    assert f"payments={pay}" in argv
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", str(ports["app:8080"])]


def test_explicit_ports_are_all_distinct() -> None:
    plan = _explicit()
    every = [p for w in plan.workloads for _, p in w.ports]
    assert len(every) == len(set(every))


def test_env_names_of_dashed_services() -> None:
    assert pm.env_name("order-history") == "ORDER_HISTORY"


# --- stability across runs -----------------------------------------------------------------


def test_same_config_same_plan_nothing_changes() -> None:
    first = _explicit()
    again = _explicit(previous=pm.from_wire(pm.to_wire(first)), alloc_port=_ports(30000))
    assert again == first
    assert pm.changed(first, again) == ([], [], [])


def test_added_and_removed_workloads_keep_the_others_untouched(tmp_path: Path) -> None:
    first = _transparent(_with_mesh_yaml(tmp_path, lambda t: t))
    cfg = _edit_mesh_yaml(
        tmp_path,
        lambda t: t.replace(
            '      - version: v2\n        command: ["python3", "apps/shop.py", "--service", '
            '"orders", "--version", "v2"]\n        env: {CALLS: "payments,inventory"}\n',
            "",
        ).replace(
            '"--service", "inventory", "--version", "v1"]',
            '"--service", "inventory", "--version", "v1"]\n        replicas: 2',
        ),
    )
    # mesh.yaml changed, so the VirtualService's v2 subset must go too: edit orders.yaml
    (tmp_path / "mesh" / "orders.yaml").write_text(
        (EXAMPLE / "orders.yaml")
        .read_text()
        .replace("weight: 90", "weight: 100")
        .replace(
            "        - destination:\n            host: orders\n            subset: v2\n"
            "          weight: 10\n",
            "",
        )
    )
    cfg = _config(tmp_path / "mesh")
    second = _transparent(cfg, previous=first)
    start, stop, restart = pm.changed(first, second)
    assert start == ["inventory-v1-1", "inventory-v1-2"]
    assert stop == ["orders-v2", "inventory-v1"]
    assert restart == []
    kept = {w.name: w.address for w in second.workloads}
    assert kept["orders-v1"] == "10.250.7.3" and kept["payments-v1"] == "10.250.7.5"
    # new workloads take the freed and the next addresses, never a kept one
    assert {kept["inventory-v1-1"], kept["inventory-v1-2"]} == {"10.250.7.4", "10.250.7.6"}


def test_a_changed_command_restarts_only_that_workload(tmp_path: Path) -> None:
    first = _transparent(_with_mesh_yaml(tmp_path, lambda t: t))
    cfg = _edit_mesh_yaml(
        tmp_path,
        lambda t: t.replace(
            '"--service", "payments", "--version", "v1"]',
            '"--service", "payments", "--version", "v1", "--call-timeout", "2"]',
        ),
    )
    assert pm.changed(first, _transparent(cfg, previous=first)) == ([], [], ["payments-v1"])


def test_wire_round_trip() -> None:
    for plan in (_transparent(), _explicit()):
        assert pm.from_wire(pm.to_wire(plan)) == plan


def test_exclude_inbound_ports_reach_the_interception_rules(tmp_path: Path) -> None:
    from meshctl.launch.supervisor import intercept_config

    cfg = _with_mesh_yaml(
        tmp_path,
        lambda t: t.replace(
            '"--service", "payments", "--version", "v1"]',
            '"--service", "payments", "--version", "v1"]\n'
            "        excludeInboundPorts: [9100]",
        ),
    )
    plan = _transparent(cfg)
    assert pm.from_wire(pm.to_wire(plan)) == plan
    payments, orders = plan.workload("payments-v1"), plan.workload("orders-v1")
    assert payments is not None and orders is not None
    assert payments.exclude_inbound_ports == (9100,)
    rules = intercept_config(payments, plan)
    # Every port captured (not only the declared 8080) but the defaults and 9100.
    assert rules.captured_inbound() == "*"
    assert rules.excluded_inbound() == [22, 9100, 15000, 15001, 15006, 15021, 15090]
    assert intercept_config(orders, plan).excluded_inbound() == [
        22, 15000, 15001, 15006, 15021, 15090
    ]


def test_the_examples_gateway_is_a_member_of_its_own_kind() -> None:
    """One gateway proxy per name the Gateways select: no app, no namespace, the servers'
    ports on 127.0.0.1, its own admin and metrics ports, kept by a second plan."""
    for plan in (_transparent(), _explicit()):
        (gw,) = plan.gateways
        assert gw.is_gateway and not any(w.is_gateway for w in plan.workloads)
        assert (gw.name, gw.service, gw.netns, gw.app_argv) == (
            "ingressgateway", "ingressgateway", None, ())
        assert gw.inbound_ports == (18081, 18443)
        assert gw.urls == ("http://shop.example.com:18081/", "https://shop.example.com:18443/")
        args = gw.proxy_args
        assert args[:4] == ("proxy", "--service", "ingressgateway", "--gateway")
        assert args[args.index("--gateway-address") + 1] == "127.0.0.1"
        assert args[args.index("--credentials") + 1] == str(EXAMPLE)
        assert args[args.index("--admin") + 1] == f"127.0.0.1:{gw.port('admin')}"
        assert plan.workload("ingressgateway") == gw and "ingressgateway" not in plan.names
    first = _explicit()
    again = _explicit(previous=first, alloc_port=_ports(30000))
    assert again.gateways == first.gateways
    assert pm.changed(first, again) == ([], [], [])
    assert pm.changed(None, first)[0][-1] == "ingressgateway"


def test_a_gateway_selector_up_cannot_start_is_an_error(tmp_path: Path) -> None:
    copy_config(tmp_path / "mesh")
    gw = tmp_path / "mesh" / "shop-gateway.yaml"
    gw.write_text(gw.read_text().replace("istio: ingressgateway", "team: edge"))
    with pytest.raises(pm.PlanError, match=r"Gateway shop-gateway .*use `istio: NAME`"):
        _explicit(_config(tmp_path / "mesh"))
