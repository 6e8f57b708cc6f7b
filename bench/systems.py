"""The systems under test, built side by side on 127.0.0.1 and torn down together.

    direct                   wrk -> nginx
    meshctl-mtls-{http,tcp}  wrk -> proxy A (explicit upstream listener) -> mTLS -> proxy B -> nginx
    meshctl-plain-{http,tcp} the same with plaintext between the proxies (DestinationRule
                             tls.mode DISABLE, PeerAuthentication PERMISSIVE on the upstream)
    meshctl-interpreted-http meshctl-mtls-http with both proxies on the interpreted modules
                             (MESH_COMPILED=0): what the compiled core (proxy/compiled) buys
    haproxy-plain-{http,tcp} wrk -> haproxy A -> haproxy B -> nginx
    haproxy-tls-{http,tcp}   wrk -> haproxy A -> TLS 1.3, client certificates -> haproxy B -> nginx
    netns-*                  the same across two network namespaces, meshctl with iptables
                             interception, built by `meshctl up` (bench/netns.py; root only)

Pinning, the same for every system: the load generator, nginx and the mesh registry on one
core; every proxy (both hops) on the other. So "per proxy core" figures mean both hops
sharing one core, and the generator never competes with the proxies it measures.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.certs import make_tls_files
from bench.procs import Proc, cpus, free_port, port_open, wait_until

REPO = Path(__file__).resolve().parents[1]
BODY_BYTES = 1024

KINDS = ("direct", "meshctl-mtls", "meshctl-plain", "haproxy-plain", "haproxy-tls")
VARIANTS = ("http", "tcp")
TOPOLOGIES = ("loopback", "netns")
NETNS = "netns-"  # the prefix of the netns topology's systems (bench/netns.py)
# The floor of a Python proxy: a bare uvloop byte relay, TLS between the hops (bench/pyrelay.py).
FLOOR = "pyrelay-tls-http"
# meshctl mTLS HTTP with the proxies' compiled core off (MESH_COMPILED=0), in the same run.
INTERPRETED = "meshctl-interpreted-http"


def system_names(variants: tuple[str, ...] = VARIANTS,
                 topologies: tuple[str, ...] = ("loopback",)) -> list[str]:
    """Every system of a run, in the order they are interleaved."""
    from bench import netns

    names = []
    if "loopback" in topologies:
        names.append("direct")
        for variant in variants:
            names += [f"{kind}-{variant}" for kind in KINDS[1:]]
            if variant == "http":
                names += [FLOOR, INTERPRETED]
    if "netns" in topologies:
        names += netns.names(variants)
    return names


def direct_of(name: str) -> str:
    """The direct system of `name`'s topology: what its added latency is measured against."""
    return f"{NETNS}direct" if name.startswith(NETNS) else "direct"


@dataclass
class System:
    name: str
    url: str
    proxies: dict[str, Proc] = field(default_factory=dict)  # role ("A", "B") -> process
    netns: str | None = None  # the network namespace wrk runs in (netns topology)


MESH_YAML = """\
# The bench mesh: a client, an HTTP upstream and an opaque-TCP upstream; no policy.
trustDomain: bench.local
namespace: default
services:
  client:
    ports:
      - {port: 8080, protocol: http, name: http}
  upstream:
    ports:
      - {port: 8080, protocol: http, name: http}
  upstream-tcp:
    ports:
      - {port: 8080, protocol: tcp, name: tcp}
  upstream-plain:
    ports:
      - {port: 8080, protocol: http, name: http}
  upstream-plain-tcp:
    ports:
      - {port: 8080, protocol: tcp, name: tcp}
  upstream-interpreted:
    ports:
      - {port: 8080, protocol: http, name: http}
"""


