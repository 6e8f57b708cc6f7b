"""The netns topology: client and upstream in two network namespaces joined by veth and a bridge.

    netns-direct                   wrk (ns R1) -> nginx (ns R2)
    netns-meshctl-mtls-{http,tcp}  wrk (ns client) -> iptables REDIRECT -> proxy :15001
                                   -> mTLS -> proxy :15006 (ns upstream) -> nginx
    netns-haproxy-tls-{http,tcp}   wrk (ns R1) -> haproxy A (ns R1) -> TLS 1.3, client
                                   certificates -> haproxy B (ns R2) -> nginx (ns R2)

The meshctl systems are the product itself: `meshctl up` (local runtime, transparent mode)
on a bench config whose services are `client` (an idle listener: the load comes from wrk
run in its namespace), `upstream` and `upstream-tcp` (nginx with the bench's config), then
`meshctl down`. So the namespaces, the bridge, the hosts files (service -> VIP), the
interception rules (proxy/intercept, installed by the supervisor), the proxies running as
uid 1337 and SO_ORIGINAL_DST are exactly what `up` does. wrk calls
`http://upstream:8080/` inside the client's namespace, as an app would.

The references (direct, HAProxy) need namespaces without interception (wrk and HAProxy A
would otherwise be redirected to the meshctl proxy), so they get two hosts of their own,
made with the project's `meshctl.launch.netns` and plugged into the same bridge `up` made:
the same veth + bridge crossing, with a local hop (wrk -> HAProxy A on 127.0.0.1) where
meshctl has wrk -> REDIRECT -> 127.0.0.1:15001.

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and ip, iptables, nsenter, setpriv: the same test
`meshctl up` makes to choose transparent mode (`reason_unavailable`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import Adopted, Proc, free_port

KINDS = ("direct", "meshctl-mtls", "haproxy-tls")
PREFIX = "netns-"
SERVICE_PORT = 8080  # every service's port in the bench config; nginx listens on it
APP_UID = 65534  # `nobody`: who `meshctl up` runs an app as by default (mesh.yaml `user:`)
HAPROXY_PORT0 = 10001  # the references' HAProxy ports (their namespaces are ours alone)

MESH_YAML = """\
# The bench mesh for the netns topology (bench/netns.py), run by `meshctl up`.
trustDomain: bench.local
namespace: default
services:
  client:
    ports:
      - {{port: 8080, protocol: http, name: http}}
    workloads:
      - version: v1
        command: {idle}
{upstreams}"""

UPSTREAM_YAML = """\
  {name}:
    ports:
      - {{port: 8080, protocol: {protocol}, name: {protocol}}}
    workloads:
      - version: v1
        command: {command}
"""

# The client's app: listens on its service port (so `up` sees it ready) and does nothing.
IDLE_APP = ("import socket, time; s = socket.socket(); "
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            "s.bind(('127.0.0.1', 8080)); s.listen(); time.sleep(10**9)")

# `python -c` run inside a namespace: one GET, exit 0 on a 200 with the bench's body.
HTTP_OK = ("import sys, urllib.request as u; o = u.build_opener(u.ProxyHandler({})); "
           "r = o.open(sys.argv[1], timeout=3); b = r.read(); "
           "sys.exit(0 if r.status == 200 and len(b) == int(sys.argv[2]) else 1)")


def names(variants: tuple[str, ...]) -> list[str]:
    out = [f"{PREFIX}direct"]
    for variant in variants:
        out += [f"{PREFIX}{kind}-{variant}" for kind in KINDS[1:]]
    return out


def reason_unavailable() -> str | None:
    """Why the netns topology cannot run here (None: it can): `meshctl up`'s own test."""
    if os.geteuid() != 0:
        return "it needs root (network namespaces, iptables, proxies as uid 1337)"
    from meshctl.launch.local import choose_mode
    from meshctl.launch.plan import TRANSPARENT

    mode, note = choose_mode(False)
    return None if mode == TRANSPARENT else (note or "meshctl up would use explicit mode")


def mesh_config(variants: tuple[str, ...], nginx_confs: dict[str, Path]) -> str:
    """mesh.yaml for `up`: the idle client, and one nginx upstream per variant."""
    ups = ""
    for variant in variants:
        service = "upstream" if variant == "http" else "upstream-tcp"
        command = ["nginx", "-p", str(nginx_confs[service].parent), "-c",
                   str(nginx_confs[service])]
        ups += UPSTREAM_YAML.format(name=service, protocol=variant,
                                    command=json.dumps(command))
    idle = json.dumps([sys.executable, "-c", IDLE_APP])
    return MESH_YAML.format(idle=idle, upstreams=ups)


