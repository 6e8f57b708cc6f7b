"""Published ports as root, without Docker: a DNAT rule in the root namespace mimics Docker's.

Docker publishes a container port by DNAT on the host (or docker-proxy, a userland relay,
for loopback bindings): either way the connection reaches the container from the host's
address on the container's network, its gateway. Here the root namespace gets the same kind
of rule (`-t nat OUTPUT -d GATEWAY --dport HOSTPORT -j DNAT --to FRONTEND:8080`), the
frontend namespace gets meshctl's interception with the published-port rule, and:

* curl from the root namespace through the published port answers as it did before the
  mesh (same body), counted as source_workload="unknown", connection_security_policy none;
  so does a client on "another machine" (a namespace on a second bridge, DNATed by the
  root namespace's PREROUTING without masquerading, as Docker does for remote clients);
* a mesh workload's plaintext to frontend:8080 is refused (STRICT), and so is a direct
  connection to the published listener (15007), which was not redirected;
* an AuthorizationPolicy that wants a principal refuses the published request (403) while
  the orders proxy's mTLS call passes; `ipBlocks` match the gateway's address for the
  published port and the peer proxy's for a mesh call;
* removing the rules leaves none of ours.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.test_transparent import PROXY_UID, Net, net, start_proxy
from tests.example import copy_config
from tests.integration.harness import SHOP, Proc, free_port, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]
__all__ = ["net"]  # the fixture, shared with test_transparent

REQUIRE_PRINCIPAL = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: frontend-mesh-only
spec:
  selector:
    matchLabels:
      app: frontend
  action: ALLOW
  rules:
    - from:
        - source:
            principals: ["*"]
"""

DENY_BLOCK = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: frontend-deny-block}}
spec:
  selector: {{matchLabels: {{app: frontend}}}}
  action: DENY
  rules:
    - from:
        - source: {{ipBlocks: ["{block}"]}}