def upstream_service(name: str) -> str:
    """The upstream service of a loopback meshctl system. One each: two systems sharing a
    service would balance each other's requests across both their B proxies."""
    variant = name.rsplit("-", 1)[1]
    if name == INTERPRETED:
        return "upstream-interpreted"
    if name.startswith("meshctl-plain-"):
        return "upstream-plain" if variant == "http" else "upstream-plain-tcp"
    return "upstream" if variant == "http" else "upstream-tcp"


# The plaintext hop (meshctl-plain-*): the client's proxy sends plaintext to these two
# upstreams, whose proxies accept it.
PLAIN_YAML = "".join(f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {svc}}}
spec:
  host: {svc}
  trafficPolicy:
    tls: {{mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {svc}}}
spec:
  selector:
    matchLabels: {{app: {svc}}}
  mtls: {{mode: PERMISSIVE}}
""" for svc in ("upstream-plain", "upstream-plain-tcp"))

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
error_log {d}/nginx-error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  server {{
    listen {listen};
    root {d}/html;
    location / {{ try_files /1k =404; }}
  }}
}}
"""

HAPROXY_HEAD = """\
global
  nbthread 1
  maxconn 4096
defaults
  mode {mode}
  timeout connect 5s
  timeout client 120s
  timeout server 120s
{http_opts}
"""
HAPROXY_HTTP_OPTS = "  option http-keep-alive\n  http-reuse always\n"


def haproxy_configs(variant: str, tls: bool, port_a: int, port_b: int, upstream: int,
                    certs: dict[str, Path] | None, b_host: str = "127.0.0.1"
                    ) -> tuple[str, str]:
    """The two HAProxy configs (hop A, hop B) for one variant, plain or with mTLS between them.

    `b_host`: where B listens and A sends (B's namespace's address in the netns topology).
    """
    head = HAPROXY_HEAD.format(mode=variant,
                               http_opts=HAPROXY_HTTP_OPTS if variant == "http" else "")
    client_tls = server_tls = ""
    if tls:
        assert certs is not None
        client_tls = (f" ssl crt {certs['client']} ca-file {certs['ca']} verify required"
                      " verifyhost upstream sni str(upstream) ssl-min-ver TLSv1.3")
        server_tls = (f" ssl crt {certs['server']} ca-file {certs['ca']} verify required"
                      " ssl-min-ver TLSv1.3")
    a = (head + f"frontend a\n  bind 127.0.0.1:{port_a}\n  default_backend b\n"
         f"backend b\n  server b {b_host}:{port_b}{client_tls}\n")
    b = (head + f"frontend b\n  bind {b_host}:{port_b}{server_tls}\n  default_backend up\n"
         f"backend up\n  server up 127.0.0.1:{upstream}\n")
    return a, b


def _listening(port: int, proc: Proc) -> bool:
    proc.check()  # raises if it died: no point waiting on
    return port_open(port)


def http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=3) as r:
        return r.status == 200 and len(r.read()) == BODY_BYTES


def system_ok(system: System) -> bool:
    """A first 200 with the whole body, asked from where wrk will run."""
    if system.netns is None:
        return http_ok(system.url)
    from bench.netns import http_ok_in

    return http_ok_in(system.netns, system.url, BODY_BYTES)


def write_nginx(d: Path, listen: str, owner: int | None = None) -> Path:
    """nginx's files in `d` (the 1 kB body, temp dir, config listening on `listen`).
    `owner`: the uid nginx runs as when it is not root (an app under `meshctl up` runs as
    `nobody`), which must write its pid, error log and temp files in `d`."""
    html = d / "html"
    html.mkdir(parents=True)
    (d / "tmp").mkdir()
    (html / "1k").write_bytes(b"x" * (BODY_BYTES - 1) + b"\n")
    # nginx may drop to `nobody` when run as root: let it read its files.
    os.chmod(d, 0o755)
    os.chmod(html, 0o755)
    if owner is not None:
        os.chown(d, owner, -1)
        os.chown(d / "tmp", owner, -1)
    conf = d / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=d, listen=listen))
    return conf


