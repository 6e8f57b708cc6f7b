"""The local runtime: `meshctl up`, `down` and `status` for workloads run as local processes.

`up` validates the config, chooses the mode (transparent: network namespaces on a bridge
and iptables, as root; explicit: 127.0.0.1 ports, without privileges), writes the plan
(meshctl.launch.plan), starts the registry and the supervisor (meshctl.launch.supervisor)
in the background, and waits until every proxy has joined, registered its endpoint and
ACKed the registry's current config version. `down` removes everything, working from the
files under MESH_HOME and a scan for the processes, namespaces and bridge they name.

Every failure a user can meet is a LaunchError whose message is one line: what is wrong
and what to do. A first `up` that fails leaves nothing running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.state import ensure_dir
from meshctl.client import RegistryClient, RegistryError, RegistryUnavailable
from meshctl.launch import plan as planmod
from meshctl.launch.plan import DOCKER, EXPLICIT, LOCAL, PROXY_UID, TRANSPARENT, Network, Plan
from meshctl.launch.procs import (
    LaunchError,
    LaunchPaths,
    log_tail,
    marked_env,
    read_json,
    running_registry,
    spawn,
    stop_pids,
    write_json,
)
from meshctl.launch.supervisor import record_owned, running_pid, start_registry
from registry.config import MeshConfig, load_directory
from registry.paths import DEFAULT_MONITOR_PORT, DEFAULT_PORT

SUBNET_POOL = "10.250.0.0/16"
REGISTRY_START_S = 20.0


class ConfigInvalid(LaunchError):
    """The config directory does not validate; `errors` are `file:line:column: ...` lines."""

    def __init__(self, directory: Path, errors: list[str]) -> None:
        super().__init__(
            f"the config in {directory} is invalid ({len(errors)} error(s)): fix them and "
            "run `meshctl up` again (nothing was started)"
        )
        self.errors = errors


@dataclass(frozen=True, slots=True)
class UpOptions:
    path: Path
    runtime: str = "auto"  # local | docker | auto
    timeout: float = 60.0
    prefix: str = ""
    force_explicit: bool = False
    registry_port: int = DEFAULT_PORT
    monitor_port: int = DEFAULT_MONITOR_PORT
    project: str = ""  # docker runtime: the compose project name (default: as Compose does)
    join: Path | None = None  # join strings: join another host's mesh (meshctl.launch.join)


@dataclass(frozen=True, slots=True)
class WorkloadStatus:
    name: str
    phase: str  # starting | joining | ready | error
    detail: str = ""


@dataclass
class UpResult:
    mode: str
    note: str | None
    config_dir: str
    registry_url: str
    plan: Plan
    elapsed_s: float
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # containers not in the mesh

    def to_wire(self) -> dict[str, Any]:
        return {
            "runtime": self.plan.runtime,
            "project": self.plan.docker.project if self.plan.docker else None,
            "skipped": self.skipped,
            "mode": self.mode,
            "note": self.note,
            "config_dir": self.config_dir,
            "registry": self.registry_url,
            "elapsed_s": round(self.elapsed_s, 3),
            "started": self.started,
            "stopped": self.stopped,
            "restarted": self.restarted,
            "network": (
                {"bridge": self.plan.network.bridge, "subnet": self.plan.network.subnet}
                if self.plan.network
                else None
            ),
            "workloads": [
                {
                    "name": w.name,
                    "service": w.service,
                    "version": w.version,
                    "address": w.address,
                    "netns": w.netns,
                    "container": w.container or None,
                    "ports": dict(w.ports),
                    # docker: published service ports, served as ingress (docs/docker.md)
                    "published": [{"port": port, "host": host} for port, host in w.published],
                }
                for w in self.plan.workloads
            ],
            # the gateway proxies `up` runs on this host, and the URLs they serve
            "gateways": [
                {
                    "name": g.name,
                    "service": g.service,
                    "address": g.address,
                    "urls": list(g.urls),
                    "ports": dict(g.ports),
                }
                for g in self.plan.gateways
            ],
        }


Progress = Callable[[list[WorkloadStatus]], None]

# --- choosing what to run -------------------------------------------------------------------


def config_dir_for(path: Path) -> Path:
    """A config dir, a dir holding `mesh/`, or a compose file (its sibling `mesh/`)."""
    if path.is_file():
        candidate = path.parent / "mesh"
        if (candidate / "mesh.yaml").is_file():
            return candidate.resolve()
        raise LaunchError(
            f"{path} is a file but there is no mesh config beside it ({candidate}/mesh.yaml): "
            "create one (see docs/config.md) or pass a config directory"
        )
    if (path / "mesh.yaml").is_file():
        return path.resolve()
    if (path / "mesh" / "mesh.yaml").is_file():
        return (path / "mesh").resolve()
    raise LaunchError(
        f"no mesh.yaml in {path}: pass a config directory (with mesh.yaml), a directory "
        "holding `mesh/`, or a docker-compose file with `mesh/` beside it"
    )


def docker_available() -> bool:
    """A Docker engine answers on its socket (DOCKER_HOST or /var/run/docker.sock)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine: assume it is meant to be used
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1.0)
        try:
            s.connect(host.removeprefix("unix://"))
        except OSError:
            return False
    return True


