"""registry.config.edit: weights changed in place, every other byte of the file kept."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.config import load_directory
from registry.config.edit import (
    EditError,
    check_in_copy,
    parse_weights,
    plan_weights,
    route_positions,
    set_weights,
    verify_weights,
)

RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: orders
spec:
  host: orders
  subsets:
    - name: v1
      labels: {version: v1}
    - name: v2
      labels: {version: v2}
"""


def _setup(directory: Path, vs: str, rule: str | None = RULE, newline: str = "\n") -> Path:
    """The example with orders.yaml replaced by `vs` and the DestinationRule in rules.yaml."""
    (directory / "orders.yaml").write_bytes(vs.replace("\n", newline).encode())
    if rule is not None:
        (directory / "rules.yaml").write_text(rule)
    return directory / "orders.yaml"


def _edit(directory: Path, args: list[str], service: str = "orders",
          route: str | None = None) -> str:
    """Plan, edit and check as `meshctl route set-weight` does; the new text."""
    result = load_directory(directory)
    assert result.config is not None, result.errors
    plan = plan_weights(result.config, service, parse_weights(args), route)
    old = (directory / plan.file).read_bytes().decode("utf-8")
    new = set_weights(old, plan)
    verify_weights(check_in_copy(directory, plan.file, new), plan)
    return new


def _weights(directory: Path, text: str, service: str = "orders", index: int = 0
             ) -> list[tuple[str | None, int]]:
    """Load the directory with orders.yaml holding `text`: the route's (subset, weight)s."""
    result = check_in_copy(directory, "orders.yaml", text)
    assert result.config is not None, result.errors
    vs = result.config.virtual_service_for(service)
    assert vs is not None
    return [(d.destination.subset, d.weight) for d in vs.http[index].route]


# --- the example --------------------------------------------------------------------------


def test_example_only_the_two_weights_change(example_copy: Path) -> None:
    old = (example_copy / "orders.yaml").read_text()
    new = _edit(example_copy, ["v1=50", "v2=50"])
    assert new == old.replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50")
    assert _weights(example_copy, new) == [("v1", 50), ("v2", 50)]


def test_same_weights_change_nothing(example_copy: Path) -> None:
    old = (example_copy / "orders.yaml").read_text()
    assert _edit(example_copy, ["v1=90", "v2=10"]) == old


def test_zero_keeps_the_entry(example_copy: Path) -> None:
    new = _edit(example_copy, ["v1=100"])  # v2, not named, goes to 0 and stays listed
    assert "weight: 100" in new and "weight: 0\n" in new
    assert _weights(example_copy, new) == [("v1", 100), ("v2", 0)]


# --- layouts ------------------------------------------------------------------------------

COMMENTED = """\
# orders routing: owned by the shop team
apiVersion: networking.istio.io/v1   # v1 API
kind: VirtualService
metadata:
  name: orders  # same as the service
spec:
  hosts: [orders]
  http:
    # the only route
    - name: canary
      route:
        # stable
        - destination:
            host: orders   # the service
            subset: v1     # stable
          weight: 90   # most traffic
        # canary
        - destination:
            host: orders
            subset: v2
          weight: 10 # canary share
        # end of routes
# trailing comment
"""


def test_comments_everywhere_are_kept(example_copy: Path) -> None:
    _setup(example_copy, COMMENTED)
    new = _edit(example_copy, ["v1=75", "v2=25"])
    assert new == (COMMENTED.replace("weight: 90   #", "weight: 75   #")
                   .replace("weight: 10 #", "weight: 25 #"))


LONE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: orders
spec:
  hosts:
  - orders
  http:
  - route:
    - destination:
        host: orders.default.svc.cluster.local  # fully qualified
        subset: v1
        port:
          number: 8080
    # more to come
"""


def test_lone_destination_gets_a_weight_and_a_sibling(example_copy: Path) -> None:
    _setup(example_copy, LONE)
    new = _edit(example_copy, ["v1=90", "v2=10"])
    assert new == LONE.replace("""\
          number: 8080
""", """\
          number: 8080
      weight: 90
    - destination:
        host: orders.default.svc.cluster.local
        subset: v2
        port:
          number: 8080
      weight: 10