"""


def _curl(*argv: str, where: str = "", uid: int | None = None) -> tuple[str, str]:
    """(status, body) of one curl; status "000" when nothing answered."""
    cmd = ["curl", "-s", "-m", "5", "-w", "\n%{http_code}", *argv]
    if uid is not None:
        cmd = ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", *cmd]
    if where:
        cmd = ["ip", "netns", "exec", where, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    body, _, status = out.rpartition("\n")
    return status, body


class _Remote:
    """A client on another machine: a namespace on a second bridge, routed by the root
    namespace, whose PREROUTING DNATs its bridge address:PORT to frontend:8080 (Docker's
    rule for a published port reached from outside), without masquerading."""

    def __init__(self, net: Net, port: int) -> None:
        from meshctl.launch import netns

        self.net, self.port = net, port
        subnet = netns.free_subnet()
        self.hosts = [str(h) for h in list(subnet.hosts())[:2]]
        self.prefixlen = subnet.prefixlen
        self.bridge = f"{net.prefix}rb"
        self.name = f"{net.prefix}-remote"
        comment = ["-m", "comment", "--comment", f"{net.prefix} remote"]
        self.rules = [
            ["-t", "nat", "PREROUTING", "-d", f"{self.hosts[0]}/32", "-p", "tcp", "--dport",
             str(port), *comment, "-j", "DNAT", "--to-destination",
             f"{net.hosts['frontend']}:8080"],
            ["FORWARD", "-i", self.bridge, "-o", net.bridge, *comment, "-j", "ACCEPT"],
            ["FORWARD", "-i", net.bridge, "-o", self.bridge, *comment, "-j", "ACCEPT"],
        ]  # fmt: skip

    def start(self) -> None:
        from meshctl.launch import netns

        netns.create_bridge(self.bridge, f"{self.hosts[0]}/{self.prefixlen}")
        netns.create_host(self.name, self.bridge, f"{self.hosts[1]}/{self.prefixlen}",
                          gateway=self.hosts[0])
        for rule in self.rules:
            table = rule[:2] if rule[0] == "-t" else []
            subprocess.run(["iptables", *table, "-I", *rule[len(table):]], check=True)

    def get(self) -> tuple[str, str]:
        return _curl(f"http://{self.hosts[0]}:{self.port}/", where=self.name)

    def stop(self) -> None:
        from meshctl.launch import netns

        for rule in self.rules:
            table = rule[:2] if rule[0] == "-t" else []
            subprocess.run(["iptables", *table, "-D", *rule[len(table):]], capture_output=True)
        netns.delete_host(self.name)
        netns.delete_bridge(self.bridge)


def test_published_port_is_served_as_ingress_and_strict_still_refuses_mesh_plaintext(
        net: Net, tmp_path: Path) -> None:
    from meshctl.client import RegistryClient
    from meshctl.launch import netns
    from proxy.intercept import iptables
    from proxy.intercept.rules import InterceptConfig

    if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "1":
        pytest.skip("needs net.ipv4.ip_forward=1 (Docker sets it) for the remote client")
    ns = {name: f"{net.prefix}-{name}" for name in net.hosts}
    front = net.hosts["frontend"]
    host_port = free_port()
    comment = f"{net.prefix} published"
    dnat = ["OUTPUT", "-d", f"{net.gateway}/32", "-p", "tcp", "--dport",
            str(host_port), "-m", "comment", "--comment", comment, "-j", "DNAT",
            "--to-destination", f"{front}:8080"]  # fmt: skip
    published_url = f"http://{net.gateway}:{host_port}/"
    base = Path(f"/tmp/{net.prefix}")
    base.mkdir(mode=0o755)
    remote = _Remote(net, host_port)
    subprocess.run(["iptables", "-t", "nat", "-I", *dnat], check=True)
    try:
        remote.start()
        for name in ("frontend", "orders"):
            net.procs.append(netns.run_in(ns[name], [
                sys.executable, str(SHOP), "--service", name, "--version", "v1",
                "--port", "8080"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        before = wait_until(lambda: (r := _curl(published_url))[0] == "200" and r,
                            what="the published port answering before the mesh")
        assert remote.get() == before
        home, config = base / "home", base / "config"
        home.mkdir(mode=0o755)
        copy_config(config)
        env = {**os.environ, "MESH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        port, monitor = free_port(), free_port()
        reg = Proc([sys.executable, "-m", "meshctl", "registry", "--config", str(config),
                    "--listen", net.gateway, "--port", str(port), "--monitor-port",
                    str(monitor)], env, tmp_path / "registry.log").start()  # fmt: skip
        try:
            wait_until(lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{monitor}/healthz/ready", timeout=2).status == 200,
                what="registry ready")  # fmt: skip
            url = f"https://{net.gateway}:{port}"
            start_proxy(net, base, home, env, url, "frontend", "v1",
                        "--published", "0.0.0.0:15007")
            start_proxy(net, base, home, env, url, "orders", "v1")
            iptables.install(InterceptConfig(
                proxy_uid=PROXY_UID, inbound_ports=(8080,), published_ports=(8080,),
                published_sources=(f"{net.gateway}/32",), published_open_ports=(8080,),
                published_local_net=net.subnet), ns["frontend"])  # fmt: skip
            iptables.install(InterceptConfig(proxy_uid=PROXY_UID, inbound_ports=(8080,)),
                             ns["orders"])
            client = RegistryClient.from_home(home)
            wait_until(lambda: len(client.call("GET", "/v1/catalog")["endpoints"]) == 2,
                       timeout=30, what="both proxies registered")
            _check(net, ns, published_url, before, config, remote)
        finally:
            reg.stop()
        for name in ns.values():
            iptables.remove(name)
            assert "MESH_" not in iptables.dump(name)
    finally:
        subprocess.run(["iptables", "-t", "nat", "-D", *dnat], capture_output=True)
        remote.stop()
        if os.environ.get("MESH_E2E_KEEP") is None:
            shutil.rmtree(base, ignore_errors=True)


def _check(net: Net, ns: dict[str, str], published_url: str, before: tuple[str, str],
           config: Path, remote: _Remote) -> None:
    front = net.hosts["frontend"]
    # Through the published port: served, the same answer as before the mesh.
    after = wait_until(lambda: (r := _curl(published_url))[0] == "200" and r, timeout=30,
                       what="the published port answering through the proxy")
    assert after == before
    # From another machine (its own address, DNATed without masquerading): served too.
    assert remote.get() == before
    # A mesh workload's own plaintext (its proxy's uid is not captured outbound): STRICT.
    assert _curl(f"http://{front}:8080/", where=ns["orders"], uid=PROXY_UID)[0] == "000"
    # The published listener dialled directly was not redirected: refused too.
    assert _curl(f"http://{front}:15007/", where=ns["orders"], uid=PROXY_UID)[0] == "000"
    # The same from the gateway's own address but not through the published port's rule
    # (the root namespace is the gateway): only service ports are redirected there.
    assert _curl(f"http://{front}:15007/")[0] == "000"
    # Counted as ingress: no peer, no mTLS.
    metrics = _curl("http://127.0.0.1:15090/metrics", where=ns["frontend"])[1]
    ingress = [ln for ln in metrics.splitlines() if ln.startswith("istio_requests_total{")
               and 'source_workload="unknown"' in ln and 'response_code="200"' in ln]
    assert ingress, metrics[:3000]
    assert all('connection_security_policy="none"' in ln for ln in ingress)
    assert all('reporter="destination"' in ln for ln in ingress)
    # ... and the direct dials of 15007 above reached the listener, which refused them.
    health = {ln.split()[0]: float(ln.split()[1]) for ln in metrics.splitlines()
              if ln.startswith("meshctl_proxy_inbound_published")}  # fmt: skip
    assert health.get("meshctl_proxy_inbound_published_refused_total", 0) >= 2, health
    assert health.get("meshctl_proxy_inbound_published_total", 0) >= 2, health
    # A policy that wants a principal: the published request has none, the mesh call has.
    (config / "frontend-authz.yaml").write_text(REQUIRE_PRINCIPAL)
    wait_until(lambda: _curl(published_url)[0] == "403" and remote.get()[0] == "403", timeout=30,
               what="the published requests refused by the AuthorizationPolicy")
    status, body = _curl("http://frontend:8080/", where=ns["orders"])
    assert status == "200" and json.loads(body)["service"] == "frontend", body
    # ipBlocks see the connection's source: the published port's is the gateway.
    (config / "frontend-authz.yaml").write_text(DENY_BLOCK.format(block=f"{net.gateway}/32"))
    # (The remote client, refused by the previous policy, has its own address: served.)
    wait_until(lambda: _curl(published_url)[0] == "403" and remote.get()[0] == "200" and _curl(
        "http://frontend:8080/", where=ns["orders"])[0] == "200", timeout=30,
        what="the gateway's address refused by ipBlocks, the remote client and orders served")
    (config / "frontend-authz.yaml").write_text(DENY_BLOCK.format(block=net.hosts["orders"]))
    wait_until(lambda: _curl(published_url)[0] == "200" and _curl(
        "http://frontend:8080/", where=ns["orders"])[0] == "403", timeout=30,
        what="orders' address refused by ipBlocks, the published port served")  # fmt: skip