def choose_runtime(runtime: str, path: Path | None = None) -> str:
    """auto: docker when an engine answers and PATH is (or holds) a compose file; else local."""
    if runtime not in ("local", "docker", "auto"):
        raise LaunchError(f"--runtime {runtime!r}: choose local, docker or auto")
    if runtime == "auto":
        from meshctl.launch.docker import compose_file_for

        has_compose = path is not None and compose_file_for(path) is not None
        runtime = DOCKER if has_compose and docker_available() else LOCAL
    return runtime


def _docker_mode() -> tuple[str, str | None]:
    """The docker runtime intercepts inside containers: root and the tools, or an error."""
    if choose_mode(False)[0] != TRANSPARENT:
        raise LaunchError(
            "the docker runtime needs root with iptables, nsenter and setpriv (it installs "
            "rules in each container's network namespace and runs the proxy there): run "
            "`sudo meshctl up`, or `meshctl up --runtime local` (nothing was started)"
        )
    return TRANSPARENT, None


def choose_mode(force_explicit: bool) -> tuple[str, str | None]:
    """Transparent as root with iptables; otherwise explicit, with a note saying why."""
    if force_explicit:
        return EXPLICIT, "explicit mode (MESH_FORCE_EXPLICIT is set): apps call 127.0.0.1 ports"
    from proxy.intercept.iptables import PrivilegeError, check_privileges

    try:
        check_privileges(enter_namespace=True)
    except PrivilegeError:
        return EXPLICIT, (
            "not root: running in explicit mode on 127.0.0.1 (apps are told their "
            "upstreams' ports); run as root (sudo meshctl up) for namespaces and "
            "transparent interception"
        )
    missing = [
        t
        for t in ("ip", "iptables", "iptables-restore", "nsenter", "setpriv")
        if shutil.which(t) is None
    ]
    if missing:
        return EXPLICIT, (
            f"{', '.join(missing)} not found: running in explicit mode on 127.0.0.1; install "
            "iproute2, iptables and util-linux for transparent interception"
        )
    return TRANSPARENT, None


def _app_users(config: MeshConfig, directory: Path, mode: str) -> dict[tuple[str, str], Any]:
    """Each workload's app user (transparent mode); mesh.yaml errors as ConfigInvalid."""
    from meshctl.launch import users

    if mode != TRANSPARENT:
        errors = users.explicit_mode_errors(config)
        if errors:
            raise ConfigInvalid(directory, errors)
        return {}
    found, errors = users.app_users(config)
    if errors:
        raise ConfigInvalid(directory, errors)
    return {key: (u.uid, u.gid) for key, u in found.items()}


