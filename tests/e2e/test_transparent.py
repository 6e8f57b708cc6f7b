"""End to end as root: two network namespaces on a bridge, real iptables interception.

`curl http://orders:8080/` inside the frontend namespace is redirected to the frontend's
proxy (15001), crosses to the orders namespace over mTLS, and the orders app sees the
caller's SPIFFE ID. Plaintext from outside the mesh to orders:8080 is captured by the
inbound rule and refused (PeerAuthentication STRICT, the default).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meshctl.vip import service_vip
from tests.integration.harness import REPO, SHOP, Proc, free_port, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]
PROXY_UID = 1337


@dataclass
class Net:
    prefix: str
    bridge: str
    gateway: str
    subnet: str = ""  # the bridge's network, e.g. 10.250.7.0/24
    hosts: dict[str, str] = field(default_factory=dict)  # name -> ip
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _can_run() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "iptables-restore", "nsenter", "setpriv", "curl"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    reason = _can_run()
    if reason:
        pytest.skip(reason)
    from meshctl.launch import netns

    prefix = "mt" + secrets.token_hex(3)
    subnet = netns.free_subnet()
    hosts = list(subnet.hosts())
    bridge = netns.create_bridge(f"{prefix}br", f"{hosts[0]}/{subnet.prefixlen}")
    n = Net(prefix=prefix, bridge=bridge.name, gateway=str(hosts[0]), subnet=str(subnet))
    try:
        for i, name in enumerate(("frontend", "orders"), start=1):
            h = netns.create_host(f"{prefix}-{name}", bridge.name,
                                  f"{hosts[i]}/{subnet.prefixlen}", gateway=str(hosts[0]))
            n.hosts[name] = h.ip
            netns.write_hosts(h.name, {"orders": service_vip("orders"),
                                       "frontend": service_vip("frontend")})
        yield n
    finally:
        for p in n.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for name in ("frontend", "orders"):
            netns.delete_host(f"{prefix}-{name}")
        netns.delete_bridge(bridge.name)


def test_curl_by_name_crosses_both_proxies_and_strict_refuses_plaintext(
        net: Net, tmp_path: Path) -> None:
    from meshctl.launch import netns
    from proxy.intercept import iptables
    from proxy.intercept.rules import InterceptConfig

    # A world-traversable home: the proxies run as uid 1337 and must reach their files.
    base = Path(f"/tmp/{net.prefix}")
    base.mkdir(mode=0o755)
    try:
        home = base / "home"
        home.mkdir(mode=0o755)
        config = base / "config"
        shutil.copytree(REPO / "examples" / "compose" / "mesh", config)
        env = {**os.environ, "MESH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        port, monitor = free_port(), free_port()
        reg = Proc([sys.executable, "-m", "meshctl", "registry", "--config", str(config),
                    "--listen", net.gateway, "--port", str(port), "--monitor-port",
                    str(monitor)], env, tmp_path / "registry.log").start()
        try:
            _run_mesh(net, base, home, env, port, monitor)
        finally:
            reg.stop()
    finally:
        if os.environ.get("MESH_E2E_KEEP") is None:
            shutil.rmtree(base, ignore_errors=True)
    del netns, iptables, InterceptConfig


def start_proxy(net: Net, base: Path, home: Path, env: dict[str, str], registry_url: str,
                name: str, version: str, *extra: str) -> None:
    """The proxy of host `name` (uid 1337, transparent outbound), joined with a fresh token."""
    from meshctl.client import RegistryClient
    from meshctl.launch import netns

    phome = base / f"proxy-{name}"
    phome.mkdir(mode=0o700)
    token = phome / "token"
    token.write_text(RegistryClient.from_home(home).call(
        "POST", "/v1/tokens", {"service": name})["token"])
    ca = phome / "ca.crt"
    shutil.copy(home / "registry" / "ca" / "ca.crt", ca)
    for p in (phome, token, ca):
        os.chown(p, PROXY_UID, PROXY_UID)
    penv = {**env, "MESH_HOME": str(phome)}
    argv = ["setpriv", "--reuid", str(PROXY_UID), "--regid", str(PROXY_UID),
            "--clear-groups", sys.executable, "-m", "meshctl", "proxy", "--service", name,
            "--version", version, "--registry", registry_url, "--token-file", str(token),
            "--ca-file", str(ca), "--advertise", net.hosts[name],
            "--outbound", "127.0.0.1:15001", "--proxy-id", f"{name}-{version}", *extra]
    log = (phome / "proxy.log").open("wb")
    net.procs.append(netns.run_in(f"{net.prefix}-{name}", argv, env=penv, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=str(phome)))


def _run_mesh(net: Net, base: Path, home: Path, env: dict[str, str], port: int,
              monitor: int) -> None:
    import urllib.request

    from meshctl.client import RegistryClient
    from meshctl.launch import netns
    from proxy.intercept import iptables
    from proxy.intercept.rules import InterceptConfig

    wait_until(lambda: urllib.request.urlopen(
        f"http://127.0.0.1:{monitor}/healthz/ready", timeout=2).status == 200,
        what="registry ready")
    client = RegistryClient.from_home(home)
    registry_url = f"https://{net.gateway}:{port}"
    ns = {name: f"{net.prefix}-{name}" for name in net.hosts}
    # The orders app listens on its service port inside its namespace.
    net.procs.append(netns.run_in(ns["orders"], [sys.executable, str(SHOP), "--service",
                                                 "orders", "--version", "v1", "--port", "8080"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_until(lambda: subprocess.run(
        ["ip", "netns", "exec", ns["orders"], "curl", "-sf", "-m", "2",
         "http://127.0.0.1:8080/healthz"], capture_output=True).returncode == 0,
        what="orders app listening")
    for name, version in (("orders", "v1"), ("frontend", "v1")):
        start_proxy(net, base, home, env, registry_url, name, version)
        iptables.install(InterceptConfig(proxy_uid=PROXY_UID,
                                         inbound_ports=(8080,) if name == "orders" else ()),
                         ns[name])
    wait_until(lambda: len(client.call("GET", "/v1/catalog")["endpoints"]) == 2, timeout=30,
               what="both proxies registered")

    def curl(where: str, url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", where, "curl", "-s", "-m", "5",
                               "-w", "\n%{http_code}", url], capture_output=True, text=True)

    try:
        res = wait_until(lambda: (r := curl(ns["frontend"], "http://orders:8080/echo"))
                         .stdout.endswith("200") and r, timeout=30, what="curl by name")
    except AssertionError:
        dump = curl(ns["frontend"], "http://127.0.0.1:15000/config_dump").stdout
        raise AssertionError(f"frontend proxy state: {dump[:3000]}") from None
    body = json.loads(res.stdout.rsplit("\n", 1)[0])
    headers = {k.lower(): v for k, v in body["headers"].items()}
    assert body["service"] == "orders"
    assert "URI=spiffe://shop.local/ns/default/sa/frontend" in headers["x-forwarded-client-cert"]
    # From outside the mesh (the root namespace) to orders:8080: the inbound rule captures
    # it, the proxy wants mTLS, plaintext gets no answer.
    outside = subprocess.run(["curl", "-s", "-m", "5", "-o", "/dev/null", "-w",
                              "%{http_code}", f"http://{net.hosts['orders']}:8080/"],
                             capture_output=True, text=True)
    assert outside.stdout in ("000", ""), outside
    for name in ns.values():
        iptables.remove(name)
        assert not iptables.installed(name)