""")
    assert _weights(example_copy, new) == [("v1", 90), ("v2", 10)]


def test_lone_destination_at_end_of_file_without_newline(example_copy: Path) -> None:
    text = LONE.replace("    # more to come\n", "").rstrip("\n")
    _setup(example_copy, text)
    new = _edit(example_copy, ["v1=90", "v2=10"])
    assert new.endswith("          number: 8080\n      weight: 10")
    assert _weights(example_copy, new) == [("v1", 90), ("v2", 10)]


FLOW_DEST = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders}
spec:
  hosts: ["orders"]
  http:
    - route:
        - destination: {host: orders, subset: "v1"}
          weight: 100
"""


def test_flow_destination_new_entry_is_flow_too(example_copy: Path) -> None:
    _setup(example_copy, FLOW_DEST)
    new = _edit(example_copy, ["v1=90", "v2=10"])
    assert new == FLOW_DEST.replace("          weight: 100\n", """\
          weight: 90
        - destination: {host: orders, subset: "v2"}
          weight: 10
""")


FLOW_ITEM = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders}
spec:
  hosts: [orders]
  http:
    - route:
        - { destination: {host: orders, subset: v1}, weight: 100 }  # all on v1
"""


def test_flow_item(example_copy: Path) -> None:
    _setup(example_copy, FLOW_ITEM)
    new = _edit(example_copy, ["v2=100"])
    assert new == FLOW_ITEM.replace("weight: 100 }  # all on v1\n", """\
weight: 0 }  # all on v1
        - { destination: {host: orders, subset: v2}, weight: 100 }
""")
    assert _weights(example_copy, new) == [("v1", 0), ("v2", 100)]


FLOW_SEQ = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders}
spec:
  hosts: [orders]
  http:
    - route: [{destination: {host: orders, subset: v1}}]  # lone, no weight
"""


def test_flow_sequence(example_copy: Path) -> None:
    _setup(example_copy, FLOW_SEQ)
    new = _edit(example_copy, ["v1=90", "v2=10"])
    assert new == FLOW_SEQ.replace(
        "[{destination: {host: orders, subset: v1}}]",
        "[{destination: {host: orders, subset: v1}, weight: 90}, "
        "{destination: {host: orders, subset: v2}, weight: 10}]")


def test_crlf_line_endings_stay_crlf(example_copy: Path) -> None:
    _setup(example_copy, LONE)
    expected = _edit(example_copy, ["v1=90", "v2=10"])
    _setup(example_copy, LONE, newline="\r\n")
    new = _edit(example_copy, ["v1=90", "v2=10"])
    assert "\n" not in new.replace("\r\n", "")
    assert new == expected.replace("\n", "\r\n")


def test_byte_order_mark_is_kept(example_copy: Path) -> None:
    path = example_copy / "orders.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    new = _edit(example_copy, ["v1=20", "v2=80"])
    assert new.startswith("\ufeff# Canary")
    assert _weights(example_copy, new) == [("v1", 20), ("v2", 80)]


SEVERAL = """\
# first: the rule
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: orders
spec:
  host: orders
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
    - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: payments
spec:
  hosts: [payments]
  http:
    - route:
        - destination:
            host: payments
          weight: 100
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: orders
spec:
  hosts: [orders]
  http:
    - name: canary-header
      match:
        - headers:
            x-canary: {exact: "1"}
      route:
        - destination: {host: orders, subset: v2}
    - name: default
      timeout: 2s
      route:
        - destination: {host: orders, subset: v1}
          weight: 100
---
# last: nothing
"""


def test_several_documents_and_two_virtual_services(example_copy: Path) -> None:
    _setup(example_copy, SEVERAL, rule=None)
    with pytest.raises(EditError, match=r"2 http routes \(canary-header, default\).*--route"):
        _edit(example_copy, ["v1=90", "v3=10"])
    new = _edit(example_copy, ["v1=90", "v3=10"], route="default")
    assert new == SEVERAL.replace("""\
        - destination: {host: orders, subset: v1}
          weight: 100
""", """\
        - destination: {host: orders, subset: v1}
          weight: 90
        - destination: {host: orders, subset: v3}
          weight: 10
""")
    assert _weights(example_copy, new, index=1) == [("v1", 90), ("v3", 10)]
    assert _weights(example_copy, new, index=0) == [("v2", 100)]
    assert _weights(example_copy, new, service="payments") == [(None, 100)]


def test_route_by_index_label(example_copy: Path) -> None:
    _setup(example_copy, SEVERAL.replace("    - name: default\n", "    - \n"), rule=None)
    new = _edit(example_copy, ["v1=50", "v2=50"], route="http[1]")
    assert _weights(example_copy, new, index=1) == [("v1", 50), ("v2", 50)]


