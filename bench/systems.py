"""The systems under test, built side by side on 127.0.0.1 and torn down together.

    direct                   wrk -> nginx
    meshctl-mtls-{http,tcp}  wrk -> proxy A (explicit upstream listener) -> mTLS -> proxy B -> nginx
    haproxy-plain-{http,tcp} wrk -> haproxy A -> haproxy B -> nginx
    haproxy-tls-{http,tcp}   wrk -> haproxy A -> TLS 1.3, client certificates -> haproxy B -> nginx

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

from bench.certs import make_tls_files
from bench.procs import Proc, cpus, free_port, port_open, wait_until

REPO = Path(__file__).resolve().parents[1]
BODY_BYTES = 1024

KINDS = ("direct", "meshctl-mtls", "haproxy-plain", "haproxy-tls")
VARIANTS = ("http", "tcp")


def system_names(variants: tuple[str, ...] = VARIANTS) -> list[str]:
    """Every system of a run, in the order they are interleaved."""
    names = ["direct"]
    for variant in variants:
        names += [f"{kind}-{variant}" for kind in KINDS[1:]]
    return names


@dataclass
class System:
    name: str
    url: str
    proxies: dict[str, Proc] = field(default_factory=dict)  # role ("A", "B") -> process


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
"""

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
    listen 127.0.0.1:{port};
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
                    certs: dict[str, Path] | None) -> tuple[str, str]:
    """The two HAProxy configs (hop A, hop B) for one variant, plain or with mTLS between them."""
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
         f"backend b\n  server b 127.0.0.1:{port_b}{client_tls}\n")
    b = (head + f"frontend b\n  bind 127.0.0.1:{port_b}{server_tls}\n  default_backend up\n"
         f"backend up\n  server up 127.0.0.1:{upstream}\n")
    return a, b


def _listening(port: int, proc: Proc) -> bool:
    proc.check()  # raises if it died: no point waiting on
    return port_open(port)


def http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=3) as r:
        return r.status == 200 and len(r.read()) == BODY_BYTES


class Lab:
    """Builds the systems in a temporary directory; `close()` stops every process it started."""

    def __init__(self, names: list[str], keep: bool = False) -> None:
        self.names = names
        self.dir = Path(tempfile.mkdtemp(prefix="meshctl-bench-"))
        self.keep = keep
        self.procs: list[Proc] = []
        self.systems: dict[str, System] = {}
        cores = cpus()
        # Load generator, nginx, registry | proxies. One core only: everything shares it.
        self.load_core = cores[0]
        self.proxy_core = cores[1] if len(cores) > 1 else cores[0]
        self.mesh: object | None = None

    # -- building -------------------------------------------------------------------------
    def _start(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc.start()

    def start(self) -> dict[str, System]:
        self.nginx_port = self._nginx()
        for name in self.names:
            if name == "direct":
                self.systems[name] = System(name, f"http://127.0.0.1:{self.nginx_port}/")
            elif name.startswith("haproxy-"):
                self.systems[name] = self._haproxy(name)
        mesh_names = [n for n in self.names if n.startswith("meshctl-")]
        if mesh_names:
            self._mesh(mesh_names)
        for system in self.systems.values():
            wait_until(functools.partial(http_ok, system.url),
                       what=f"{system.name}: first 200", timeout=30)
        return self.systems

    def _nginx(self) -> int:
        html = self.dir / "html"
        html.mkdir()
        (self.dir / "tmp").mkdir()
        (html / "1k").write_bytes(b"x" * (BODY_BYTES - 1) + b"\n")
        # nginx may drop to `nobody` when run as root: let it read its files.
        os.chmod(self.dir, 0o755)
        os.chmod(html, 0o755)
        port = free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(d=self.dir, port=port))
        proc = self._start(Proc("nginx", ["nginx", "-p", str(self.dir), "-c", str(conf)],
                                self.dir / "nginx.log", core=self.load_core))
        wait_until(functools.partial(_listening, port, proc), what="nginx listening")
        return port

    def _haproxy(self, name: str) -> System:
        _, mode, variant = name.split("-")
        certs = None
        if mode == "tls":
            if not hasattr(self, "certs"):
                (self.dir / "pki").mkdir()
                self.certs = make_tls_files(self.dir / "pki")
            certs = self.certs
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

    def _mesh(self, names: list[str]) -> None:
        # The integration tests' builders: a real registry, join tokens, real proxies.
        sys.path.insert(0, str(REPO))
        from tests.integration.harness import Mesh

        config = self.dir / "mesh-config"
        config.mkdir()
        (config / "mesh.yaml").write_text(MESH_YAML)
        mesh = Mesh(self.dir / "mesh", config)
        self.mesh = mesh
        mesh.env["MESH_LOG"] = os.environ.get("MESH_LOG", "WARNING")
        try:
            mesh.start_registry()
        finally:
            self._adopt(mesh, self.load_core)
        for name in names:
            variant = name.rsplit("-", 1)[1]
            service = "upstream" if variant == "http" else "upstream-tcp"
            local = free_port()
            try:
                b = mesh.proxy(service, "v1", app_port=self.nginx_port)
                a = mesh.proxy("client", "v1", upstreams={f"{service}:8080": local})
            finally:
                self._adopt(mesh, self.proxy_core)
            system = System(name, f"http://127.0.0.1:{local}/")
            system.proxies = {"A": self._wrap(a["proc"], f"{name}-A"),
                              "B": self._wrap(b["proc"], f"{name}-B")}
            self.systems[name] = system

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
