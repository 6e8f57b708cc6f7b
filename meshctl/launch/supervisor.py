"""The local mesh's supervisor: makes the plan real and keeps it so.

One long-running process per MESH_HOME, started detached by `meshctl up`. It reads
MESH_HOME/launch/plan.json on start and on SIGHUP and reconciles: workloads that vanished
are stopped (and their namespaces deleted), new ones started, changed ones restarted.
For each workload, in this order:

  1. transparent mode: the namespace on the bridge, its hosts file (service -> VIP), and
     the interception rules, installed before anything runs in it, so the app's very
     first connection goes through the proxy (or fails closed until the proxy listens);
  2. the proxy, with a fresh one-time join token, as uid 1337 inside the namespace;
  3. the app, with its command and environment, as its own unprivileged user (mesh.yaml
     `user:`, default nobody: meshctl.launch.users), never root nor uid 1337.

Then it watches, every 100 ms: a proxy or app that exited is started again at once (the
first restart is immediate, a crash loop backs off up to 5 s), and every second the
interception rules are checked and re-installed if someone removed them. Interception is
never removed when a proxy dies: the mesh fails closed, as an Istio pod does. The registry
that `up` started is watched the same way, by its pid, and restarted with the same backoff:
it resumes from its files under MESH_HOME/registry (the CA, tokens, the last config
version), and the proxies, which keep serving on their last config, reconnect to it.

The docker runtime (meshctl.launch.docker) uses the same loop with containers for
workloads: the plan names which containers to mesh, the engine's event stream (and a
listing every few seconds) says which run, and each gets its rules and its proxy inside
the container's network namespace (nsenter by pid); the app is the container's, not
ours. A container that stops has its proxy stopped and its endpoint deregistered.

Everything it does is written to MESH_HOME/state.json (atomically) for `up`, `status` and
`down`. SIGTERM stops every app and proxy it runs; `meshctl down` deletes the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from common.state import atomic_write, ensure_dir
from meshctl.client import RegistryClient, RegistryError, RegistryUnavailable
from meshctl.launch import plan as planmod
from meshctl.launch import users
from meshctl.launch.join import JOINED, JOINED_DIR, token_for
from meshctl.launch.plan import (
    DNS_PORT,
    DOCKER,
    PROXY_UID,
    PUBLISHED_PORT,
    TRANSPARENT,
    Plan,
    Workload,
)
from meshctl.launch.procs import (
    LaunchPaths,
    drop_to,
    marked_env,
    marked_pids,
    pid_alive,
    read_json,
    read_pid,
    spawn,
    stop_pids,
    write_json,
)

log = logging.getLogger("meshctl.supervisor")
TICK_S = 0.1
INTERCEPT_CHECK_S = 1.0
MAX_BACKOFF_S = 5.0
STABLE_S = 5.0  # a process that ran this long before exiting was not crash-looping
# The namespaces have no route to a resolver: without this, every DNS lookup an app makes
# (Python's HTTPServer asks for the FQDN of 0.0.0.0 at start) waits out the host's
# resolv.conf timeouts. Asking 127.0.0.1 fails at once: the proxy answers mesh names and
# forwards the rest to 127.0.0.1:53, where nothing listens.
RESOLV_CONF = (
    "# meshctl: mesh names are answered by the proxy (port 53 redirected to it) and are\n"
    "# in /etc/hosts; this namespace has no other resolver\n"
    "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
)


@dataclass
class Proc:
    """One supervised process (an app or a proxy) and its restart bookkeeping."""

    role: str  # "app" | "proxy" | "registry"
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # monotonic
    started_wall: float = 0.0  # time.time(), comparable with the registry's timestamps
    restarts: int = 0
    quick_exits: int = 0  # exits in a row, each sooner than STABLE_S after its start
    next_start: float = 0.0
    last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen and self.popen.poll() is None else None


@dataclass
class Run:
    spec: Workload
    proxy: Proc = field(default_factory=lambda: Proc("proxy"))
    app: Proc = field(default_factory=lambda: Proc("app"))
    intercept_checked: float = 0.0
    intercept_reinstalls: int = 0
    app_listening: bool = False
    error: str | None = None

    @property
    def procs(self) -> tuple[Proc, ...]:
        """What we run: the proxy, and the app unless it is a container's (or a gateway)."""
        alone = bool(self.spec.container) or self.spec.is_gateway
        return (self.proxy,) if alone else (self.proxy, self.app)

    @property
    def app_pid(self) -> int | None:
        if self.spec.container:
            return self.spec.pid if pid_alive(self.spec.pid) else None
        return self.app.pid

    def to_wire(self) -> dict[str, Any]:
        return {
            "address": self.spec.address,
            "netns": self.spec.netns,
            "container": self.spec.container,
            "proxy_pid": self.proxy.pid,
            "app_pid": self.app_pid,
            "proxy_restarts": self.proxy.restarts,
            "app_restarts": self.app.restarts,
            "proxy_started_wall": self.proxy.started_wall,
            "app_started_wall": self.app.started_wall,
            "proxy_last_exit": self.proxy.last_exit,
            "app_last_exit": self.app.last_exit,
            "intercept_reinstalls": self.intercept_reinstalls,
            "app_listening": self.app_listening,
            "error": self.error,
        }