def test_route_positions(example_copy: Path) -> None:
    _setup(example_copy, SEVERAL, rule=None)
    result = load_directory(example_copy)
    assert result.config is not None
    vs = result.config.virtual_service_for("orders")
    assert vs is not None
    assert route_positions(SEVERAL, vs) == [(32, 7), (38, 7)]


def test_subset_name_that_is_not_a_plain_string_is_quoted(example_copy: Path) -> None:
    rule = RULE.replace("name: v2", 'name: "no"').replace("{version: v2}", '{version: "no"}')
    _setup(example_copy, LONE.replace("    # more to come\n", ""), rule=rule)
    new = _edit(example_copy, ["v1=90", "no=10"])
    assert '        subset: "no"\n' in new
    assert _weights(example_copy, new) == [("v1", 90), ("no", 10)]


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    ([], "at least one"),
    (["v1=90", "v2=20"], r"add up to 110, not 100 \(v1=90 \+ v2=20\)"),
    (["v1=110", "v2=-10"], "over 100"),
    (["v1=-10", "v2=110"], "negative"),
    (["v1=9.5", "v2=90.5"], "not a whole number"),
    (["v1=ten"], "not a whole number"),
    (["v1=50", "v1=50"], "given twice"),
    (["v1:100"], "not SUBSET=WEIGHT"),
    (["=100"], "not SUBSET=WEIGHT"),
    (["v1="], "has no weight"),
    (["v1=١٠٠"], "not a whole number"),  # Arabic-Indic digits: int() would take them
])
def test_parse_weights_refuses(args: list[str], message: str) -> None:
    with pytest.raises(EditError, match=message):
        parse_weights(args)


@given(st.lists(st.text(max_size=12), max_size=4))
def test_parse_weights_only_ever_raises_edit_error(args: list[str]) -> None:
    try:
        weights = parse_weights(args)
    except EditError as exc:
        assert "\n" not in str(exc)
    else:
        assert sum(weights.values()) == 100


@given(st.lists(st.integers(0, 100), max_size=4).map(sorted))
def test_parse_weights_round_trip(cuts: list[int]) -> None:
    bounds = [0, *cuts, 100]
    weights = [b - a for a, b in itertools.pairwise(bounds)]
    args = [f"v{i}={w}" for i, w in enumerate(weights)]
    assert parse_weights(args) == {f"v{i}": w for i, w in enumerate(weights)}


@pytest.mark.parametrize(("service", "args", "route", "message"), [
    ("orders", ["v1=90", "v3=10"], None,
     r"unknown subset `v3` of `orders`: DestinationRule `orders` "
     r"\(orders.yaml:26:1\) defines: v1, v2"),
    ("ordrs", ["v1=100"], None, r"unknown service `ordrs` \(did you mean `orders`\?\)"),
    ("payments", ["v1=100"], None, "no VirtualService routes `payments`: create one"),
    ("orders", ["v1=100"], "nope", "has no http route `nope`; its routes: canary"),
])
def test_plan_refuses(example_copy: Path, service: str, args: list[str], route: str | None,
                      message: str) -> None:
    result = load_directory(example_copy)
    assert result.config is not None
    with pytest.raises(EditError, match=message):
        plan_weights(result.config, service, parse_weights(args), route)


def test_route_sending_elsewhere_is_refused(example_copy: Path) -> None:
    _setup(example_copy, FLOW_DEST.replace(
        "          weight: 100\n",
        "          weight: 50\n        - destination: {host: payments}\n          weight: 50\n"))
    with pytest.raises(EditError, match="also sends to `payments`"):
        _edit(example_copy, ["v1=100"])


def test_no_destination_rule_is_refused(example_copy: Path) -> None:
    _setup(example_copy, FLOW_DEST.replace('subset: "v1"', "port: {number: 8080}"),
           rule=None)
    with pytest.raises(EditError, match="no DestinationRule for `orders` defines subsets"):
        _edit(example_copy, ["v1=100"])


ODD = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: orders
spec:
  hosts:
  - orders
  http:
  - route:
    - weight: 100
      headers:
        request:
          set: {x-version: v1}
      destination:
          host: orders
          subset: v1
"""


def test_indentless_weight_first_and_headers_not_copied(example_copy: Path) -> None:
    _setup(example_copy, ODD)
    new = _edit(example_copy, ["v1=90", "v2=10"])
    assert new == ODD.replace("weight: 100", "weight: 90") + """\
    - weight: 10
      destination:
          host: orders
          subset: v2
"""
    assert _weights(example_copy, new) == [("v1", 90), ("v2", 10)]