def _check_app_dirs(plan: Plan) -> None:
    """Every app's user can enter its working directory (a 0700 home or tmp dir cannot)."""
    from meshctl.launch import users

    checks = {
        (w.run_as, w.cwd, path, w.app_argv[0]): w.name
        for w in plan.workloads
        if w.run_as and w.app_argv
        for path in [users.session_env(w.run_as[0], dict(w.app_env))["PATH"]]
    }
    problems = users.unreachable((name, *key) for key, name in checks.items())
    if problems:
        raise LaunchError(problems[0])


def load_config(directory: Path) -> MeshConfig:
    result = load_directory(directory)
    if result.config is None or result.errors:
        raise ConfigInvalid(directory, [str(e) for e in result.errors] or ["no config"])
    return result.config


_RNG = random.SystemRandom()
# Ports this process handed out: free_port answers "free now", not "reserved", and a caller
# binds later, so two answers in a row must differ (a test's proxy once got its app's port
# back at random, 1 in ~20,000 per pair, and died with EADDRINUSE in CI).
_GIVEN: set[int] = set()


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands out to outgoing connections (ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A free port for a listener, below the ephemeral range: a port from bind(0) is one
    the kernel may give to any outgoing connection before our proxy binds it (seen as
    EADDRINUSE at start in CI), a port below the range only to an explicit bind."""
    floor = _ephemeral_floor()
    if floor > 11000:
        if len(_GIVEN) > (floor - 10000) // 2:
            _GIVEN.clear()
        for _ in range(200):
            port = _RNG.randrange(10000, floor)
            if port in _GIVEN:
                continue
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                _GIVEN.add(port)
                return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def distinct_ports(taken: Iterable[int] = ()) -> Callable[[], int]:
    """An allocator of free ports that never hands out the same port twice, nor one in
    `taken`: a plan binds all of them later, so free_port's answers (free now, not
    reserved) could repeat among a plan's ~60 allocations in explicit mode, and a second
    replica's proxy then died with EADDRINUSE."""
    given = set(taken)

    def alloc() -> int:
        for _ in range(1000):
            port = free_port()
            if port not in given:
                given.add(port)
                return port
        raise LaunchError("no free port left below the ephemeral range for explicit mode")

    return alloc


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


# --- preflight for transparent mode -----------------------------------------------------------


def _check_home_reachable(home: Path) -> None:
    """Proxies run as uid 1337 and read their files under MESH_HOME/proxies."""
    resolved = home.resolve()
    for parent in reversed(resolved.parents):
        if not os.stat(parent).st_mode & 0o001:
            raise LaunchError(
                f"proxies run as uid {PROXY_UID} and cannot reach MESH_HOME={home}: {parent} "
                f"is not searchable by others; chmod o+x {parent}, or use a MESH_HOME "
                "elsewhere (the default is /var/lib/meshctl)"
            )
    # Root and the proxies' group only (traverse): apps, which run as other users, cannot
    # enter MESH_HOME at all; registry/ (the CA key), logs/ and launch/ stay root's 0700.
    for path in (home, home / "proxies"):
        ensure_dir(path, 0o710)
        os.chown(path, 0, PROXY_UID)