class Supervisor:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.paths = LaunchPaths(home)
        self.plan: Plan | None = None
        self.generation = 0
        self.runs: dict[str, Run] = {}
        self.reload = True
        self.stopping = False
        self.dirty = True
        self._client: RegistryClient | None = None
        self.started = time.monotonic()
        self.docker: Any = None  # meshctl.launch.docker.DockerWatch, for the docker runtime
        self.registry = Proc("registry")
        self.registry_pid: int | None = None  # the registry's pid, ours or the one up started
        self.registry_down_at: float | None = None  # time.time() when we found it dead

    # -- signals and the loop ------------------------------------------------------------

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload = True

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> None:
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        atomic_write(self.paths.pid_file("supervisor"), f"{os.getpid()}\n", mode=0o644)
        self._kill_orphans()
        try:
            while not self.stopping:
                if self.docker is not None and self.docker.changed():
                    self.reload = True
                if self.reload:
                    self.reload = False
                    self.reconcile()
                now = time.monotonic()
                self._tend_registry(now)
                for run in list(self.runs.values()):
                    self._tend(run, now)
                if self.dirty:
                    self._write_state()
                time.sleep(TICK_S)
        finally:
            if self.docker is not None:
                self.docker.close()
            for run in self.runs.values():
                self._stop_processes(run)
            self._write_state(stopped=True)
            with contextlib.suppress(FileNotFoundError):
                if read_pid(self.paths.pid_file("supervisor")) == os.getpid():
                    self.paths.pid_file("supervisor").unlink()

    def _kill_orphans(self) -> None:
        """Apps and proxies left by a supervisor that was killed: stop them, start afresh."""
        keep = {os.getpid()}
        reg = read_json(self.home / "registry" / "endpoint.json")
        if reg and isinstance(reg.get("pid"), int):
            keep.add(reg["pid"])
        reg_pid = read_pid(self.paths.pid_file("registry"))
        if reg_pid:
            keep.add(reg_pid)
        orphans = [p for p in marked_pids(self.home) if p not in keep]
        if orphans:
            log.info("stopping %d process(es) left by an earlier supervisor", len(orphans))
            stop_pids(orphans, grace=2.0)

    # -- reconcile -----------------------------------------------------------------------

    def reconcile(self) -> None:
        raw = read_json(self.paths.plan)
        if raw is None:
            log.error("no plan at %s: nothing to run", self.paths.plan)
            return
        new = planmod.from_wire(raw["plan"])
        if new.runtime == DOCKER:
            try:
                new = replace(new, workloads=self._containers(new))
            except Exception as exc:  # the engine went away: keep what runs, ask again later
                log.error("listing containers: %s", exc)
                return
        start, stop, restart = planmod.changed(self.plan, new)
        generation = int(raw.get("generation", 0))
        if start or stop or restart or generation != self.generation:
            log.info(
                "plan generation %s: start %s, stop %s, restart %s",
                generation,
                start or "-",
                stop or "-",
                restart or "-",
            )
        for name in stop:
            run = self.runs.pop(name)
            self._stop_processes(run)
            self._release(run.spec)
        for name in restart:
            run = self.runs[name]
            self._stop_processes(run)
            spec = new.workload(name)
            assert spec is not None
            if run.spec.address != spec.address:
                self._delete_namespace(run.spec)
            self.runs[name] = Run(spec)
        for name in start:
            spec = new.workload(name)
            assert spec is not None
            self.runs[name] = Run(spec)
        self.plan = new
        self.dirty |= generation != self.generation or bool(start or stop or restart)
        self.generation = generation
        fresh = set(start) | set(restart)
        for name in (w.name for w in new.members if w.name in fresh):
            self._prepare(self.runs[name], recreate=name in start)

    def _containers(self, plan: Plan) -> tuple[Workload, ...]:
        """The docker runtime's workloads: the running containers the plan selects."""
        from meshctl.launch.docker import DockerWatch

        assert plan.docker is not None
        if self.docker is None or self.docker.target != plan.docker:
            if self.docker is not None:
                self.docker.close()
            self.docker = DockerWatch(plan.docker)
        return tuple(self.docker.workloads(plan.registry_url))

    # -- one workload --------------------------------------------------------------------

    def _prepare(self, run: Run, recreate: bool) -> None:
        """The namespace, hosts file and interception, before any process starts."""
        spec, plan = run.spec, self.plan
        assert plan is not None
        if spec.container:
            from proxy.intercept import iptables

            try:  # before the proxy starts: the app's next connection is proxied
                iptables.install(intercept_config(spec, plan), spec.pid)
                if spec.published:
                    from meshctl.launch.docker import pin_gateway

                    pin_gateway(spec.pid, spec.published_from)
                run.intercept_checked = time.monotonic()
                run.error = None
            except Exception as exc:
                run.error = f"installing interception in container {spec.name}: {exc}"
                log.error("%s", run.error)
            return
        if spec.netns is None or plan.network is None:
            return
        from meshctl.launch import netns
        from proxy.intercept import iptables

        try:
            exists = (netns.NETNS_RUN_DIR / spec.netns).exists()
            if exists and recreate:
                netns.delete_host(spec.netns)
                exists = False
            if not exists:
                record_owned(self.paths, namespace=spec.netns)
                netns.create_host(
                    spec.netns,
                    plan.network.bridge,
                    f"{spec.address}/{plan.network.prefixlen}",
                    gateway=plan.network.gateway,
                )
            netns.write_hosts(spec.netns, dict(spec.hosts))
            atomic_write(netns.ETC_NETNS / spec.netns / "resolv.conf", RESOLV_CONF, mode=0o644)
            iptables.install(intercept_config(spec, plan), spec.netns)
            run.intercept_checked = time.monotonic()
            run.error = None
        except Exception as exc:  # recorded for `up`/`status`; retried by _tend
            run.error = f"setting up namespace {spec.netns}: {exc}"
            log.error("%s", run.error)

    def _tend(self, run: Run, now: float) -> None:
        plan = self.plan
        assert plan is not None
        intercepted = run.spec.netns is not None or bool(run.spec.container)
        if intercepted and now - run.intercept_checked >= INTERCEPT_CHECK_S:
            run.intercept_checked = now
            self._check_interception(run, plan)
        for proc in run.procs:
            popen = proc.popen
            if popen is not None and popen.poll() is None:
                continue
            if popen is not None:  # it exited: count it, maybe back off
                self._exited(proc, popen.returncode, now, f"{proc.role} of {run.spec.name}")
            if now >= proc.next_start:
                self._start(run, proc, now)
                if proc.role == "app" or run.spec.is_gateway:
                    run.app_listening = False
        # A gateway has no app: its own ports (the Gateway servers') are what must listen.
        app_pid = run.proxy.pid if run.spec.is_gateway else run.app_pid
        if not run.app_listening and app_pid is not None:
            run.app_listening = listening(app_pid, app_ports(run.spec))
            self.dirty |= run.app_listening

    def _exited(self, proc: Proc, status: int | None, now: float, what: str) -> None:
        """Count an exit and choose when to start again: at once, unless it keeps exiting
        within STABLE_S of its start (then 0.25 s, doubling, up to MAX_BACKOFF_S)."""
        proc.last_exit = status
        proc.popen = None
        quick = now - proc.started_at < STABLE_S
        proc.quick_exits = proc.quick_exits + 1 if quick else 0
        backoff = 0.0 if proc.quick_exits <= 1 else 0.25 * 2 ** (proc.quick_exits - 2)
        proc.next_start = now + min(MAX_BACKOFF_S, backoff)
        proc.restarts += 1
        log.warning(
            "%s exited (status %s): restarting%s",
            what,
            "unknown" if status is None else status,
            f" in {proc.next_start - now:.2f}s" if proc.next_start > now else "",
        )
        self.dirty = True

    # -- the registry --------------------------------------------------------------------

    def _tend_registry(self, now: float) -> None:
        """Restart a registry that died, like an app or a proxy. The one `up` started is not
        our child: it is watched by its pid (its exit status is unknown)."""
        plan, proc = self.plan, self.registry
        if (self.home / JOINED).exists():
            return  # the mesh's registry runs on another host (meshctl.launch.join)
        if plan is None or self.stopping:
            return
        if proc.popen is not None:
            if proc.popen.poll() is None:
                return
            self._exited(proc, proc.popen.returncode, now, "the registry")
            self.registry_down_at = time.time()
        pid = read_pid(self.paths.pid_file("registry"))
        if pid is not None and pid_alive(pid):
            if pid != self.registry_pid:  # the one `up` started (at first, or again)
                self.registry_pid, proc.started_at = pid, now
                self.registry_down_at = None
                self.dirty = True
            return
        if self.registry_down_at is None:
            if self.registry_pid is None and now - self.started < 10:
                return  # `up` writes the pid file as it starts the registry: not yet
            self._exited(proc, None, now, "the registry")
            self.registry_down_at = time.time()
        if now < proc.next_start:
            return
        try:
            proc.popen = start_registry(self.paths, plan)
        except OSError as exc:
            log.error("starting the registry: %s", exc)
            proc.next_start = now + 1.0
            return
        proc.started_at, proc.started_wall = now, time.time()
        self.registry_pid, self.registry_down_at = proc.popen.pid, None
        self._client = None  # ask the new one for tokens
        self.dirty = True

    def _check_interception(self, run: Run, plan: Plan) -> None:
        from proxy.intercept import iptables

        if run.spec.container:
            if not pid_alive(run.spec.pid):
                return  # the container stopped: its event removes the workload
        elif not (iptables.NETNS_RUN_DIR / str(run.spec.netns)).exists():
            self._prepare(run, recreate=True)
            return
        where: str | int = run.spec.pid if run.spec.container else str(run.spec.netns)
        try:
            if not iptables.installed(where):
                iptables.install(intercept_config(run.spec, plan), where)
                run.intercept_reinstalls += 1
                log.warning("interception rules of %s were missing: re-installed", run.spec.name)
                self.dirty = True
        except Exception as exc:
            run.error = f"checking interception in {run.spec.netns or run.spec.name}: {exc}"
            self.dirty = True

    def _start(self, run: Run, proc: Proc, now: float) -> None:
        spec = run.spec
        try:
            if spec.container and not pid_alive(spec.pid):
                raise RuntimeError(f"container {spec.name} is not running")
            if spec.netns is not None and not (Path("/run/netns") / spec.netns).exists():
                self._prepare(run, recreate=True)
                if run.error:
                    raise RuntimeError(run.error)
            argv, env, cwd = (
                self._proxy_command(spec) if proc.role == "proxy" else self._app_command(spec)
            )
            proc.popen = spawn(
                argv, log=self.paths.log(f"{spec.name}.{proc.role}"), env=env, cwd=cwd
            )
            proc.started_at = now
            proc.started_wall = time.time()
            if run.error and run.error.startswith(f"starting {proc.role}"):
                run.error = None
        except (RegistryUnavailable, RegistryError) as exc:
            # Usually the registry is still starting (up starts both at once): ask again soon.
            if now - self.started > 10:
                run.error = f"starting {proc.role} of {spec.name}: {exc}"
            proc.next_start = now + 0.1
        except Exception as exc:
            run.error = f"starting {proc.role} of {spec.name}: {exc}"
            proc.next_start = now + 1.0
            log.error("%s", run.error)
        self.dirty = True

    def _client_for_tokens(self) -> RegistryClient:
        if self._client is None:
            self._client = RegistryClient.from_home(self.home)
        return self._client

    def _proxy_command(self, spec: Workload) -> tuple[list[str], dict[str, str], str]:
        """Mint a token, lay out the proxy's directory, and say how to run it. A joined host
        mints nothing: its proxies join with the service's line of `up --join FILE`."""
        joined = (self.home / JOINED).exists()
        try:
            token = token_for(self.home, spec.service) if joined else self._client_for_tokens(
                ).call("POST", "/v1/tokens", {"service": spec.service, "ttl_s": 300},
                       timeout=5)["token"]  # fmt: skip
        except (RegistryUnavailable, RegistryError):
            self._client = None  # the registry may have moved (restarted): read it again
            raise
        pdir = ensure_dir(self.paths.proxies / spec.name)
        ca = pdir / "ca.crt"
        ca_source = self.home / JOINED_DIR / "ca.crt" if joined else (
            self.home / "registry" / "ca" / "ca.crt")
        shutil.copyfile(ca_source, ca)
        os.chmod(ca, 0o644)
        token_file = pdir / "join.token"
        atomic_write(token_file, token + "\n", mode=0o600)
        py = [sys.executable, "-m", "proxy", *spec.proxy_args[1:]]
        py += ["--token-file", str(token_file), "--ca-file", str(ca)]
        env = marked_env(self.home, {"MESH_LOG": os.environ.get("MESH_LOG", "INFO")})
        if spec.netns is None and not spec.container:
            return py, env, "/"
        # The proxy's own uid: the rules let its traffic out unredirected.
        for path in (pdir, *pdir.rglob("*")):
            os.chown(path, PROXY_UID, PROXY_UID)
        drop = drop_to(PROXY_UID, PROXY_UID)
        if spec.container:  # only the network namespace: the proxy runs from the host's files
            enter = ["nsenter", f"--net=/proc/{spec.pid}/ns/net", "--"]
        else:
            enter = ["ip", "netns", "exec", str(spec.netns)]
        return [*enter, *drop, *py], env, "/"

    def _app_command(self, spec: Workload) -> tuple[list[str], dict[str, str], str]:
        env = marked_env(self.home, dict(spec.app_env))
        argv = list(spec.app_argv)
        if spec.run_as is not None:  # after `ip netns exec`, which needs root
            uid, gid = spec.run_as
            env.update(users.session_env(uid, dict(spec.app_env)))
            argv = [*drop_to(uid, gid, no_new_privs=True), *argv]
        if spec.netns is not None:
            argv = ["ip", "netns", "exec", spec.netns, *argv]
        return argv, env, spec.cwd

    # -- stopping ------------------------------------------------------------------------

    def _stop_processes(self, run: Run) -> None:
        popens = [p.popen for p in (run.app, run.proxy) if p.popen is not None]
        for p in popens:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        # A proxy whose container is gone has no network left to drain or deregister on.
        gone = bool(run.spec.container) and not pid_alive(run.spec.pid)
        deadline = time.monotonic() + (0.5 if gone else 5.0)
        for p in popens:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        run.app.popen = run.proxy.popen = None

    def _release(self, spec: Workload) -> None:
        """After its processes stopped: a namespace goes; a container keeps running unmeshed."""
        if not spec.container:
            self._delete_namespace(spec)
            return
        from proxy.intercept import iptables

        with contextlib.suppress(RegistryUnavailable, RegistryError):
            self._client_for_tokens().call("DELETE", f"/v1/endpoints/{spec.name}", timeout=5)
        if pid_alive(spec.pid):
            try:
                iptables.remove(spec.pid)
            except Exception as exc:
                log.error("could not remove the rules of container %s: %s", spec.name, exc)

    def _delete_namespace(self, spec: Workload) -> None:
        if spec.netns is None:
            return
        from meshctl.launch import netns

        try:
            netns.delete_host(spec.netns)
        except Exception as exc:
            log.error("could not delete namespace %s: %s", spec.netns, exc)

    # -- state ---------------------------------------------------------------------------

    def _write_state(self, stopped: bool = False) -> None:
        write_json(
            self.paths.state,
            {
                "supervisor_pid": None if stopped else os.getpid(),
                "generation": self.generation,
                "updated_at": time.time(),
                "plan": planmod.to_wire(self.plan) if self.plan else None,
                "workloads": {name: run.to_wire() for name, run in self.runs.items()},
                "registry": {
                    "pid": self.registry_pid,
                    "restarts": self.registry.restarts,
                    "last_exit": self.registry.last_exit,
                    "down_at": self.registry_down_at,
                    "next_start_wall": (
                        time.time() + max(0.0, self.registry.next_start - time.monotonic())
                        if self.registry_down_at is not None
                        else None
                    ),
                },
            },
        )
        self.dirty = False


