"""docs/systemd.md's step by step, run as written: a registry host and a VM on two subnets.

Each host is a network namespace on its own bridge and subnet; the root namespace routes
between them. The docs' commands run inside the hosts, `meshctl systemd install` with
`--root` (a directory standing for that host's file system: systemd is not PID 1 here),
and `systemctl` lines by tests/launch/unitrunner.py, which runs the installed units'
ExecStartPre/ExecStart/ExecStopPost lines as their User=, and waits for READY=1.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from meshctl.launch import netns
from tests.example import SHOP
from tests.launch.unitrunner import Runner
from tests.proxy.intercept.support import unique

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "systemd.md"

BIN = Path(sys.executable).parent  # the venv's: meshctl is there
MESH_YAML = """\
trustDomain: vm.local
namespace: default
services:
  frontend:
    ports: [{port: 8080, protocol: http, name: http}]
  orders:
    ports: [{port: 8080, protocol: http, name: http}]
"""
ORDERS_UNIT = f"""\
[Unit]
Description=orders, an app that knows nothing of the mesh

[Service]
ExecStart=/usr/bin/python3 {SHOP} --service orders --version v1 --host 0.0.0.0 --port 8080
User=nobody
"""


def doc_blocks(doc: Path = DOC) -> list[list[list[str]]]:
    """The `sh` blocks of the step by step: for each, its commands as argv lists."""
    text = doc.read_text()
    start = text.index("## Step by step")
    section = text[start : text.index("\n## ", start + 1)]
    blocks = []
    for body in re.findall(r"```sh\n(.*?)```", section, re.S):
        joined = re.sub(r"\\\n\s*", " ", body)
        blocks.append([w for w in (shlex.split(line, comments=True) for line in
                                   joined.splitlines()) if w])  # fmt: skip
    return blocks


@dataclass
class Host:
    name: str
    ip: str
    root: Path
    runner: Runner
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
            "MESH_HOME": str(self.root / "var/lib/meshctl"),  # root's default, under root
            "LANG": "C.UTF-8",
            **self.extra_env,
        }

    def run(self, argv: list[str], timeout: float = 60) -> str:
        """One command of the docs, in this host, from its root directory."""
        if argv[0] == "systemctl":
            self.runner.systemctl(argv[1:])
            return ""
        out = None
        if ">" in argv:
            i = argv.index(">")
            argv, out = argv[:i], self.root / argv[i + 1]
        if argv[:3] == ["meshctl", "systemd", "install"]:
            argv = [*argv, "--root", str(self.root)]  # its paths are the installed system's
        else:
            argv = [self.runner.path(w) for w in argv]
        proc = netns.run_in(self.name, argv, env=self.env(), cwd=self.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        stdout, stderr = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"{self.name}: {argv}: {stderr.decode()}"
        if out is not None:
            out.write_bytes(stdout)
        return stdout.decode()

    def python(self, code: str, *, uid: int | None = None, timeout: float = 30) -> str:
        argv = ["/usr/bin/python3", "-c", code]
        if uid is not None:
            argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
        proc = netns.run_in(self.name, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(stderr.decode()[-2000:])
        return stdout.decode()


def _root_dir(base: Path, name: str) -> Path:
    """A host's file system: the /etc files useradd needs, and /etc/meshctl, /var/lib as a
    system has them (0755: the units' users traverse them)."""
    root = base / name
    (root / "etc").mkdir(parents=True)
    for f in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        if Path("/etc", f).exists():
            shutil.copy2(Path("/etc", f), root / "etc" / f)
    for d in ("etc/meshctl", "var/lib", "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for d in (root, root / "etc", root / "etc/meshctl", root / "var", root / "var/lib",
              root / "run"):  # fmt: skip
        d.chmod(0o755)
    return root


def _add_leg(host: str, bridge: str, cidr: str, veth: str, ifname: str = "eth1") -> None:
    """Another interface (`ifname`) for namespace `host`, on `bridge`, with `cidr`."""
    from pyroute2 import IPRoute, NetNS

    address, prefixlen = cidr.split("/")
    with IPRoute() as ipr:
        ipr.link("add", ifname=veth, kind="veth", peer={"ifname": ifname, "net_ns_fd": host})
        index = ipr.link_lookup(ifname=veth)[0]
        master = ipr.link_lookup(ifname=bridge)[0]
        ipr.link("set", index=index, master=master, state="up")
    with NetNS(host) as ns:
        eth1 = ns.link_lookup(ifname=ifname)[0]
        ns.addr("add", index=eth1, address=address, prefixlen=int(prefixlen))
        ns.link("set", index=eth1, state="up")


@contextmanager
def routed_hosts(roles: tuple[str, ...], base_prefix: str = "vmunits-") -> Iterator[list[Host]]:
    """One network namespace per role, each on its own bridge and subnet, joined by a router
    namespace (its eth0 on the first bridge, a leg on each other; forwarding on in it only).
    Yields the hosts in `roles` order; removes everything after."""
    for tool in ("setpriv", "useradd", "iptables"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    prefix = unique()
    base = Path(tempfile.mkdtemp(prefix=base_prefix, dir="/tmp"))
    base.chmod(0o755)
    bridges, made = [], []
    hosts: list[Host] = []
    try:
        subnets = []
        for i in range(len(roles)):
            subnet = netns.free_subnet("10.250.0.0/16")
            netns.create_bridge(f"{prefix}b{i}", f"{subnet[1]}/24")
            bridges.append(f"{prefix}b{i}")
            subnets.append(subnet)
        router = prefix + "rt"
        netns.create_host(router, bridges[0], f"{subnets[0][254]}/24")
        made.append(router)
        for i in range(1, len(roles)):
            _add_leg(router, bridges[i], f"{subnets[i][254]}/24", f"{prefix}r{i}", f"eth{i}")
        subprocess.run(["ip", "netns", "exec", router, "sysctl", "-qw",
                        "net.ipv4.ip_forward=1"], check=True, timeout=30)  # fmt: skip
        for i, role in enumerate(roles):
            ip = str(subnets[i][2])
            name = prefix + role
            netns.create_host(name, bridges[i], f"{ip}/24", str(subnets[i][254]))
            made.append(name)
            root = _root_dir(base, role)
            logs = base / f"{role}-logs"
            logs.mkdir()
            hosts.append(Host(name, ip, root, Runner(root, name, logs)))
        yield hosts
    finally:
        for h in reversed(hosts):
            h.runner.stop_all()
        for name in made:
            netns.delete_host(name)
        for bridge in bridges:
            netns.delete_bridge(bridge)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    with routed_hosts(("reg", "vm")) as (reg, vm):
        yield reg, vm


def _status(reg: Host) -> dict[str, Any]:
    home = reg.root / "var/lib/meshctl/registry"
    code = f"""
import json, ssl, urllib.request
ctx = ssl.create_default_context(cafile={str(home / "ca/ca.crt")!r})
tok = open({str(home / "operator.token")!r}).read().strip()
req = urllib.request.Request("https://127.0.0.1:15012/v1/status",
                             headers={{"Authorization": "Bearer " + tok}})
print(urllib.request.urlopen(req, context=ctx, timeout=5).read().decode())
"""
    return dict(json.loads(reg.python(code)))


def _get(host: Host, url: str, *, uid: int | None = None) -> dict[str, Any]:
    code = f"""
import urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
print(opener.open({url!r}, timeout=5).read().decode())
"""
    return dict(json.loads(host.python(code, uid=uid)))


def _until(pred: Any, what: str, timeout: float = 30.0) -> Any:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            got = pred()
            if got:
                return got
        except (AssertionError, OSError, ValueError) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def test_docs_step_by_step_meshes_a_vm_on_another_subnet(hosts: tuple[Host, Host]) -> None:
    reg, vm = hosts
    registry_block, vm_block = doc_blocks()
    (reg.root / "etc/meshctl/mesh.yaml").write_text(MESH_YAML)
    (vm.runner.unit_dir).mkdir(parents=True)
    (vm.runner.unit_dir / "orders.service").write_text(ORDERS_UNIT)

    for argv in registry_block:
        reg.run(argv)
    shutil.copy(reg.root / "orders.token", vm.root / "orders.token")  # "copy it to the VM"
    join = (vm.root / "orders.token").read_text().strip()
    assert join.startswith("mjoin1."), "token create prints a join string"
    for argv in vm_block:
        vm.run(argv)
    # The runner saw READY=1 from the proxy (Type=notify) before it started the app.

    proxy_unit = "meshctl-proxy-orders.service"
    uid = int(vm.runner.load(proxy_unit).get("User") and vm.runner._user("meshctl-proxy")[0])
    assert uid == 1337, "the proxy user was made with Istio's uid"

    # The endpoint is registered with the VM's address (the route's source), not 127.0.0.1.
    status = _until(
        lambda: (s := _status(reg))["endpoints"] and s, "orders registered in the catalog"
    )
    [ep] = [e for e in status["endpoints"] if e["service"] == "orders"]
    assert ep["address"] == vm.ip

    # A caller on the registry host (explicit mode) calls orders by name over mTLS.
    reg.run(["meshctl", "token", "create", "frontend", ">", "frontend.token"])
    caller_home = reg.root / "caller"
    caller = netns.run_in(
        reg.name,
        [str(BIN / "meshctl"), "proxy", "--service", "frontend",
         "--token-file", str(reg.root / "frontend.token"),
         "--upstream", "orders:8080=127.0.0.1:18080", "--inbound", "127.0.0.1:15106",
         "--admin", "127.0.0.1:15100", "--metrics", "127.0.0.1:15190"],
        env={**reg.env(), "MESH_HOME": str(caller_home)},
        stdout=(reg.root / "caller.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        answer = _until(lambda: _get(reg, "http://127.0.0.1:18080/echo"), "orders through mesh")
        assert answer["service"] == "orders"
        xfcc = answer["headers"].get("x-forwarded-client-cert", "")
        assert "spiffe://vm.local/ns/default/sa/frontend" in xfcc, answer["headers"]

        # The app's outbound connections to a non-mesh address still work: the interception
        # sends them to the proxy's --outbound listener, which passes them through. Not
        # reg.ip: that is the caller's endpoint address now, and an undeclared port of a
        # mesh endpoint's address goes over mTLS to its proxy (docs/interception.md).
        other = str(ipaddress.ip_address(reg.ip) + 1)
        subprocess.run(["ip", "netns", "exec", reg.name, "ip", "addr", "add", f"{other}/24",
                        "dev", "eth0"], check=True, timeout=30)  # fmt: skip
        web = netns.run_in(reg.name, ["/usr/bin/python3", str(SHOP), "--service", "web",
                                      "--host", other, "--port", "18999"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            got = _until(lambda: _get(vm, f"http://{other}:18999/echo", uid=65534),
                         "the app's passthrough call")  # fmt: skip
            assert got["service"] == "web"
        finally:
            web.terminate()
            web.wait(10)

        # The proxy crashes and is restarted with the same (spent) token file: it rejoins
        # with the certificate it kept, and the registry keeps one entry for it.
        key = vm.root / "var/lib/meshctl/proxies/orders/tls/svid.key"
        st = key.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (1337, 0o600)
        vm.runner.kill(proxy_unit)
        vm.runner.start(proxy_unit)  # Restart=always
        answer = _until(lambda: _get(reg, "http://127.0.0.1:18080/echo"), "orders after restart")
        assert answer["service"] == "orders"
        log = (vm.runner.logs / f"{proxy_unit}.log").read_text()
        assert log.count("joined as") == 1 and "renewed certificate" in log, log[-3000:]
        proxies = [p for p in _status(reg)["proxies"] if p["service"] == "orders"]
        assert len(proxies) == 1, proxies

        # SIGTERM stops the registry while both proxies hold their streams open: it exits
        # by itself within TimeoutStopSec (the runner would SIGKILL it and return None).
        assert reg.runner.stop("meshctl-registry.service") == 0
    finally:
        caller.terminate()
        caller.wait(15)
    vm.runner.systemctl(["stop", "orders.service"])
    rules = subprocess.run(["ip", "netns", "exec", vm.name, "iptables-save", "-t", "nat"],
                           capture_output=True, text=True, timeout=30).stdout  # fmt: skip
    assert "MESH_" not in rules, "ExecStopPost removed the interception"
    assert os.path.exists(vm.root / "etc/meshctl/orders.token")