def _probe_proxy_python() -> subprocess.Popen[bytes]:
    """Can uid 1337 run this Python and import the proxy? (A venv under /root cannot.)"""
    drop = ["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups"]
    return subprocess.Popen(
        [*drop, sys.executable, "-c", "import proxy.main"],
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _probe_result(probe: subprocess.Popen[bytes]) -> None:
    _, err = probe.communicate(timeout=30)
    if probe.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        if "Permission denied" not in last[0] and "No module named" not in last[0]:
            raise LaunchError(
                f"the proxy cannot start: `{sys.executable} -c 'import proxy.main'` fails "
                f"({last[0]}); fix the installation and run `meshctl up` again"
            )
        raise LaunchError(
            f"proxies run as uid {PROXY_UID}, which cannot run {sys.executable} with meshctl "
            f"({last[0]}): install meshctl where every user can read it (e.g. "
            "`pip install` into /opt or /usr/local), or make its directories readable"
        )


def _network(previous: Plan | None, prefix: str) -> Network:
    """Keep the bridge and subnet of a running mesh; otherwise a free subnet."""
    from meshctl.launch import netns

    if previous is not None and previous.network is not None:
        with contextlib.suppress(Exception):
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                if ipr.link_lookup(ifname=previous.network.bridge):
                    return previous.network
    bridge = planmod.bridge_name(prefix)
    try:
        subnet = netns.free_subnet(SUBNET_POOL)
    except netns.NetnsError as exc:
        raise LaunchError(f"{exc}") from None
    return Network(bridge, str(subnet))


def _ensure_bridge(paths: LaunchPaths, network: Network) -> bool:
    """Create the bridge unless it exists; True when this call made it."""
    from pyroute2 import IPRoute

    from meshctl.launch import netns

    with IPRoute() as ipr:
        if ipr.link_lookup(ifname=network.bridge):
            return False
    record_owned(paths, bridge=network.bridge)
    try:
        netns.create_bridge(network.bridge, f"{network.gateway}/{network.prefixlen}")
    except netns.NetnsError as exc:
        raise LaunchError(f"cannot create bridge {network.bridge}: {exc}") from None
    return True


# --- the registry ----------------------------------------------------------------------------


def _registry_ready(paths: LaunchPaths, plan: Plan, proc: subprocess.Popen[bytes]) -> None:
    """Wait until the registry we started answers on its monitor port."""
    log = paths.log("registry")
    monitor = f"http://127.0.0.1:{plan.monitor_port}/healthz/ready"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + REGISTRY_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LaunchError(
                f"the registry exited at start ({log_tail(log) or 'no output'}); see {log}"
            )
        ep = read_json(paths.home / "registry" / "endpoint.json")
        if ep and ep.get("pid") == proc.pid:
            with contextlib.suppress(OSError), opener.open(monitor, timeout=1) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.05)
    stop_pids([proc.pid])
    raise LaunchError(f"the registry did not answer within {REGISTRY_START_S:.0f}s; see {log}")


def _restarted_registry(home: Path) -> dict[str, Any] | None:
    """A supervisor runs but the registry does not: it is restarting it (with backoff);
    wait for that one rather than start a second that would race it for the ports."""
    deadline = time.monotonic() + REGISTRY_START_S
    while time.monotonic() < deadline:
        registry = running_registry(home)
        if registry is not None:
            return registry
        time.sleep(0.1)
    return None


def _registry_answers(home: Path, endpoint: dict[str, Any] | None) -> None:
    """A registry that runs must answer before anything is asked of it."""
    try:
        RegistryClient.from_home(home).call("GET", "/v1/status", timeout=5)
    except (RegistryUnavailable, RegistryError) as exc:
        pid = endpoint.get("pid") if endpoint else "?"
        raise LaunchError(
            f"the registry (pid {pid}) does not answer ({exc}); see "
            f"{LaunchPaths(home).log('registry')}, then `meshctl down` and `meshctl up` again"
        ) from None


# --- up ----------------------------------------------------------------------------------------


def _previous(paths: LaunchPaths) -> tuple[Plan | None, int]:
    raw = read_json(paths.plan)
    if raw is None:
        return None, 0
    return planmod.from_wire(raw["plan"]), int(raw.get("generation", 0))