def start_registry(paths: LaunchPaths, plan: Plan) -> subprocess.Popen[bytes]:
    """`meshctl registry` for this plan, detached, its pid in logs/registry.pid."""
    # mesh.yaml's registry.address, when it is this host's: other hosts reach the registry
    # there, so it listens on every address and that one comes first in join strings.
    listen, sans = plan.registry_listen, [plan.registry_listen]
    if plan.registry_address:
        listen, sans = "0.0.0.0", [plan.registry_address, plan.registry_listen]
    argv = [sys.executable, "-m", "meshctl", "registry", "--config", plan.config_dir,
            "--listen", listen, "--port", str(plan.registry_port),
            "--monitor-port", str(plan.monitor_port)]  # fmt: skip
    for san in sans:
        argv += ["--san", san]
    proc = spawn(argv, log=paths.log("registry"), env=marked_env(paths.home), cwd="/")
    atomic_write(paths.pid_file("registry"), f"{proc.pid}\n", mode=0o644)
    return proc


def app_ports(spec: Workload) -> set[int]:
    """The ports the app itself listens on: its service ports, or explicit mode's (a
    gateway's: its servers' ports)."""
    if spec.netns is not None or spec.container or spec.is_gateway:
        return set(spec.inbound_ports)
    return {port for role, port in spec.ports if role.startswith("app:")}


