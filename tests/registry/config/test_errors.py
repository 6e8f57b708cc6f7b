"""One broken variant of the example config per error class: exact file, line, column, path."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import load_directory
from tests.registry.config.conftest import replace_in

PA_DEFAULT = (
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n"
    "  name: default\n"
)

# (id, file, old text, new text, every expected diagnostic)
VARIANTS: list[tuple[str, str, str, str, list[str]]] = [
    ("yaml_syntax", "orders.yaml",
     "  hosts:\n    - orders\n", "  hosts:\n    - orders\n   bad: [\n",
     ["orders.yaml:9:4: YAML syntax error: expected <block end>, but found "
      "'<block mapping start>' (while parsing a block mapping)"]),
    ("unknown_kind", "security.yaml", "kind: PeerAuthentication", "kind: PeerAuthentcation",
     ["security.yaml:3:7: kind: unknown kind `PeerAuthentcation` (did you mean "
      "`PeerAuthentication`?); supported: VirtualService, DestinationRule, "
      "AuthorizationPolicy, PeerAuthentication, Gateway, Canary"]),
    ("unsupported_kind", "security.yaml", "kind: PeerAuthentication", "kind: ServiceEntry",
     ["security.yaml:3:7: kind: kind `ServiceEntry` is not supported yet"]),
    ("bad_api_version", "orders.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService",
     "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService",
     ["orders.yaml:2:13: apiVersion: apiVersion `networking.istio.io/v1alpha3` is not "
      "supported for VirtualService: use networking.istio.io/v1 or networking.istio.io/v1beta1"]),
    ("unknown_field", "orders.yaml", "      retries:\n", "      retires:\n",
     ["orders.yaml:11:7: spec.http[0].retires: unknown field `retires` (did you mean `retries`?)"]),
    ("unsupported_field", "orders.yaml", "    - name: canary\n",
     "    - name: canary\n      corsPolicy: {}\n",
     ["orders.yaml:11:7: spec.http[0].corsPolicy: `corsPolicy` is not supported yet"]),
    ("wrong_type", "mesh.yaml", "rateLimit: {requestsPerUnit: 100,",
     "rateLimit: {requestsPerUnit: many,",
     ["mesh.yaml:28:34: services.payments.rateLimit.requestsPerUnit: expected an integer, "
      "got a string"]),
    ("unsupported_protocol", "mesh.yaml",
     "  inventory:\n    ports:\n      - {port: 8080, protocol: http",
     "  inventory:\n    ports:\n      - {port: 8080, protocol: redis",
     ["mesh.yaml:34:32: services.inventory.ports[0].protocol: `redis` is not supported yet"]),
    ("exclude_inbound_port_range", "mesh.yaml",
     'command: ["python3", "apps/shop.py", "--service", "payments", "--version", "v1"]\n',
     'command: ["python3", "apps/shop.py", "--service", "payments", "--version", "v1"]\n'
     "        excludeInboundPorts: [9100, 70000]\n",
     ["mesh.yaml:32:37: services.payments.workloads[0].excludeInboundPorts[1]: port 70000 "
      "is outside 1..65535"]),
    ("duration_no_unit", "orders.yaml", "perTryTimeout: 500ms", "perTryTimeout: 10",
     ["orders.yaml:13:24: spec.http[0].retries.perTryTimeout: duration 10 has no unit: "
      "write e.g. 10s"]),
    ("duration_negative", "orders.yaml", "perTryTimeout: 500ms", "perTryTimeout: -1s",
     ["orders.yaml:13:24: spec.http[0].retries.perTryTimeout: duration '-1s' is negative"]),
    ("duration_garbage", "orders.yaml", "      interval: 10s", "      interval: 1.5.s",
     ["orders.yaml:35:17: spec.trafficPolicy.outlierDetection.interval: invalid duration "
      "'1.5.s': write a number and a unit (ns, us, ms, s, m, h), e.g. 500ms, 1.5s, 1m30s"]),
    ("duration_too_short", "orders.yaml", "perTryTimeout: 500ms", "perTryTimeout: 0s",
     ["orders.yaml:13:24: spec.http[0].retries.perTryTimeout: duration 0s is too short: "
      "it must be at least 1ms"]),
    ("weights_sum", "orders.yaml", "          weight: 10", "          weight: 20",
     ["orders.yaml:16:9: spec.http[0].route: weights add up to 110, not 100 (90 + 20)"]),
    ("negative_weight", "orders.yaml", "          weight: 10", "          weight: -10",
     ["orders.yaml:23:19: spec.http[0].route[1].weight: weight -10 is outside 0..100"]),
    ("unknown_service", "orders.yaml", "  hosts:\n    - orders\n", "  hosts:\n    - ordres\n",
     ["orders.yaml:8:7: spec.hosts[0]: unknown service `ordres` (did you mean `orders`?); "
      "mesh.yaml defines: frontend, inventory, orders, payments"]),
    ("unknown_destination", "orders.yaml", "            host: orders\n            subset: v2",
     "            host: shipping\n            subset: v2",
     ["orders.yaml:21:19: spec.http[0].route[1].destination.host: unknown service "
      "`shipping`; mesh.yaml defines: frontend, inventory, orders, payments"]),
    ("other_namespace_host", "orders.yaml", "  hosts:\n    - orders\n",
     "  hosts:\n    - orders.prod.svc.cluster.local\n",
     ["orders.yaml:8:7: spec.hosts[0]: host `orders.prod.svc.cluster.local` is in namespace "
      "`prod`; every service of this mesh is in namespace `default`"]),
    ("unknown_subset", "orders.yaml", "            subset: v2", "            subset: v3",
     ["orders.yaml:22:21: spec.http[0].route[1].destination.subset: unknown subset `v3` of "
      "`orders`: DestinationRule `orders` (orders.yaml:26:1) defines: v1, v2"]),
    ("re2_backreference", "orders.yaml", "    - name: canary\n",
     "    - name: canary\n      match:\n        - uri:\n            regex: '(a)\\1'\n",
     ["orders.yaml:13:20: spec.http[0].match[0].uri.regex: backreferences (\\1) are not "
      "supported by RE2, which Istio uses"]),
    ("re2_lookahead", "orders.yaml", "    - name: canary\n",
     "    - name: canary\n      match:\n        - headers:\n            x-user:\n"
     "              regex: 'a(?=b)'\n",
     ["orders.yaml:14:22: spec.http[0].match[0].headers.x-user.regex: lookahead (?= / (?! "
      "are not supported by RE2, which Istio uses"]),
    ("re2_lookbehind", "orders.yaml", "    - name: canary\n",
     "    - name: canary\n      match:\n        - queryParams:\n            q:\n"
     "              regex: '(?<=a)b'\n",
     ["orders.yaml:14:22: spec.http[0].match[0].queryParams.q.regex: lookbehind (?<= / (?<! "
      "are not supported by RE2, which Istio uses"]),
    ("re2_program_size", "orders.yaml", "    - name: canary\n",
     "    - name: canary\n      match:\n        - authority:\n            regex: '.{0,100}'\n",
     ["orders.yaml:13:20: spec.http[0].match[0].authority.regex: regex program size 904 is "
      "over 100, Envoy's limit (re2.max_program_size): simplify it (e.g. `.*` rather than "
      "`.{0,100}`)"]),
    ("invalid_regex", "orders.yaml", "    - name: canary\n",
     "    - name: canary\n      match:\n        - uri:\n            regex: '(unclosed'\n",
     ["orders.yaml:13:20: spec.http[0].match[0].uri.regex: invalid regex (RE2 syntax, as "
      "Istio): missing ): (unclosed"]),
    ("duplicate_name", "security.yaml",
     "# Only orders", f"{PA_DEFAULT}spec: {{}}\n---\n# Only orders",
     ["security.yaml:13:9: metadata.name: duplicate PeerAuthentication `default` (first "
      "defined at security.yaml:2:1)"]),
    ("two_rules_same_host", "orders.yaml", "  name: orders\nspec:\n  host: orders",
     "  name: orders\nspec:\n  host: orders\n---\napiVersion: networking.istio.io/v1\n"
     "kind: DestinationRule\nmetadata:\n  name: orders-again\nspec:\n  host: orders",
     ["orders.yaml:38:9: spec.host: a second DestinationRule for `orders`: DestinationRule "
      "`orders` (orders.yaml:26:1) already covers it; Istio would merge or ignore one, so put "
      "both in one resource"]),
    ("percentage_range", "orders.yaml", "    - name: canary\n",
     "    - name: canary\n      fault:\n        abort:\n          httpStatus: 503\n"
     "          percentage: {value: 150}\n",
     ["orders.yaml:14:31: spec.http[0].fault.abort.percentage.value: percentage 150 is "
      "outside 0..100"]),
    ("http_status_range", "orders.yaml", "    - name: canary\n",
     "    - name: canary\n      fault:\n        abort:\n          httpStatus: 700\n",
     ["orders.yaml:13:23: spec.http[0].fault.abort.httpStatus: httpStatus 700 is outside "
      "200..599"]),
    ("retry_on_unknown", "orders.yaml", 'retryOn: "5xx,reset,connect-failure"',
     'retryOn: "5xx,reset,connect-failur"',
     ["orders.yaml:14:18: spec.http[0].retries.retryOn: unknown retryOn condition "
      "`connect-failur`: use 5xx, cancelled, connect-failure, deadline-exceeded, "
      "gateway-error, internal, refused-stream, reset, resource-exhausted, retriable-4xx, "
      "retriable-status-codes, unavailable or an HTTP status code such as 503"]),
    ("retry_on_unsupported", "orders.yaml", 'retryOn: "5xx,reset,connect-failure"',
     'retryOn: "5xx,retriable-headers"',
     ["orders.yaml:14:18: spec.http[0].retries.retryOn: retryOn condition "
      "`retriable-headers` is not supported yet"]),
    ("duplicate_key", "mesh.yaml",
     "certificateTTL: 24h\n", "certificateTTL: 24h\ncertificateTTL: 12h\n",
     ["mesh.yaml:6:1: certificateTTL: duplicate key `certificateTTL` (first defined on line 5)"]),
    ("wrong_namespace", "orders.yaml", "  name: orders\nspec:\n  hosts:",
     "  name: orders\n  namespace: prod\nspec:\n  hosts:",
     ["orders.yaml:6:14: metadata.namespace: namespace `prod` is not the mesh namespace "
      "`default` (set in mesh.yaml)"]),
    ("alias", "mesh.yaml",
     "  orders:\n    ports:\n      - {port: 8080, protocol: http, name: http}",
     "  orders:\n    ports:\n      - &p {port: 8080, protocol: http, name: http}\n      - *p",
     ["mesh.yaml:18:9: YAML aliases (*name) are not supported: write the value out in full"]),
    ("lb_unsupported", "orders.yaml", "  trafficPolicy:\n",
     "  trafficPolicy:\n    loadBalancer:\n      simple: PASSTHROUGH\n",
     ["orders.yaml:34:15: spec.trafficPolicy.loadBalancer.simple: `PASSTHROUGH` is not "
      "supported yet"]),
    ("tls_mode", "orders.yaml",
     "  trafficPolicy:\n", "  trafficPolicy:\n    tls:\n      mode: SIMPLE\n",
     ["orders.yaml:34:13: spec.trafficPolicy.tls.mode: `SIMPLE` is not supported yet"]),
    ("when_key", "security.yaml", '            principals: ["shop.local/ns/default/sa/orders"]\n',
     '            principals: ["shop.local/ns/default/sa/orders"]\n      when:\n'
     '        - key: request.auth.claims[iss]\n          values: ["x"]\n',
     ["security.yaml:25:16: spec.rules[0].when[0].key: condition key "
      "`request.auth.claims[iss]` is not supported yet (supported: request.headers[<name>], "
      "source.principal, source.namespace, destination.port)"]),
    ("ip_block", "security.yaml", '            principals: ["shop.local/ns/default/sa/orders"]\n',
     '            principals: ["shop.local/ns/default/sa/orders"]\n'
     '            ipBlocks: ["10.0.0.0/8", "10.0.0.300"]\n',
     ["security.yaml:24:38: spec.rules[0].from[0].source.ipBlocks[1]: `10.0.0.300` is not an "
      "IP address or CIDR (203.0.113.4, 203.0.113.0/24)"]),
    ("custom_action", "security.yaml", "  action: ALLOW", "  action: CUSTOM",
     ["security.yaml:19:11: spec.action: `CUSTOM` is not supported yet"]),
    ("mtls_mode", "security.yaml", "    mode: STRICT", "    mode: STRICTER",
     ["security.yaml:8:11: spec.mtls.mode: unknown value `STRICTER`: use one of STRICT, "
      "PERMISSIVE, DISABLE, UNSET"]),
    ("trust_domain", "mesh.yaml", "trustDomain: shop.local", "trustDomain: Shop.Local",
     ["mesh.yaml:3:14: trustDomain: `Shop.Local` is not a valid trust domain (lowercase "
      "letters, digits, '.', '-', '_')"]),
]


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [v[1:] for v in VARIANTS],
    ids=[v[0] for v in VARIANTS],
)
def test_broken_variant(example_copy: Path, file: str, old: str, new: str,
                        expected: list[str]) -> None:
    replace_in(example_copy, file, old, new)
    result = load_directory(example_copy)
    assert not result.ok
    assert result.config is None
    assert [str(e) for e in result.errors] == expected


def test_every_error_is_reported_at_once(example_copy: Path) -> None:
    replace_in(example_copy, "orders.yaml", "perTryTimeout: 500ms", "perTryTimeout: abc")
    replace_in(example_copy, "orders.yaml", "          weight: 10", "          weight: 20")
    replace_in(example_copy, "mesh.yaml", "protocol: http, name: http}\n    accessLog",
               "protocol: udp, name: http}\n    accessLog")
    replace_in(example_copy, "security.yaml", "  action: ALLOW", "  action: CUSTOM")
    errors = [(e.file, e.line, e.path) for e in load_directory(example_copy).errors]
    assert errors == [
        ("mesh.yaml", 9, "services.frontend.ports[0].protocol"),
        ("orders.yaml", 13, "spec.http[0].retries.perTryTimeout"),
        ("orders.yaml", 16, "spec.http[0].route"),
        ("security.yaml", 19, "spec.action"),
    ]


def test_missing_mesh_yaml(example_copy: Path) -> None:
    (example_copy / "mesh.yaml").unlink()
    result = load_directory(example_copy)
    assert [str(e) for e in result.errors] == [
        "mesh.yaml:1:1: missing: the config directory needs a mesh.yaml"
    ]


def test_subset_without_destination_rule(example_copy: Path) -> None:
    replace_in(example_copy, "orders.yaml", "spec:\n  host: orders\n", "spec:\n  host: payments\n")
    errors = [str(e) for e in load_directory(example_copy).errors]
    assert errors == [
        "orders.yaml:18:21: spec.http[0].route[0].destination.subset: subset `v1` of `orders` "
        "is not defined: no DestinationRule for `orders` defines subsets",
        "orders.yaml:22:21: spec.http[0].route[1].destination.subset: subset `v2` of `orders` "
        "is not defined: no DestinationRule for `orders` defines subsets",
    ]


def test_exclude_inbound_ports_is_read_per_workload(example_copy: Path) -> None:
    replace_in(example_copy, "mesh.yaml",
               '"--service", "payments", "--version", "v1"]\n',
               '"--service", "payments", "--version", "v1"]\n'
               "        excludeInboundPorts: [9100, 22, 9100]\n")  # fmt: skip
    result = load_directory(example_copy)
    assert result.config is not None, result.errors
    payments = next(s for s in result.config.services if s.name == "payments")
    assert payments.workloads[0].exclude_inbound_ports == (22, 9100)
    orders = next(s for s in result.config.services if s.name == "orders")
    assert all(w.exclude_inbound_ports == () for w in orders.workloads)
