"""docs/multi-host.md's step by step, run as written: `meshctl up --join` on a second host.

Host 1 runs the registry and `orders` (v1, v2) with `meshctl up`; host 2, on another subnet
behind a router namespace (tests/launch/test_systemd_vm.py's topology), joins with
`meshctl up mesh --join host2.join` and runs `frontend`. Each host's workloads are on its
own bridge; the router gets a route to each host's bridge subnet (the doc's "workload
addresses must be routable").
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import threading
from typing import Any

import pytest

from tests.launch.test_systemd_vm import (
    BIN,
    REPO,
    SHOP,
    Host,
    _until,
    doc_blocks,
    routed_hosts,
)
from tests.proxy.intercept.support import unique

pytestmark = [pytest.mark.root, pytest.mark.slow]

DOC = REPO / "docs" / "multi-host.md"
SERVICES = """\
  frontend:
    ports: [{port: 8080, protocol: http, name: http}]
WORKLOADS_FRONTEND
  orders:
    ports: [{port: 8080, protocol: http, name: http}]
WORKLOADS_ORDERS
"""
ROUTES = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: orders}
spec:
  host: orders
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders}
spec:
  hosts: [orders]
  http:
    - route:
        # the canary starts at zero
        - destination: {host: orders, subset: v1}
          weight: 100
        - destination: {host: orders, subset: v2}
          weight: 0
"""


def _workload(service: str, version: str) -> str:
    return (f"    workloads:\n      - version: {version}\n        command: [\"python3\", "
            f"\"{SHOP}\", \"--service\", \"{service}\", \"--version\", \"{version}\"]\n")


def _mesh_dir(host: Host, registry_ip: str, *, frontend: str, orders: str) -> None:
    mesh = host.root / "mesh"
    mesh.mkdir()
    mesh.chmod(0o755)
    services = SERVICES.replace("WORKLOADS_FRONTEND\n", frontend).replace(
        "WORKLOADS_ORDERS\n", orders)
    (mesh / "mesh.yaml").write_text(
        f"trustDomain: multi.local\nnamespace: default\nregistry: {{address: {registry_ip}}}\n"
        f"services:\n{services}")