class Lab:
    """Builds the systems in a temporary directory; `close()` stops every process it started."""

    def __init__(self, names: list[str], keep: bool = False, netns_optional: bool = False
                 ) -> None:
        """`netns_optional`: when the netns topology cannot be built (say `meshctl up`
        fails), drop its systems, say why in `netns_error`, and go on with the others."""
        self.names = names
        self.netns_optional = netns_optional
        self.netns_error: str | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="meshctl-bench-"))
        self.keep = keep
        self.procs: list[Proc] = []
        self.systems: dict[str, System] = {}
        cores = cpus()
        # Load generator, nginx, registry | proxies. One core only: everything shares it.
        self.load_core = cores[0]
        self.proxy_core = cores[1] if len(cores) > 1 else cores[0]
        self.mesh: object | None = None
        self.netns: Any = None  # bench.netns.NetnsMesh, when the netns topology runs

    # -- building -------------------------------------------------------------------------
    def _start(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc.start()

    def start(self) -> dict[str, System]:
        os.chmod(self.dir, 0o755)  # nginx as `nobody`, the proxies as uid 1337 read below it
        loopback = [n for n in self.names if not n.startswith(NETNS)]
        if loopback:
            self.nginx_port = self._nginx()
        for name in loopback:
            if name == "direct":
                self.systems[name] = System(name, f"http://127.0.0.1:{self.nginx_port}/")
            elif name.startswith("haproxy-"):
                self.systems[name] = self._haproxy(name)
            elif name == FLOOR:
                self.systems[name] = self._pyrelay(name)
        mesh_names = [n for n in self.names if n.startswith("meshctl-")]
        if mesh_names:
            self._mesh(mesh_names)
        for system in self.systems.values():
            wait_until(functools.partial(system_ok, system),
                       what=f"{system.name}: first 200", timeout=30)
        netns_names = [n for n in self.names if n.startswith(NETNS)]
        if netns_names:
            first = len(self.procs)
            try:
                self._netns(netns_names)
                for name in netns_names:
                    wait_until(functools.partial(system_ok, self.systems[name]),
                               what=f"{name}: first 200", timeout=30)
            except Exception as exc:
                if not self.netns_optional:
                    raise
                self._drop_netns(netns_names, self.procs[first:], exc)
        return self.systems

    def _drop_netns(self, names: list[str], procs: list[Proc], exc: Exception) -> None:
        """The netns topology failed to build: remove what it made, keep the rest running."""
        self.netns_error = f"{type(exc).__name__}: {str(exc).strip()[-600:]}"
        print(f"bench: the netns topology is dropped from this run: {self.netns_error}",
              file=sys.stderr, flush=True)
        for proc in reversed(procs):
            proc.stop()
            self.procs.remove(proc)
        for name in names:
            self.systems.pop(name, None)
        if self.netns is not None:
            self.netns.close()
            if self.netns.errors:  # something is left: that must not pass silently
                raise RuntimeError("; ".join(self.netns.errors)) from exc
            self.netns = None

    def _nginx(self) -> int:
        port = free_port()
        conf = write_nginx(self.dir, f"127.0.0.1:{port}")
        proc = self._start(Proc("nginx", ["nginx", "-p", str(self.dir), "-c", str(conf)],
                                self.dir / "nginx.log", core=self.load_core))
        wait_until(functools.partial(_listening, port, proc), what="nginx listening")
        return port

    def _certs(self) -> dict[str, Path]:
        if not hasattr(self, "certs"):
            (self.dir / "pki").mkdir()
            self.certs = make_tls_files(self.dir / "pki")
        return self.certs

    def _haproxy(self, name: str) -> System:
        _, mode, variant = name.split("-")
        certs = self._certs() if mode == "tls" else None
        port_a, port_b = free_port(), free_port()
        a, b = haproxy_configs(variant, mode == "tls", port_a, port_b, self.nginx_port, certs)
        system = System(name, f"http://127.0.0.1:{port_a}/")
        for role, text, port in (("B", b, port_b), ("A", a, port_a)):
            cfg = self.dir / f"{name}-{role}.cfg"
            cfg.write_text(text)
            proc = self._start(Proc(f"{name}-{role}", ["haproxy", "-db", "-f", str(cfg)],
                                    self.dir / f"{name}-{role}.log", core=self.proxy_core))
            wait_until(functools.partial(_listening, port, proc),
                       what=f"{name} {role} listening")
            system.proxies[role] = proc
        return system

    def _pyrelay(self, name: str) -> System:
        """The floor reference: bench/pyrelay.py as hop A and hop B, TLS with client
        certificates between them (the HAProxy TLS system's certificates)."""
        certs = self._certs()
        port_a, port_b = free_port(), free_port()
        system = System(name, f"http://127.0.0.1:{port_a}/")
        for role, port, upstream in (("B", port_b, self.nginx_port), ("A", port_a, port_b)):
            argv = [sys.executable, "-m", "bench.pyrelay", role, str(port), str(upstream),
                    str(certs["ca"].parent)]
            proc = self._start(Proc(f"{name}-{role}", argv, self.dir / f"{name}-{role}.log",
                                    core=self.proxy_core, cwd=REPO))
            wait_until(functools.partial(_listening, port, proc),
                       what=f"{name} {role} listening")
            system.proxies[role] = proc
        return system

    def registry(self, config: Path) -> Any:
        """The integration tests' builders (a real registry, join tokens, real proxies):
        a registry for `config` (a directory with mesh.yaml), pinned to the load core;
        `close()` stops it and every proxy started from it."""
        sys.path.insert(0, str(REPO))
        from tests.integration.harness import Mesh

        mesh = Mesh(self.dir / "mesh", config)
        self.mesh = mesh
        mesh.env["MESH_LOG"] = os.environ.get("MESH_LOG", "WARNING")
        try:
            mesh.start_registry()
        finally:
            self._adopt(mesh, self.load_core)
        return mesh

    def _mesh(self, names: list[str]) -> None:
        config = self.dir / "mesh-config"
        config.mkdir()
        (config / "mesh.yaml").write_text(MESH_YAML)
        (config / "plaintext.yaml").write_text(PLAIN_YAML)
        mesh = self.registry(config)
        for name in names:
            service = upstream_service(name)
            local = free_port()
            env = mesh.env
            if name == INTERPRETED:
                mesh.env = {**env, "MESH_COMPILED": "0"}
            try:
                b = mesh.proxy(service, "v1", app_port=self.nginx_port)
                a = mesh.proxy("client", "v1", upstreams={f"{service}:8080": local})
            finally:
                mesh.env = env
                self._adopt(mesh, self.proxy_core)
            system = System(name, f"http://127.0.0.1:{local}/")
            system.proxies = {"A": self._wrap(a["proc"], f"{name}-A"),
                              "B": self._wrap(b["proc"], f"{name}-B")}
            self.systems[name] = system

    def _netns(self, names: list[str]) -> None:
        """The netns topology: `meshctl up` for meshctl, two hosts of ours for the references."""
        from bench import netns

        variants = tuple(v for v in VARIANTS if any(n.endswith(f"-{v}") for n in names))
        confs = {("upstream" if v == "http" else "upstream-tcp"):
                 write_nginx(self.dir / f"nginx-{v}", f"127.0.0.1:{netns.SERVICE_PORT}",
                             owner=netns.APP_UID)
                 for v in variants or ("http",)}
        config = self.dir / "netns-config"
        config.mkdir()
        (config / "mesh.yaml").write_text(
            netns.mesh_config(variants or ("http",), confs))
        self.netns = netns.NetnsMesh(self.dir, self.load_core)
        self.netns.up(config)
        client = self.netns.workload("client")
        a = self.netns.proxy("client", "netns-client-proxy")
        pin(a.pid, self.proxy_core)
        for name in names:
            if "-meshctl-" not in name:
                continue
            variant = name.rsplit("-", 1)[1]
            service = "upstream" if variant == "http" else "upstream-tcp"
            b = self.netns.proxy(service, f"{name}-B")
            pin(b.pid, self.proxy_core)
            self.systems[name] = System(name, f"http://{service}:{netns.SERVICE_PORT}/",
                                        {"A": a, "B": b}, netns=client["netns"])
        cli_ns, _ = self.netns.add_ref_host("ref-client", 0)
        srv_ns, srv_ip = self.netns.add_ref_host("ref-server", 1)
        conf = write_nginx(self.dir / "nginx-ref", f"0.0.0.0:{netns.SERVICE_PORT}")
        nginx = self._start(netns.ref_proc(
            "netns-nginx", srv_ns, ["nginx", "-p", str(conf.parent), "-c", str(conf)],
            self.dir / "netns-nginx.log", self.load_core))
        wait_until(functools.partial(netns.pid_listening, nginx, netns.SERVICE_PORT),
                   what="netns nginx listening")
        port = netns.HAPROXY_PORT0
        for name in names:
            if name == f"{NETNS}direct":
                self.systems[name] = System(name, f"http://{srv_ip}:{netns.SERVICE_PORT}/",
                                            netns=cli_ns)
            elif "-haproxy-" in name:
                self.systems[name] = self._netns_haproxy(name, cli_ns, srv_ns, srv_ip, port)
                port += 2

    def _netns_haproxy(self, name: str, cli_ns: str, srv_ns: str, srv_ip: str, port: int
                       ) -> System:
        from bench import netns

        _, _, mode, variant = name.split("-")
        tls = mode == "tls"
        a, b = haproxy_configs(variant, tls, port, port + 1, netns.SERVICE_PORT,
                               self._certs() if tls else None, b_host=srv_ip)
        system = System(name, f"http://127.0.0.1:{port}/", netns=cli_ns)
        for role, text, ns, listen in (("B", b, srv_ns, port + 1), ("A", a, cli_ns, port)):
            cfg = self.dir / f"{name}-{role}.cfg"
            cfg.write_text(text)
            proc = self._start(netns.ref_proc(f"{name}-{role}", ns,
                                              ["haproxy", "-db", "-f", str(cfg)],
                                              self.dir / f"{name}-{role}.log", self.proxy_core))
            wait_until(functools.partial(netns.pid_listening, proc, listen),
                       what=f"{name} {role} listening")
            system.proxies[role] = proc
        return system

    def _adopt(self, mesh: object, core: int) -> None:
        """Pin the harness's processes not pinned yet, every thread of each, to `core`."""
        for hp in getattr(mesh, "procs", []):
            if hp.p is not None and not getattr(hp, "_bench_pinned", False):
                pin(hp.p.pid, core)
                hp._bench_pinned = True

    def _wrap(self, hp: object, name: str) -> Proc:
        proc = Proc(name, hp.argv, hp.log)  # type: ignore[attr-defined]
        proc.p = hp.p  # type: ignore[attr-defined]
        return proc

    # -- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        errors = []
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception as exc:
                errors.append(exc)
        if self.netns is not None:
            self.netns.close()  # our hosts, then `meshctl down`; then checks nothing is left
            errors += [RuntimeError(e) for e in self.netns.errors]
            for warning in self.netns.warnings:
                print(f"bench: warning: {warning}", file=sys.stderr, flush=True)
        if self.mesh is not None:
            self.mesh.close()  # type: ignore[attr-defined]
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise errors[0]

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pin(pid: int, core: int) -> None:
    """Pin every thread of `pid` (threads created later inherit it from their creator)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(int(task.name), {core})


def settle(seconds: float = 0.5) -> None:
    time.sleep(seconds)