def up(opts: UpOptions, progress: Progress | None = None) -> UpResult:
    """Start or update the local mesh for `opts.path`; see the module docstring."""
    t0 = time.monotonic()
    runtime = choose_runtime(opts.runtime, opts.path)
    config_dir = config_dir_for(opts.path)
    config = load_config(config_dir)
    from common.state import mesh_home

    home = mesh_home()
    paths = LaunchPaths(home)
    compose = None
    if runtime == DOCKER:
        from meshctl.launch import docker as dockermod

        _, compose = dockermod.load_target(config, opts.path)  # a bad file: nothing runs yet
        dockermod.docker_client()  # the engine answers, or a one-line error
        mode, note = _docker_mode()
    else:
        mode, note = choose_mode(opts.force_explicit)
    registry = running_registry(home)
    supervisor = running_pid(paths)
    target, reg_address = _join_target(opts, config, home, runtime,
                                       registry is not None, supervisor)  # fmt: skip
    if registry is None and supervisor is not None and target is None:
        registry = _restarted_registry(home)  # not a second one beside the supervisor's
    previous, generation = _previous(paths)
    if registry and Path(str(registry.get("config_dir"))) != config_dir:
        raise LaunchError(
            f"a mesh for {registry.get('config_dir')} already runs with MESH_HOME={home}: "
            "run `meshctl down` first, or set MESH_HOME to another directory"
        )
    running = registry is not None or supervisor is not None
    if running and previous is not None and previous.runtime != runtime:
        raise LaunchError(
            f"the running mesh uses the {previous.runtime} runtime, this `up` would use "
            f"{runtime}: run `meshctl down` first, or pass --runtime {previous.runtime}"
        )
    if running and previous is not None and previous.mode != mode:
        raise LaunchError(
            f"the running mesh is in {previous.mode} mode, this `up` would use {mode}: "
            "run `meshctl down` first"
        )
    if running and previous is not None and previous.prefix != opts.prefix:
        raise LaunchError(
            f"the running mesh names its namespaces with prefix {previous.prefix!r}, not "
            f"{opts.prefix!r}: run `meshctl down` first"
        )
    if not running:
        previous = None
    try:
        planmod.check_prefix(opts.prefix)
    except planmod.PlanError as exc:
        raise LaunchError(str(exc)) from None
    ensure_dir(home)
    ensure_dir(paths.logs)
    ensure_dir(paths.plan.parent)
    probe = None
    network = None
    if mode == TRANSPARENT:
        _check_home_reachable(home)
        probe = _probe_proxy_python()
        if runtime == LOCAL:
            network = _network(previous, opts.prefix)
    reg_port = previous.registry_port if previous and registry else opts.registry_port
    mon_port = previous.monitor_port if previous and registry else opts.monitor_port
    if reg_address and not (previous and registry) and config.registry_port != DEFAULT_PORT:
        reg_port = config.registry_port  # mesh.yaml's registry.port goes with its address
    if registry is None and target is None:
        # Binding the wildcard address fails if any address has the port: one check covers
        # 127.0.0.1 and the bridge's address (which may not exist yet).
        for port, flag in ((reg_port, "--registry-port"), (mon_port, "--monitor-port")):
            if _port_taken("0.0.0.0", port):
                raise LaunchError(
                    f"port {port} is already in use (another registry or program): stop it, "
                    f"or pass {flag} PORT"
                )
    new: Plan | None = None
    if runtime == LOCAL:
        app_users = _app_users(config, config_dir, mode)
        try:
            new = planmod.build_plan(
                config,
                mode=mode,
                config_dir=str(config_dir),
                registry_port=reg_port,
                monitor_port=mon_port,
                network=network,
                prefix=opts.prefix,
                previous=previous,
                alloc_port=distinct_ports([
                    reg_port, mon_port,
                    *(p for w in (previous.members if previous else ()) for _, p in w.ports),
                ]),
                users=app_users,
                registry_url=target.url if target else None,
            )
            new = dataclasses.replace(new, registry_address=reg_address)
        except planmod.PlanError as exc:
            raise LaunchError(str(exc)) from None
    skipped: tuple[str, ...] = ()
    try:
        if probe is not None:
            _probe_result(probe)
        if new is not None:
            _check_app_dirs(new)
        if new is None:  # docker: may start the compose project, so inside the clean-up
            listen = previous.registry_listen if previous and registry else None
            new, skipped = _docker_plan(opts, config, compose, config_dir, paths, previous,
                                        listen, reg_port, mon_port)  # fmt: skip
        start, stop, restart = planmod.changed(previous, new)
        if network is not None:
            _ensure_bridge(paths, network)
        generation += 1
        write_json(paths.plan, {"generation": generation, "plan": planmod.to_wire(new)})
        # The registry and the supervisor start side by side: namespaces and interception
        # are set up while the registry loads; the supervisor mints tokens once it answers.
        started = start_registry(paths, new) if registry is None and target is None else None
        if supervisor is None:
            argv = [sys.executable, "-m", "meshctl.launch.supervisor", "--home", str(home)]
            spawn(argv, log=paths.log("supervisor"), env=marked_env(home), cwd="/")
        else:
            os.kill(supervisor, 1)  # SIGHUP: read the plan again
        if started is not None:
            _registry_ready(paths, new, started)
        elif target is None:
            _registry_answers(home, registry)
        wait_ready(home, new, generation, opts.timeout, progress)
    except BaseException as exc:
        if not running:  # a first `up` that fails leaves nothing behind
            from meshctl.launch.teardown import teardown

            teardown(home)  # a joined host's record goes too (meshctl.launch.join.forget)
            if isinstance(exc, LaunchError):
                raise LaunchError(f"{exc} (nothing was left running)") from None
        raise
    return UpResult(
        mode=mode,
        note=note,
        config_dir=str(config_dir),
        registry_url=new.registry_url,
        plan=new,
        elapsed_s=time.monotonic() - t0,
        started=start,
        stopped=stop,
        restarted=restart,
        skipped=list(skipped),
    )