def _get(app_pid: int, url: str) -> dict[str, Any]:
    """curl `url` as the app `app_pid` would: its network namespace and its /etc/hosts (the
    workload namespaces were made inside the host's namespace, so they are entered by pid)."""
    done = subprocess.run(["nsenter", "-t", str(app_pid), "-n", "-m", "curl", "-s", "-f",
                           "-m", "5", url], capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, f"curl {url} as {app_pid}: rc {done.returncode} {done.stderr}"
    return dict(json.loads(done.stdout))


def _plan(host: Host) -> dict[str, Any]:
    raw = json.loads((host.root / "var/lib/meshctl/launch/plan.json").read_text())
    return dict(raw["plan"])


def _route_in(host: Host, subnet: str) -> None:
    """`host` reaches `subnet` through its router (as by its default route, but explicit:
    so that its `up` does not pick that subnet for its own workloads' bridge)."""
    gateway = str(ipaddress.ip_interface(f"{host.ip}/24").network[254])
    subprocess.run(["ip", "netns", "exec", host.name, "ip", "route", "replace", subnet,
                    "via", gateway], check=True, timeout=30)  # fmt: skip


def _up_routed(host: Host, argv: list[str], router: str) -> None:
    """Run `up` (a line of the doc) on `host`; as soon as it has chosen its workloads'
    subnet, the router reaches that subnet through the host (the doc's "routable")."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            host.run(argv, timeout=180)
        except BaseException as exc:  # re-raised in the test's thread
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    subnet = _until(lambda: not thread.is_alive() or _plan(host)["network"]["subnet"],
                    f"{host.name}'s plan", timeout=60)
    if failed:
        raise failed[0]
    subprocess.run(["ip", "netns", "exec", router, "ip", "route", "replace", subnet, "via",
                    host.ip], check=True, timeout=30)  # fmt: skip
    thread.join(200)
    assert not thread.is_alive(), f"`{' '.join(argv)}` on {host.name} did not end"
    if failed:
        raise failed[0]


def _meshctl_out(host: Host, *args: str) -> str:
    """A meshctl command in `host` that may exit 1 (check, with a warning or failure)."""
    done = subprocess.run(["ip", "netns", "exec", host.name, str(BIN / "meshctl"), *args],
                          env=host.env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    return done.stdout


def _app_of(host: Host, service: str, version: str = "v1") -> int:
    name = next(w["name"] for w in _plan(host)["workloads"]
                if w["service"] == service and w["version"] == version)
    state = json.loads((host.root / "var/lib/meshctl/state.json").read_text())
    return int(state["workloads"][name]["app_pid"])


def test_docs_multi_host_step_by_step() -> None:
    for tool in ("curl",):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    with routed_hosts(("h1", "h2"), base_prefix="multihost-") as (h1, h2):
        router = h1.name.removesuffix("h1") + "rt"
        tag = unique()
        h1.extra_env["MESH_NETNS_PREFIX"] = tag[:6] + "a"
        h2.extra_env["MESH_NETNS_PREFIX"] = tag[:6] + "b"
        for h in (h1, h2):
            subprocess.run(["ip", "netns", "exec", h.name, "sysctl", "-qw",
                            "net.ipv4.ip_forward=1"], check=True, timeout=30)  # fmt: skip
        _route_in(h1, str(ipaddress.ip_interface(f"{h2.ip}/24").network))
        _route_in(h2, str(ipaddress.ip_interface(f"{h1.ip}/24").network))
        both = _workload("orders", "v1") + _workload("orders", "v2").split("\n", 1)[1]
        _mesh_dir(h1, h1.ip, frontend="", orders=both)
        (h1.root / "mesh" / "routes.yaml").write_text(ROUTES)
        _mesh_dir(h2, h1.ip, frontend=_workload("frontend", "v1"), orders="")
        host1_block, host2_block = doc_blocks(DOC)
        try:
            _run_steps(h1, h2, router, host1_block, host2_block)
        finally:
            for h in (h2, h1):
                subprocess.run(["ip", "netns", "exec", h.name, str(BIN / "meshctl"), "down"],
                               env=h.env(), capture_output=True, timeout=120)  # fmt: skip


def _run_steps(h1: Host, h2: Host, router: str, host1_block: list[list[str]],
               host2_block: list[list[str]]) -> None:
    # A second registry is refused on host 2 when mesh.yaml says the registry is elsewhere.
    with pytest.raises(AssertionError, match="not this host: join it with"):
        h2.run(["meshctl", "up", "mesh"], timeout=120)
    assert not (h2.root / "var/lib/meshctl/registry/ca").exists(), "no second CA"

    up1, *tokens = host1_block  # up, token create, token operator
    _up_routed(h1, up1, router)
    _route_in(h2, _plan(h1)["network"]["subnet"])  # host 2's `up` picks another subnet
    for argv in tokens:
        h1.run(argv)
    for name in ("host2.join", "operator.token"):  # "copy them to host 2"
        shutil.copy(h1.root / name, h2.root / name)
        (h2.root / name).chmod(0o644)  # as a copy made with the usual umask

    chmod_line, up_line, status_line, route_line = host2_block
    with pytest.raises(AssertionError, match="readable by others than its owner"):
        h2.run(["meshctl", "token", "list", "--operator-token-file", "operator.token"])
    h2.run(chmod_line)
    _up_routed(h2, up_line, router)
    home2 = h2.root / "var/lib/meshctl"
    assert not (home2 / "registry" / "ca").exists(), "host 2 made no CA"
    assert not (home2 / "registry" / "endpoint.json").exists(), "host 2 runs no registry"
    assert json.loads((home2 / "joined.json").read_text())["url"].startswith(f"https://{h1.ip}:")

    # status on host 2: the mesh, joined to host 1's registry (never "no mesh is running").
    out = h2.run(status_line)
    assert f"joined to registry https://{h1.ip}:" in out, out
    st = json.loads(h2.run([*status_line, "-o", "json"]))
    services = {e["service"] for e in st["endpoints"]}
    assert services == {"frontend", "orders"}, st["endpoints"]
    # check and why on host 2 ask the same registry (as one of host 2's proxies).
    checks = json.loads(_meshctl_out(h2, "check", "-o", "json"))["checks"]
    assert [c["status"] for c in checks if c["check"] == "registry"] == ["ok"], checks
    why = json.loads(h2.run(["meshctl", "why", "frontend", "orders", "/", "-o", "json"]))
    assert "v1" in json.dumps(why), why
    show = json.loads(h2.run(["meshctl", "route", "show", "orders", "-o", "json"]))
    assert show["file"] == str(h1.root / "mesh" / "routes.yaml"), show

    # frontend (host 2) calls orders (host 1) by name over mTLS, and orders calls back.
    front_ns, orders_ns = _app_of(h2, "frontend"), _app_of(h1, "orders")
    answer = _until(lambda: _get(front_ns, "http://orders:8080/echo"), "frontend -> orders", 60)
    assert "spiffe://multi.local/ns/default/sa/frontend" in answer["headers"].get(
        "x-forwarded-client-cert", ""), answer["headers"]
    back = _until(lambda: _get(orders_ns, "http://frontend:8080/echo"), "orders -> frontend", 60)
    assert "spiffe://multi.local/ns/default/sa/orders" in back["headers"].get(
        "x-forwarded-client-cert", ""), back["headers"]
    versions = {_get(front_ns, "http://orders:8080/")["version"] for _ in range(10)}
    assert versions == {"v1"}

    # route set-weight on host 2: the registry edits the file on host 1 (comment kept).
    h2.run(route_line)
    text = (h1.root / "mesh" / "routes.yaml").read_text()
    assert "# the canary starts at zero" in text
    assert "weight: 0\n        - destination: {host: orders, subset: v2}\n          weight: 100" \
        in text, text

    def all_v2() -> bool:
        return {_get(front_ns, "http://orders:8080/")["version"] for _ in range(10)} == {"v2"}

    _until(all_v2, "the new weights applied on host 2's proxy", 60)

    # Host 1's proxies, read from host 2 through the registry (their admin listeners are
    # on host 1's loopbacks): the config they run, and their metrics.
    op = ["--operator-token-file", "operator.token"]
    dumps = json.loads(h2.run(["meshctl", "proxy-config", "orders", "routes", "-o", "json",
                               *op]))  # fmt: skip
    assert len(dumps) == 2 and all("orders" in json.dumps(d) for d in dumps), dumps
    stat = json.loads(h2.run(["meshctl", "stat", "orders", "--interval", "0.5", "-o", "json",
                              *op]))  # fmt: skip
    assert "orders" in json.dumps(stat), stat
    # ... and what they serve, live: `tap` and `top` on host 2, the taps relayed by the
    # registry (host 1's proxies are in namespaces of host 1, their admin ports on their own
    # loopbacks).
    stop = threading.Event()

    def calls() -> None:
        while not stop.is_set():
            _get(front_ns, "http://orders:8080/echo")

    caller = threading.Thread(target=calls, daemon=True)
    caller.start()
    try:
        tapped = h2.run(["meshctl", "tap", "orders", "--max", "2", "--duration", "30",
                         "-o", "json", *op])  # fmt: skip
        top = json.loads(h2.run(["meshctl", "top", "orders", "--duration", "3", "-o", "json",
                                 *op]))  # fmt: skip
    finally:
        stop.set()
        caller.join(30)
    events = [json.loads(line) for line in tapped.splitlines()]
    assert [(e["destination"], e["direction"], e["path"]) for e in events] == \
        [("orders", "inbound", "/echo")] * 2, events
    assert all(e["peer"] == "spiffe://multi.local/ns/default/sa/frontend" for e in events)
    assert top["events"] > 0 and top["rows"][0]["path"] == "/echo", top

    # Without the operator credential, host 2 is a workload host: route edits are refused.
    with pytest.raises(AssertionError, match="operator-token-file"):
        h2.run(["meshctl", "route", "set-weight", "orders", "v1=100", "v2=0"])