def listening(pid: int, ports: set[int]) -> bool:
    """Whether every port in `ports` has a TCP listener in the network namespace of `pid`.

    /proc/PID/net/tcp shows the sockets of that process's namespace, so this works for an
    app inside a namespace without entering it.
    """
    found: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                found.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports <= found


def intercept_config(spec: Workload, plan: Plan) -> Any:
    """The interception rules of one workload: every port inbound (Istio's "*") but the
    defaults and its mesh.yaml `excludeInboundPorts`, IPv4 and IPv6; the registry excluded."""
    from proxy.intercept.rules import EXCLUDE_INBOUND_DEFAULT, InterceptConfig

    return InterceptConfig(
        proxy_uid=PROXY_UID,
        proxy_gid=PROXY_UID,
        exclude_inbound_ports=(*EXCLUDE_INBOUND_DEFAULT, *spec.exclude_inbound_ports),
        exclude_outbound_cidrs=(f"{plan.registry_listen}/32",)
        if plan.mode == TRANSPARENT and _ipv4(plan.registry_listen) else (),
        # Mesh names answered by the proxy (proxy/dns) in our namespaces; a container keeps
        # Docker's resolver (its DNAT to 127.0.0.11 comes first anyway).
        dns_port=None if spec.container else DNS_PORT,
        published_ports=tuple(port for port, _ in spec.published),
        published_sources=(f"{spec.published_from}/32",) if spec.published else (),
        published_port=PUBLISHED_PORT,
        published_open_ports=spec.published_open_ports() if spec.published_net else (),
        published_local_net=spec.published_net,
    )


def _ipv4(text: str) -> bool:
    """A joined host's registry may be named by a DNS name (its join URL): no CIDR then
    (the proxy's own traffic is let out by its uid anyway)."""
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def record_owned(paths: LaunchPaths, *, namespace: str = "", bridge: str = "") -> None:
    """Note a namespace or bridge before making it, so `down` finds it whatever happens."""
    owned = read_json(paths.owned) or {}
    for key, value in (("namespaces", namespace), ("bridges", bridge)):
        items = list(owned.get(key, []))
        if value and value not in items:
            items.append(value)
        owned[key] = items
    write_json(paths.owned, owned)


def running_pid(paths: LaunchPaths) -> int | None:
    """The supervisor's pid, when one runs for this home."""
    pid = read_pid(paths.pid_file("supervisor"))
    return pid if pid is not None and pid_alive(pid) else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="meshctl's local supervisor (started by up)")
    parser.add_argument("--home", required=True, type=Path, help="MESH_HOME")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    Supervisor(args.home).run()


if __name__ == "__main__":
    main()