def _join_target(opts: UpOptions, config: MeshConfig, home: Path, runtime: str,
                 registry_here: bool, supervisor: int | None) -> tuple[Any, str]:
    """(the mesh this host joins or None, mesh.yaml's registry.address if it is this host's).

    mesh.yaml's `registry.address` says where the mesh's registry lives: loopback (the
    default) or an address of this host starts it here (listening there too, for other
    hosts); any other address means it runs elsewhere, and `up` refuses to start a second
    registry with a second CA: join it with --join."""
    from meshctl.launch import join as joinmod

    address = config.registry_address
    here = joinmod.local_or_loopback(address)
    if opts.join is not None:
        if registry_here:
            raise LaunchError(
                f"this MESH_HOME={home} runs the mesh's registry; a joined host runs none: "
                "use another MESH_HOME, or `meshctl down` first (nothing was started)"
            )
        if runtime != LOCAL:
            raise LaunchError("--join: the docker runtime cannot join yet; use --runtime "
                              "local, or `meshctl systemd install proxy` per service")
        workloads = {s.name: sum(w.replicas for w in s.workloads)
                     for s in config.services if s.workloads}  # fmt: skip
        return joinmod.prepare(home, opts.join, workloads, address), ""
    target = joinmod.recorded(home) if supervisor is not None else None
    if target is None and not here:
        raise LaunchError(
            f"mesh.yaml says the mesh's registry is at {address}, which is not this host: "
            f"join it with `meshctl up {opts.path} --join FILE`, FILE made on that host with "
            "`meshctl token create SERVICE... > FILE` (nothing was started; a second "
            "registry would be a second mesh with another CA)"
        )
    loopback = address in ("localhost",) or address.startswith("127.") or address == "::1"
    return target, "" if target is not None or loopback else address


def _docker_plan(
    opts: UpOptions,
    config: MeshConfig,
    compose: Any,  # meshctl.launch.compose.ComposeFile | None
    config_dir: Path,
    paths: LaunchPaths,
    previous: Plan | None,
    listen: str | None,
    reg_port: int,
    mon_port: int,
) -> tuple[Plan, tuple[str, ...]]:
    """The docker runtime's plan: the containers running now (meshctl.launch.docker)."""
    from meshctl.launch import docker as dockermod

    found = dockermod.prepare(
        config,
        compose,
        opts.project,
        paths,
        previous.docker if previous else None,
        listen,
        reg_port,
    )
    address = listen or found.gateway
    url = f"https://{address}:{reg_port}"
    # The Gateways' proxies run on the host, as in the local runtime: the containers'
    # endpoints and the registry (on the network's gateway address) are reachable from it.
    taken = [reg_port, mon_port, *(p for g in (previous.gateways if previous else ())
                                   for _, p in g.ports)]  # fmt: skip
    try:
        gateways = planmod.gateway_members(
            config, prefix=opts.prefix, config_dir=str(config_dir), registry_url=url,
            previous=previous, alloc_port=distinct_ports(taken))  # fmt: skip
    except planmod.PlanError as exc:
        raise LaunchError(str(exc)) from None
    plan = Plan(
        mode=TRANSPARENT,
        prefix=opts.prefix,
        config_dir=str(config_dir),
        registry_url=url,
        registry_listen=address,
        registry_port=reg_port,
        monitor_port=mon_port,
        network=None,
        workloads=found.workloads,
        runtime=DOCKER,
        docker=found.target,
        gateways=gateways,
    )
    return plan, found.skipped


