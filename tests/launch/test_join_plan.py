"""The plan of a host that `up --join` joined: its proxies dial the other host's registry."""

from __future__ import annotations

from registry.config import load_directory


def test_joined_plan_dials_the_registry_elsewhere_and_excludes_it_only_as_an_address() -> None:
    """`up --join`: proxies dial the other host's registry; the interception rules leave
    its address alone, and a DNS name (a join URL may carry one) makes no CIDR."""
    import dataclasses

    from meshctl.launch.plan import Network, build_plan
    from meshctl.launch.supervisor import intercept_config
    from tests.commands.support import EXAMPLE

    config = load_directory(EXAMPLE / "mesh").config
    assert config is not None
    plan = build_plan(config, mode="transparent", config_dir="/x", registry_port=15012,
                      monitor_port=15014, network=Network("br", "10.250.9.0/24"),
                      registry_url="https://10.0.1.2:15012")  # fmt: skip
    assert plan.registry_url == "https://10.0.1.2:15012"
    assert plan.gateways == ()  # the Gateways' proxy runs beside the registry, not here
    assert all("https://10.0.1.2:15012" in w.proxy_args for w in plan.workloads)
    spec = plan.workloads[0]
    assert intercept_config(spec, plan).exclude_outbound_cidrs == ("10.0.1.2/32",)
    named = dataclasses.replace(plan, registry_listen="registry.example")
    assert intercept_config(spec, named).exclude_outbound_cidrs == ()