def in_ns(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def http_ok_in(ns: str, url: str, body_bytes: int) -> bool:
    done = subprocess.run(in_ns(ns, [sys.executable, "-c", HTTP_OK, url, str(body_bytes)]),
                          capture_output=True, timeout=10, check=False)
    return done.returncode == 0


def listening(pid: int, port: int) -> bool:
    """A TCP listener on `port` in the network namespace of `pid` (/proc/PID/net/tcp)."""
    with open(f"/proc/{pid}/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


@dataclass
class NetnsMesh:
    """`meshctl up` / `meshctl down` on a MESH_HOME of our own, and the references' hosts."""

    dir: Path
    load_core: int
    prefix: str = field(default_factory=lambda: "bn" + secrets.token_hex(2) + "-")
    up_result: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    ref_hosts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # something is still there
    warnings: list[str] = field(default_factory=list)  # `down` left it, we removed it

    @property
    def home(self) -> Path:
        return self.dir / "mesh-home"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("MESH_FORCE_EXPLICIT", None)
        env.update(MESH_HOME=str(self.home), MESH_NETNS_PREFIX=self.prefix,
                   MESH_LOG=os.environ.get("MESH_LOG", "WARNING"))
        return env

    def meshctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        # Under taskset: the registry, the supervisor and the apps it starts inherit the
        # load core; the proxies are moved to the proxy core once they run.
        argv = ["taskset", "-c", str(self.load_core), sys.executable, "-m", "meshctl", *args]
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=self.dir)

    def up(self, config: Path) -> dict[str, Any]:
        done = self.meshctl("up", str(config), "--runtime", "local", "--timeout", "60",
                            "-o", "json", "--registry-port", str(free_port()),
                            "--monitor-port", str(free_port()))
        if done.returncode != 0:
            raise RuntimeError(f"meshctl up failed (rc {done.returncode}): "
                               f"{done.stderr.strip()[-2000:]}")
        self.up_result = json.loads(done.stdout.strip().splitlines()[-1])
        if self.up_result.get("mode") != "transparent":
            raise RuntimeError(f"meshctl up ran in {self.up_result.get('mode')} mode: "
                               f"{self.up_result.get('note')}")
        self.state = json.loads((self.home / "state.json").read_text())
        return self.up_result

    def workload(self, service: str) -> dict[str, Any]:
        w = next(w for w in self.up_result["workloads"] if w["service"] == service)
        return {**w, **self.state["workloads"][w["name"]]}

    def proxy(self, service: str, name: str) -> Adopted:
        w = self.workload(service)
        return Adopted(name, [], self.home / "logs" / f"{w['name']}.proxy.log",
                       known_pid=int(w["proxy_pid"]))

    def pids(self) -> dict[str, int]:
        """The registry's and the supervisor's pids (pinned with the load generator)."""
        out = {}
        for name in ("registry", "supervisor"):
            with contextlib.suppress(OSError, ValueError):
                out[name] = int((self.home / "logs" / f"{name}.pid").read_text())
        return out

    def add_ref_host(self, suffix: str, offset: int) -> tuple[str, str]:
        """A host of ours on `up`'s bridge, at the subnet's `offset`-th address from the top."""
        from meshctl.launch import netns

        network = self.up_result["network"]
        subnet = ipaddress.IPv4Network(network["subnet"])
        used = {w["address"] for w in self.up_result["workloads"]}
        address = str(subnet[-2 - offset])
        if address in used:
            raise RuntimeError(f"{address} is taken in {subnet}: too many workloads")
        name = f"{self.prefix}{suffix}"
        self.ref_hosts.append(name)  # before creating: close() deletes a half-made one
        netns.create_host(name, network["bridge"], f"{address}/{subnet.prefixlen}",
                          gateway=str(subnet[1]))
        return name, address

    def close(self) -> None:
        """Our hosts first (they hang on `up`'s bridge), then `meshctl down --purge`."""
        from meshctl.launch import netns

        for name in reversed(self.ref_hosts):
            try:
                netns.delete_host(name)
            except Exception as exc:
                self.errors.append(f"deleting host {name}: {exc}")
        down = ""
        if self.home.exists():
            try:
                done = self.meshctl("down", "--purge", "-o", "json")
                down = (done.stdout + done.stderr).strip()[-1500:]
                if done.returncode != 0:
                    self.errors.append(f"meshctl down: rc {done.returncode}: {down}")
            except subprocess.TimeoutExpired:
                self.errors.append("meshctl down timed out")
        left = leftovers(self.prefix)
        if left:  # say so (a bug to fix), then remove them with the project's own calls
            self.warnings.append(f"left after `meshctl down` ({down}): {'; '.join(left)}; "
                                 "removed by the bench")
            remove_leftovers(self.prefix, self.errors)

    def __enter__(self) -> NetnsMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def leftovers(prefix: str) -> list[str]:
    """Anything named with `prefix` still there: namespaces, links, FORWARD rules."""
    out = []
    from meshctl.launch import netns

    hosts = netns.list_hosts(prefix)
    if hosts:
        out.append(f"namespaces left: {', '.join(hosts)}")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10,
                           check=False).stdout
    mine = [ln.split(":")[1].strip() for ln in links.splitlines()
            if f" {prefix}" in ln or f"alias {prefix}" in ln]
    if mine:
        out.append(f"links left: {', '.join(mine)}")
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=10,
                           check=False).stdout
    stale = [ln for ln in rules.splitlines() if f"meshctl bridge {prefix}" in ln]
    if stale:
        out.append(f"iptables rules left: {'; '.join(stale)}")
    return out


def remove_leftovers(prefix: str, errors: list[str]) -> None:
    """Delete every namespace and bridge named with `prefix` (a failed `down`'s leavings)."""
    from meshctl.launch import netns

    for name in netns.list_hosts(prefix):
        try:
            netns.delete_host(name)
        except Exception as exc:
            errors.append(f"deleting namespace {name}: {exc}")
    bridge = f"{prefix}br0"
    try:
        netns.delete_bridge(bridge)
    except Exception as exc:
        errors.append(f"deleting bridge {bridge}: {exc}")
    errors += [f"still there: {x}" for x in leftovers(prefix)]


def ref_proc(name: str, ns: str, argv: list[str], log: Path, core: int) -> Proc:
    """A reference process inside host `ns`, pinned to `core` (taskset, then ip netns exec)."""
    return Proc(name, in_ns(ns, argv), log, core=core)


def pid_listening(proc: Proc, port: int) -> bool:
    proc.check()
    return listening(proc.pid, port)