def workload_phases(
    plan: Plan, generation: int, state: dict[str, Any] | None, status: dict[str, Any] | None
) -> list[WorkloadStatus]:
    """Where each workload is on its way to ready (pure: from state.json and /v1/status)."""
    applied = state is not None and int(state.get("generation", -1)) >= generation
    workloads = state.get("workloads", {}) if state else {}
    version = status.get("config_version") if status else None
    proxies = {p["proxy_id"]: p for p in status.get("proxies", [])} if status else {}
    endpoints = {e["id"]: e for e in status.get("endpoints", [])} if status else {}
    out = []
    for w in plan.members:
        actual = workloads.get(w.name) if applied else None
        if actual is None:
            out.append(WorkloadStatus(w.name, "starting", "waiting for the supervisor"))
            continue
        if actual.get("error"):
            out.append(WorkloadStatus(w.name, "error", str(actual["error"])))
            continue
        if not actual.get("proxy_pid") or not (w.is_gateway or actual.get("app_pid")):
            out.append(WorkloadStatus(w.name, "starting", "starting processes"))
            continue
        p = proxies.get(w.name)
        ep = endpoints.get(w.name)
        started = float(actual.get("proxy_started_wall") or 0)
        if p is None or not p.get("connected"):
            out.append(WorkloadStatus(w.name, "joining", "proxy joining the registry"))
        elif p.get("acked_version") != version:
            out.append(WorkloadStatus(w.name, "joining", f"config v{p.get('acked_version')}"))
        elif w.is_gateway:  # no endpoint: its servers' ports open once its config is in
            ok = actual.get("app_listening")
            out.append(WorkloadStatus(w.name, "ready" if ok else "starting",
                                      f"config v{version}" if ok else "ports not open yet"))
        elif ep is None or float(ep.get("last_seen") or 0) < started - 1.0:
            # last_seen, not registered_at: a proxy restarted under the same id keeps its
            # endpoint's registered_at; its first registration refreshes last_seen.
            out.append(WorkloadStatus(w.name, "joining", "registering its endpoint"))
        elif not actual.get("app_listening"):
            out.append(WorkloadStatus(w.name, "starting", "app not listening yet"))
        else:
            out.append(WorkloadStatus(w.name, "ready", f"config v{version}"))
    return out


def wait_ready(
    home: Path, plan: Plan, generation: int, timeout: float, progress: Progress | None
) -> None:
    paths = LaunchPaths(home)
    deadline = time.monotonic() + timeout
    client: RegistryClient | None = None
    while True:
        state = read_json(paths.state)
        status = None
        try:
            client = client or RegistryClient.resolve(home)
            status = client.call("GET", "/v1/status", timeout=2)
        except (RegistryUnavailable, RegistryError):
            client = None
        phases = workload_phases(plan, generation, state, status)
        if progress:
            progress(phases)
        if all(p.phase == "ready" for p in phases):
            return
        if running_pid(paths) is None and time.monotonic() > deadline - timeout + 5:
            raise LaunchError(f"the supervisor is not running; see {paths.log('supervisor')}")
        if time.monotonic() > deadline:
            late = [p for p in phases if p.phase != "ready"]
            first = late[0]
            logs = paths.log(f"{first.name}.proxy")
            raise LaunchError(
                f"{len(late)} workload(s) not ready after {timeout:.0f}s, first {first.name} "
                f"({first.phase}: {first.detail}; {log_tail(logs) or 'no proxy output'}); "
                f"logs in {paths.logs}"
            )
        time.sleep(0.1)
