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

from common.vip import service_vip
from tests.example import SHOP, copy_config
from tests.integration.harness import Proc, free_port, wait_until

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


# One mesh for the module (about 12 s to build): its tests only read it, but the last,
# which removes the interception, and which runs last.
@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
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


@dataclass
class Mesh:
    """frontend and orders meshed in their namespaces; every port of orders captured but
    9100 (excludeInboundPorts), IPv4 and IPv6."""

    net: Net
    ns: dict[str, str]  # service -> namespace
    home: Path

    def curl(self, where: str, url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", where, "curl", "-s", "-m", "5",
                               "-w", "\n%{http_code}", url], capture_output=True, text=True)

    def dial(self, where: str | None, host: str, port: int, uid: int | None = None) -> str:
        """What a TCP client sending a GET gets back: the first line, "closed" or "error X"."""
        argv = [sys.executable, "-c", DIAL, host, str(port)]
        if uid is not None:
            argv = ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
                    "/usr/bin/python3", "-c", DIAL, host, str(port)]
        if where is not None:
            argv = ["ip", "netns", "exec", where, *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


# A client that speaks first (as HTTP does), then prints the first line it gets back.
DIAL = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        line = c.makefile("rb").readline().decode().strip()
        print(line or "closed")
except OSError as exc:
    print("error", type(exc).__name__)
"""

# The orders namespace's other listeners, on [::] (dual stack, Go's and Node's default):
# each answers "app PORT from PEER-ADDRESS" to whoever connects.
LISTENERS = """
import socket, sys, threading
def serve(port):
    s = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
    while True:
        c, peer = s.accept()
        with c:
            c.sendall(f"app {port} from {peer[0]}\\n".encode())
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

# orders: frontend may call 8080 and 9000 (an undeclared port), anyone 9002 (undeclared
# too, and PERMISSIVE: plaintext accepted there); nothing else.
ORDERS_POLICY = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: orders-9002-permissive
spec:
  selector:
    matchLabels:
      app: orders
  portLevelMtls:
    "9002":
      mode: PERMISSIVE
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: orders-allow-frontend
spec:
  selector:
    matchLabels:
      app: orders
  action: ALLOW
  rules:
    - from:
        - source:
            principals: ["shop.local/ns/default/sa/frontend"]
      to:
        - operation:
            ports: ["8080", "9000"]
    - to:
        - operation:
            ports: ["9002"]
"""


@pytest.fixture(scope="module")
def mesh(net: Net, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp_path = tmp_path_factory.mktemp("transparent")
    # A world-traversable home: the proxies run as uid 1337 and must reach their files.
    base = Path(f"/tmp/{net.prefix}")
    base.mkdir(mode=0o755)
    try:
        home = base / "home"
        home.mkdir(mode=0o755)
        config = base / "config"
        copy_config(config)
        (config / "orders-policy.yaml").write_text(ORDERS_POLICY)
        env = {**os.environ, "MESH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        port, monitor = free_port(), free_port()
        reg = Proc([sys.executable, "-m", "meshctl", "registry", "--config", str(config),
                    "--listen", net.gateway, "--port", str(port), "--monitor-port",
                    str(monitor)], env, tmp_path / "registry.log", must_stop=True).start()
        try:
            yield _run_mesh(net, base, home, env, port, monitor)
        except BaseException:
            reg.kill()
            raise
        # The proxies are still connected: the registry must stop on SIGTERM all the same.
        reg.stop()
    finally:
        if os.environ.get("MESH_E2E_KEEP") is None:
            shutil.rmtree(base, ignore_errors=True)


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
              monitor: int) -> Mesh:
    import urllib.request

    from meshctl.client import RegistryClient
    from meshctl.launch import netns
    from proxy.intercept import iptables
    from proxy.intercept.rules import EXCLUDE_INBOUND_DEFAULT, InterceptConfig

    wait_until(lambda: urllib.request.urlopen(
        f"http://127.0.0.1:{monitor}/healthz/ready", timeout=2).status == 200,
        what="registry ready")
    client = RegistryClient.from_home(home)
    registry_url = f"https://{net.gateway}:{port}"
    ns = {name: f"{net.prefix}-{name}" for name in net.hosts}
    # The orders app listens on its service port inside its namespace, on [::] as Go does.
    net.procs.append(netns.run_in(ns["orders"], [sys.executable, str(SHOP), "--service",
                                                 "orders", "--version", "v1", "--port", "8080",
                                                 "--host", "::"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    listeners = netns.run_in(ns["orders"], [sys.executable, "-c", LISTENERS, "9000", "9001",
                                            "9002", "9100"], stdout=subprocess.PIPE, text=True)
    net.procs.append(listeners)
    assert listeners.stdout is not None and listeners.stdout.readline().strip() == "ready"
    wait_until(lambda: subprocess.run(
        ["ip", "netns", "exec", ns["orders"], "curl", "-sf", "-m", "2",
         "http://127.0.0.1:8080/healthz"], capture_output=True).returncode == 0,
        what="orders app listening")
    for name, version in (("orders", "v1"), ("frontend", "v1")):
        start_proxy(net, base, home, env, registry_url, name, version)
        # What the supervisor installs: every inbound port but the defaults and the
        # workload's excludeInboundPorts (9100 for orders), IPv4 and IPv6.
        excluded = (9100,) if name == "orders" else ()
        iptables.install(InterceptConfig(proxy_uid=PROXY_UID, proxy_gid=PROXY_UID,
                                         exclude_inbound_ports=(*EXCLUDE_INBOUND_DEFAULT,
                                                                *excluded)), ns[name])
    wait_until(lambda: len(client.call("GET", "/v1/catalog")["endpoints"]) == 2, timeout=30,
               what="both proxies registered")
    m = Mesh(net, ns, home)
    try:
        wait_until(lambda: m.curl(ns["frontend"], "http://orders:8080/echo")
                   .stdout.endswith("200"), timeout=30, what="curl by name")
    except AssertionError:
        dump = m.curl(ns["frontend"], "http://127.0.0.1:15000/config_dump").stdout
        raise AssertionError(f"frontend proxy state: {dump[:3000]}") from None
    return m


def test_curl_by_name_crosses_both_proxies_and_strict_refuses_plaintext(mesh: Mesh) -> None:
    from proxy.intercept import iptables

    ns, net = mesh.ns, mesh.net
    res = mesh.curl(ns["frontend"], "http://orders:8080/echo")
    assert res.stdout.endswith("200"), res
    body = json.loads(res.stdout.rsplit("\n", 1)[0])
    headers = {k.lower(): v for k, v in body["headers"].items()}
    assert body["service"] == "orders"
    assert "URI=spiffe://shop.local/ns/default/sa/frontend" in headers["x-forwarded-client-cert"]
    # From outside the mesh (the root namespace) to orders:8080: the inbound rule captures
    # it, the proxy wants mTLS, plaintext gets no answer.
    def refusals() -> float:
        """Connections orders' proxy refused before any request (plaintext, bad handshake)."""
        stats = json.loads(mesh.curl(ns["orders"], "http://127.0.0.1:15000/stats").stdout
                           .rsplit("\n", 1)[0])  # fmt: skip
        return float(stats.get("meshctl_proxy_inbound_plaintext_refused_total", 0)
                     + stats.get("meshctl_proxy_inbound_tls_failures_total", 0))  # fmt: skip

    before = refusals()
    outside = subprocess.run(["curl", "-s", "-m", "5", "-o", "/dev/null", "-w",
                              "%{http_code}", f"http://{net.hosts['orders']}:8080/"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    # Refused by the proxy: connected, then closed with no answer (curl 52: empty reply, 56:
    # reset), not unreachable (7) nor timed out (28); and counted there, exactly once.
    assert outside.stdout == "000" and outside.returncode in (52, 56), outside
    wait_until(lambda: refusals() > before, 10, "the refusal counted by orders' proxy")
    assert refusals() == before + 1
    assert all(iptables.installed(name) for name in ns.values())


def _in(ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def _link_local(ns: str) -> str:
    """eth0's fe80:: address (every namespace has one), once duplicate detection is done."""
    def usable() -> str | None:
        out = _in(ns, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link")
        return out.split()[3].split("/")[0] if out and "tentative" not in out else None

    return str(wait_until(usable, 10, f"a link-local address in {ns}"))


def _refused(answer: str) -> bool:
    """The client got nothing from the app: the proxy closed, or the connection failed."""
    return answer == "closed" or answer.startswith("error")


def test_undeclared_port_refuses_plaintext_and_an_excluded_port_is_reachable(
        mesh: Mesh) -> None:
    orders = mesh.net.hosts["orders"]
    # From outside the mesh (the root namespace, as any host on the network): port 9000 is
    # no service port, but every port is captured, and STRICT wants mTLS.
    answer = mesh.dial(None, orders, 9000)
    assert _refused(answer), f"plaintext reached orders' undeclared port 9000: {answer}"
    # 9100 is in excludeInboundPorts: reachable directly, that is what exclusion means.
    assert mesh.dial(None, orders, 9100) == f"app 9100 from ::ffff:{mesh.net.gateway}"
    # 9002 is PERMISSIVE (portLevelMtls) and open to anyone: plaintext is accepted, and
    # relayed by orders' proxy (Istio's inbound passthrough), not around it.
    assert mesh.dial(None, orders, 9002) == "app 9002 from ::ffff:127.0.0.1"


def test_meshed_caller_reaches_an_undeclared_port_over_mtls_under_policy(mesh: Mesh) -> None:
    orders = mesh.net.hosts["orders"]
    # frontend's app dials orders' address on 9000: its proxy opens mTLS to orders' proxy,
    # which relays to the app from 127.0.0.1 (a bypass would show frontend's address).
    answer = mesh.dial(mesh.ns["frontend"], orders, 9000)
    assert answer == "app 9000 from ::ffff:127.0.0.1", answer
    # 9001 is no port the AuthorizationPolicy allows frontend: denied like any TCP port.
    answer = mesh.dial(mesh.ns["frontend"], orders, 9001)
    assert _refused(answer), f"the policy let frontend reach 9001: {answer}"


def test_ipv6_is_intercepted_both_ways(mesh: Mesh) -> None:
    ns = mesh.ns
    ll_orders = _link_local(ns["orders"])
    # Inbound: another workload's namespace reaching orders' [::] app by its link-local
    # address. As uid 1337, frontend's own rules let it out, as any host on the link would.
    for port in (8080, 9000):
        answer = mesh.dial(ns["frontend"], f"{ll_orders}%eth0", port, uid=PROXY_UID)
        assert _refused(answer), f"orders answered [{ll_orders}]:{port} in plaintext: {answer}"
    # Outbound: frontend's app dialling orders over IPv6 never bypasses its proxy.
    answer = mesh.dial(ns["frontend"], f"{ll_orders}%eth0", 8080)
    assert _refused(answer), f"frontend's app reached orders by link-local: {answer}"
    # With routable IPv6 addresses (a dual-stack network): captured by frontend's proxy,
    # passed through (no mesh service there), and refused in plaintext by orders' proxy.
    prefix = "fd00:{:x}::".format(int(mesh.net.gateway.split(".")[2]))
    for i, name in enumerate(("frontend", "orders"), start=2):
        _in(ns[name], "ip", "-6", "addr", "add", f"{prefix}{i}/64", "dev", "eth0", "nodad")
    for uid in (None, PROXY_UID):  # frontend's app, and a peer bypassing frontend's rules
        answer = mesh.dial(ns["frontend"], f"{prefix}3", 8080, uid=uid)
        assert _refused(answer), f"orders answered [{prefix}3]:8080 in plaintext: {answer}"


def test_intercept_remove_leaves_no_rule_in_either_family(mesh: Mesh) -> None:
    from proxy.intercept import iptables

    for name, where in mesh.ns.items():
        done = subprocess.run([sys.executable, "-m", "meshctl", "intercept", "remove",
                               "--service", name, "--netns", where],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert not iptables.installed(where)
        for tool in ("iptables-save", "ip6tables-save"):
            saved = _in(where, tool)
            assert "MESH_" not in saved, f"{tool} in {where} after remove:\n{saved}"
