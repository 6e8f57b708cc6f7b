"""The seed article's YAML and the example shop config load with the right values."""

from __future__ import annotations

import json
from pathlib import Path

from registry.config import MeshConfig, load_directory, summary_lines
from registry.config.model import DEFAULT_RETRY_ON, UINT32_MAX
from tests.example import CONFIG as EXAMPLE
from tests.registry.config.conftest import SEED, replace_in


def test_seed_article_config_loads_with_its_values() -> None:
    result = load_directory(SEED)
    assert result.ok, [str(e) for e in result.errors]
    config = result.config
    assert config is not None
    vs = config.virtual_service_for("order-service")
    assert vs is not None and vs.hosts == ("order-service",)
    (route,) = vs.http
    assert route.retries is not None
    assert route.retries.attempts == 3
    assert route.retries.per_try_timeout_s == 0.5
    assert route.retries.retry_on == ("5xx", "reset", "connect-failure")
    (dest,) = route.route
    assert (dest.destination.host, dest.destination.subset, dest.weight) == (
        "order-service", None, 100)
    dr = config.destination_rule_for("order-service")
    assert dr is not None and dr.traffic_policy is not None
    pool = dr.traffic_policy.connection_pool
    assert pool is not None
    assert pool.tcp.max_connections == 100
    assert pool.tcp.connect_timeout_s == 10.0  # Istio's default
    assert pool.http.http1_max_pending_requests == 50
    assert pool.http.max_requests_per_connection == 10
    assert pool.http.http2_max_requests == UINT32_MAX
    od = dr.traffic_policy.outlier_detection
    assert od is not None
    assert (od.consecutive_5xx_errors, od.interval_s, od.base_ejection_time_s,
            od.max_ejection_percent, od.min_health_percent) == (3, 10.0, 30.0, 50, 0)
    assert dr.traffic_policy.load_balancer is None  # our default balancer
    assert vs.source.file == "virtual-service.yaml" and vs.source.line == 3


def test_example_config_validates_clean() -> None:
    result = load_directory(EXAMPLE)
    assert result.ok, [str(e) for e in result.errors]
    config = result.config
    assert config is not None
    assert config.trust_domain == "shop.local" and config.namespace == "default"
    assert config.certificate_ttl_s == 86400.0
    assert (config.registry_address, config.registry_port) == ("127.0.0.1", 15012)
    assert sorted(s.name for s in config.services) == [
        "frontend", "inventory", "orders", "payments"]
    orders = config.service("orders")
    assert orders is not None
    assert [w.version for w in orders.workloads] == ["v1", "v2"]
    assert dict(orders.workloads[1].labels) == {"app": "orders", "version": "v2"}
    assert orders.workloads[1].command[-2:] == ("--version", "v2")
    vs = config.virtual_service_for("orders")
    assert vs is not None
    assert [(d.destination.subset, d.weight) for d in vs.http[0].route] == [("v1", 90), ("v2", 10)]
    dr = config.destination_rule_for("orders")
    assert dr is not None and [s.name for s in dr.subsets] == ["v1", "v2"]
    (policy,) = config.authorization_policies
    assert policy.selector == (("app", "payments"),)
    assert policy.rules[0].from_[0].principals == ("shop.local/ns/default/sa/orders",)
    (peer,) = config.peer_authentications
    assert peer.mode == "STRICT" and peer.selector is None
    assert config.spiffe_id("orders") == "spiffe://shop.local/ns/default/sa/orders"
    assert config.service("nope") is None and config.virtual_service_for("payments") is None
    assert len(config.digest) == 64
    assert summary_lines(config)[0].startswith("mesh shop.local")


def test_wire_round_trip_through_json() -> None:
    config = load_directory(EXAMPLE).config
    assert config is not None
    wire = json.loads(json.dumps(config.to_wire()))
    assert MeshConfig.from_wire(wire) == config


def test_host_forms_resolve_to_the_service(example_copy: Path) -> None:
    replace_in(example_copy, "orders.yaml", "  hosts:\n    - orders\n",
               "  hosts:\n    - orders.default.svc.cluster.local\n")
    replace_in(example_copy, "orders.yaml", "spec:\n  host: orders\n",
               "spec:\n  host: orders.default\n")
    config = load_directory(example_copy).config
    assert config is not None
    assert config.virtual_services[0].hosts == ("orders",)
    assert config.destination_rules[0].host == "orders"


def test_defaults_when_fields_are_omitted(example_copy: Path) -> None:
    replace_in(example_copy, "orders.yaml", '        retryOn: "5xx,reset,connect-failure"\n', "")
    replace_in(example_copy, "orders.yaml", "      maxEjectionPercent: 50\n", "")
    config = load_directory(example_copy).config
    assert config is not None
    retries = config.virtual_services[0].http[0].retries
    assert retries is not None and retries.retry_on == DEFAULT_RETRY_ON
    policy = config.destination_rules[0].traffic_policy
    assert policy is not None and policy.outlier_detection is not None
    assert policy.outlier_detection.max_ejection_percent == 10


def test_empty_authorization_policy_spec_allows_nothing(example_copy: Path) -> None:
    (example_copy / "deny.yaml").write_text(
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\n"
        "metadata:\n  name: deny-all\nspec: {}\n")
    config = load_directory(example_copy).config
    assert config is not None
    deny = next(p for p in config.authorization_policies if p.name == "deny-all")
    assert (deny.action, deny.rules, deny.selector) == ("ALLOW", (), None)


def test_digest_changes_with_any_file(example_copy: Path) -> None:
    before = load_directory(example_copy).config
    (example_copy / "security.yaml").write_text(
        (example_copy / "security.yaml").read_text() + "\n# a comment\n")
    after = load_directory(example_copy).config
    assert before is not None and after is not None
    assert before.digest != after.digest
