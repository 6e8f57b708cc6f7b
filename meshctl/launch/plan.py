"""What the local launcher runs for a config: pure, config in, a Plan out (no I/O).

A Plan lists one Workload per (service, workload, replica) of mesh.yaml: its network
namespace and address (transparent mode) or its 127.0.0.1 ports (explicit mode), the app's
command line and environment, and the `meshctl proxy` arguments of its sidecar. Beside
them, one gateway member per gateway proxy the config's Istio Gateways select (`istio:
NAME`): a proxy alone (no app, no namespace), run on the host with its servers' ports bound
on 127.0.0.1 (docs/gateway.md). The supervisor (meshctl.launch.supervisor) makes the plan
real; `meshctl up` computes it.

House rules:
  * Stable across runs: a workload already in the previous plan keeps its address and
    ports, so running `up` again changes only what changed in the config.
  * Ports in explicit mode come from an injected allocator (tests pass a counter).
  * Names: `<prefix><service>-<version>`, with `-<n>` (1-based) when replicas > 1; the
    namespace, the proxy id and the log files all carry that name (`ip netns exec orders-v2`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from common.vip import service_vip
from registry.config import MeshConfig
from registry.config.mesh_file import PROXY_UID as PROXY_UID  # the launcher takes it from here
from registry.config.model import Gateway, GatewayServer

TRANSPARENT = "transparent"  # namespaces + iptables REDIRECT (root)
EXPLICIT = "explicit"  # 127.0.0.1, one local listener per upstream (no privileges)
MODES = (TRANSPARENT, EXPLICIT)
SIDECAR = "sidecar"  # a Workload's kind: an app and its sidecar proxy
GATEWAY = "gateway"  # a gateway proxy alone, serving the Gateways that select it
GATEWAY_ADDRESS = "127.0.0.1"  # where `up`'s gateways bind their servers' ports
LOCAL = "local"  # workloads are processes the supervisor starts
DOCKER = "docker"  # workloads are containers someone else starts (meshctl.launch.docker)

OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
ADMIN_PORT = 15000
METRICS_PORT = 15090
DNS_PORT = 15053  # the proxy's DNS listener (`meshctl proxy --dns-port`'s default)
PUBLISHED_PORT = 15007  # docker runtime: published ports' connections, served as ingress
LOCALHOST = "127.0.0.1"
DEFAULT_BRIDGE = "meshbr0"
NAME_MAX = 63  # a network namespace name (meshctl.launch.netns)
_PREFIX = re.compile(r"[a-z0-9][a-z0-9-]{0,11}")


class PlanError(Exception):
    """The config cannot be laid out (too many workloads for the subnet, a bad prefix)."""


@dataclass(frozen=True, slots=True)
class Network:
    """Transparent mode's bridge: the gateway (.1) is also where the registry listens."""

    bridge: str
    subnet: str  # e.g. 10.250.7.0/24

    @property
    def gateway(self) -> str:
        return str(ipaddress.IPv4Network(self.subnet)[1])

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen


@dataclass(frozen=True, slots=True)
class Workload:
    """One process pair: an app and its sidecar proxy (kind SIDECAR); or a gateway proxy
    alone (kind GATEWAY, in Plan.gateways: no app, no namespace, no endpoint)."""

    name: str  # namespace name, proxy id, log file stem
    service: str
    version: str
    replica: int  # 0 when the workload has one replica, else 1..n
    address: str  # what peers dial: the namespace's eth0 address, or 127.0.0.1
    netns: str | None  # transparent mode: the namespace (= name); explicit: None
    app_argv: tuple[str, ...]
    app_env: tuple[tuple[str, str], ...]
    cwd: str
    proxy_args: tuple[str, ...]  # after `meshctl`; the supervisor adds the token and CA
    inbound_ports: tuple[int, ...]  # the service's ports: captured inbound
    ports: tuple[tuple[str, int], ...] = ()  # explicit mode's allocations, by role
    hosts: tuple[tuple[str, str], ...] = ()  # /etc/netns/NAME/hosts: service -> VIP
    container: str = ""  # docker runtime: the container's id (its name is `name`)
    pid: int = 0  # docker runtime: the container's init process, /proc/PID/ns/net
    run_as: tuple[int, int] | None = None  # the app's (uid, gid); None: meshctl's own
    # mesh.yaml `excludeInboundPorts` (Istio's annotation): not captured inbound; every
    # other port is, except the defaults (see proxy.intercept.rules.InterceptConfig).
    exclude_inbound_ports: tuple[int, ...] = ()
    # docker runtime: the container's published service ports (port, "HOST_IP:HOST_PORT"),
    # the address their connections come from (the network's gateway), and the network
    # (clients outside it reach a port bound beyond loopback): docs/docker.md
    published: tuple[tuple[int, str], ...] = ()
    published_from: str = ""
    published_net: str = ""
    kind: str = SIDECAR  # GATEWAY: no app, no namespace; proxy_args serve the Gateways
    urls: tuple[str, ...] = ()  # a gateway's: what clients open, e.g. https://HOST:PORT/

    @property
    def is_gateway(self) -> bool:
        return self.kind == GATEWAY

    def port(self, role: str) -> int | None:
        return dict(self.ports).get(role)

    def published_open_ports(self) -> tuple[int, ...]:
        """Published ports with a binding beyond loopback: reachable from other machines."""
        return tuple(sorted({p for p, host in self.published if not _loopback(host)}))


@dataclass(frozen=True, slots=True)
class DockerTarget:
    """Which containers the docker runtime meshes, and what it needs to mesh a new one.

    `project` set: the containers of that compose project (`compose_file` is where it is
    defined); else every container labelled `mesh.service`. `services` maps a compose
    service to its mesh service and version (labels or x-mesh); `ports` gives each mesh
    service's ports from mesh.yaml, the ones captured inbound.
    """

    project: str = ""
    compose_file: str = ""
    compose_cmd: tuple[str, ...] = ()
    network: str = ""  # the docker network whose gateway the registry listens on
    services: tuple[tuple[str, str, str], ...] = ()  # (compose service, mesh service, version)
    ports: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (mesh service, its ports)
    # (mesh service, version, mesh.yaml excludeInboundPorts) for the versions that set it
    exclude_inbound: tuple[tuple[str, str, tuple[int, ...]], ...] = ()

    def excluded_inbound(self, service: str, version: str) -> tuple[int, ...]:
        return next((p for s, v, p in self.exclude_inbound if (s, v) == (service, version)), ())


@dataclass(frozen=True, slots=True)
class Plan:
    mode: str
    prefix: str
    config_dir: str
    registry_url: str  # how proxies reach the registry
    registry_listen: str
    registry_port: int
    monitor_port: int
    network: Network | None
    workloads: tuple[Workload, ...] = field(default=())
    runtime: str = LOCAL  # local | docker
    docker: DockerTarget | None = None
    # mesh.yaml's registry.address when it is this host's (not loopback): other hosts reach
    # the registry there, so it listens on every address and its certificate names this one
    registry_address: str = ""
    gateways: tuple[Workload, ...] = ()  # kind GATEWAY: the gateway proxies `up` runs

    @property
    def members(self) -> tuple[Workload, ...]:
        """Everything the supervisor runs: the workloads, then the gateways."""
        return (*self.workloads, *self.gateways)

    def workload(self, name: str) -> Workload | None:
        return next((w for w in self.members if w.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        """The workloads' names (their namespaces in transparent mode)."""
        return tuple(w.name for w in self.workloads)


def check_prefix(prefix: str) -> str:
    """A prefix for namespace and bridge names: short enough for a 15-character bridge."""
    if prefix and not _PREFIX.fullmatch(prefix):
        raise PlanError(
            f"prefix {prefix!r}: use up to 12 characters from a-z 0-9 -, starting with a "
            "letter or digit"
        )
    return prefix


def bridge_name(prefix: str) -> str:
    return f"{check_prefix(prefix)}br0" if prefix else DEFAULT_BRIDGE


def workload_name(prefix: str, service: str, version: str, replica: int) -> str:
    name = f"{prefix}{service}-{version}" + (f"-{replica}" if replica else "")
    if len(name) > NAME_MAX:
        raise PlanError(f"workload name {name!r} is longer than {NAME_MAX} characters")
    return name


def env_name(service: str) -> str:
    """MESH_UPSTREAM_<NAME>: the service name upper-cased, `-` as `_`."""
    return service.upper().replace("-", "_")


def _is_shop(argv: Iterable[str]) -> bool:
    """The example app (examples/compose/apps/shop.py) takes --upstream, --port, --host."""
    return any(PurePosixPath(a).name == "shop.py" for a in argv)


def _addresses(network: Network, names: list[str], previous: Mapping[str, str]) -> dict[str, str]:
    """Keep each known workload's address; give new ones the lowest free host address."""
    net = ipaddress.IPv4Network(network.subnet)
    kept = {n: a for n, a in previous.items() if n in names and ipaddress.ip_address(a) in net}
    used = {network.gateway, *kept.values()}
    free = (str(h) for h in net.hosts() if str(h) not in used)
    out = dict(kept)
    for name in names:
        if name not in out:
            addr = next(free, None)
            if addr is None:
                raise PlanError(
                    f"subnet {network.subnet} has no address left for {name}: fewer replicas"
                )
            out[name] = addr
    return out


def transparent_proxy_args(
    service: str, version: str, registry_url: str, name: str, address: str
) -> tuple[str, ...]:
    """`meshctl proxy ...` for a workload whose traffic iptables sends to its proxy."""
    return ("proxy", "--service", service, "--version", version,
            "--registry", registry_url, "--proxy-id", name, "--advertise", address,
            "--inbound", f"0.0.0.0:{INBOUND_PORT}",
            "--outbound", f"{LOCALHOST}:{OUTBOUND_PORT}",
            "--admin", f"{LOCALHOST}:{ADMIN_PORT}",
            "--metrics", f"0.0.0.0:{METRICS_PORT}")  # fmt: skip


def build_plan(
    config: MeshConfig,
    *,
    mode: str,
    config_dir: str,
    registry_port: int,
    monitor_port: int,
    network: Network | None = None,
    prefix: str = "",
    previous: Plan | None = None,
    alloc_port: Callable[[], int] | None = None,
    users: Mapping[tuple[str, str], tuple[int, int]] | None = None,
    registry_url: str | None = None,
) -> Plan:
    """Lay out every workload of `config` (see the module docstring). `users`: each
    (service, version)'s app (uid, gid) (meshctl.launch.users), when meshctl drops to it."""
    if mode not in MODES:
        raise PlanError(f"mode {mode!r}: want one of {', '.join(MODES)}")
    check_prefix(prefix)
    if mode == TRANSPARENT and network is None:
        raise PlanError("transparent mode needs a network (bridge and subnet)")
    if mode == EXPLICIT and alloc_port is None:
        raise PlanError("explicit mode needs a port allocator")
    listen = network.gateway if mode == TRANSPARENT and network else LOCALHOST
    url = f"https://{listen}:{registry_port}"
    if registry_url is not None:  # joined: the mesh's registry runs on another host
        url, listen = registry_url, urlsplit(registry_url).hostname or listen
    keyed = [
        (svc, wl, replica)
        for svc in config.services
        for wl in svc.workloads
        for replica in ([0] if wl.replicas == 1 else range(1, wl.replicas + 1))
    ]
    names = [workload_name(prefix, s.name, w.version, r) for s, w, r in keyed]
    old = {w.name: w for w in previous.workloads} if previous else {}
    if mode == TRANSPARENT:
        assert network is not None
        same_net = previous is not None and previous.network == network
        addrs = _addresses(network, names, {n: w.address for n, w in old.items() if same_net})
    hosts = tuple(sorted((s.name, service_vip(s.name)) for s in config.services))
    upstreams = [(s.name, p.port) for s in config.services for p in s.ports]
    workloads = []
    for (svc, wl, replica), name in zip(keyed, names, strict=True):
        ports = tuple(p.port for p in svc.ports)
        base_env = {"MESH_SERVICE": svc.name, "MESH_VERSION": wl.version, "MESH_WORKLOAD": name}
        common = ["proxy", "--service", svc.name, "--version", wl.version,
                  "--registry", url, "--proxy-id", name]  # fmt: skip
        app_argv = list(wl.command)
        if mode == TRANSPARENT:
            address = addrs[name]
            if ports:
                base_env["PORT"] = str(ports[0])
            proxy_args = list(transparent_proxy_args(svc.name, wl.version, url, name, address))
            allocated: tuple[tuple[str, int], ...] = ()
            wl_hosts = hosts
        else:
            assert alloc_port is not None
            address = LOCALHOST
            roles = ["inbound", "admin", "metrics", *(f"app:{p}" for p in ports)]
            roles += [f"upstream:{s}:{p}" for s, p in upstreams if s != svc.name]
            before = dict(old[name].ports) if name in old else {}
            alloc = {role: before.get(role) or alloc_port() for role in roles}
            allocated = tuple(sorted(alloc.items()))
            proxy_args = [*common, "--advertise", LOCALHOST,
                          "--inbound", f"{LOCALHOST}:{alloc['inbound']}",
                          "--admin", f"{LOCALHOST}:{alloc['admin']}",
                          "--metrics", f"{LOCALHOST}:{alloc['metrics']}"]  # fmt: skip
            for p in ports:
                proxy_args += ["--app", f"{p}={LOCALHOST}:{alloc[f'app:{p}']}"]
                base_env[f"MESH_PORT_{p}"] = str(alloc[f"app:{p}"])
            if ports:
                base_env["PORT"] = str(alloc[f"app:{ports[0]}"])
                base_env["HOST"] = LOCALHOST
            first_port: dict[str, int] = {}
            for s, p in upstreams:
                if s == svc.name:
                    continue
                local = alloc[f"upstream:{s}:{p}"]
                proxy_args += ["--upstream", f"{s}:{p}={LOCALHOST}:{local}"]
                base_env[f"MESH_UPSTREAM_{env_name(s)}_{p}"] = f"{LOCALHOST}:{local}"
                first_port.setdefault(s, local)
            for s, local in first_port.items():
                base_env[f"MESH_UPSTREAM_{env_name(s)}"] = f"{LOCALHOST}:{local}"
            if _is_shop(app_argv):
                for s, local in first_port.items():
                    app_argv += ["--upstream", f"{s}={LOCALHOST}:{local}"]
                if ports:
                    app_argv += ["--host", LOCALHOST, "--port", base_env["PORT"]]
            wl_hosts = ()
        env = {**base_env, **dict(wl.env)}  # the workload's own env wins
        workloads.append(
            Workload(
                name=name,
                service=svc.name,
                version=wl.version,
                replica=replica,
                address=address,
                netns=name if mode == TRANSPARENT else None,
                app_argv=tuple(app_argv),
                app_env=tuple(sorted(env.items())),
                cwd=config.base_dir,
                proxy_args=tuple(proxy_args),
                inbound_ports=ports,
                ports=allocated,
                hosts=wl_hosts,
                run_as=(users or {}).get((svc.name, wl.version)),
                exclude_inbound_ports=wl.exclude_inbound_ports,
            )
        )
    return Plan(
        mode=mode,
        prefix=prefix,
        config_dir=config_dir,
        registry_url=url,
        registry_listen=listen,
        registry_port=registry_port,
        monitor_port=monitor_port,
        network=network,
        workloads=tuple(workloads),
        # A joined host (registry_url given) runs its workloads only: the Gateways' proxy
        # runs beside the mesh's registry, on the host that `up`s it.
        gateways=() if registry_url is not None else gateway_members(
            config,
            prefix=prefix,
            config_dir=config_dir,
            registry_url=url,
            previous=previous,
            alloc_port=alloc_port,
        ),
    )


def gateway_service(gateway: Gateway) -> str:
    """The gateway proxy a Gateway selects: a proxy started with `--service NAME --gateway`
    carries the labels istio=NAME and app=NAME, so the selector must be a subset of those."""
    labels = dict(gateway.selector)
    name = labels.get("istio") or labels.get("app") or ""
    if not name or any(k not in ("istio", "app") or v != name for k, v in labels.items()):
        shown = ", ".join(f"{k}: {v}" for k, v in gateway.selector)
        raise PlanError(
            f"Gateway {gateway.name} ({gateway.source.file}): `meshctl up` starts gateway "
            f"proxies named by the selector `istio: NAME` (they carry istio=NAME and "
            f"app=NAME); this selector ({shown}) matches none: use `istio: NAME`"
        )
    return name


def gateway_members(
    config: MeshConfig,
    *,
    prefix: str,
    config_dir: str,
    registry_url: str,
    previous: Plan | None,
    alloc_port: Callable[[], int] | None,
) -> tuple[Workload, ...]:
    """One gateway proxy per name the config's Gateways select, on this host: the servers'
    ports on GATEWAY_ADDRESS, admin and metrics on allocated 127.0.0.1 ports (kept across
    runs), certificates read from the config directory."""
    by_service: dict[str, list[Gateway]] = {}
    for gw in config.gateways:
        by_service.setdefault(gateway_service(gw), []).append(gw)
    if by_service and alloc_port is None:
        raise PlanError("gateways need a port allocator (admin and metrics ports)")
    old = {g.name: g for g in previous.gateways} if previous else {}
    out = []
    for service, gws in sorted(by_service.items()):
        name = f"{prefix}{service}"
        if len(name) > NAME_MAX:
            raise PlanError(f"gateway name {name!r} is longer than {NAME_MAX} characters")
        before = dict(old[name].ports) if name in old else {}
        assert alloc_port is not None
        alloc = {role: before.get(role) or alloc_port() for role in ("admin", "metrics")}
        servers = [s for gw in gws for s in gw.servers]
        ports = tuple(sorted({s.port for s in servers}))
        urls = tuple(sorted({_gateway_url(s) for s in servers}))
        args = ("proxy", "--service", service, "--gateway", "--registry", registry_url,
                "--proxy-id", name, "--gateway-address", GATEWAY_ADDRESS,
                "--credentials", config_dir,
                "--admin", f"{LOCALHOST}:{alloc['admin']}",
                "--metrics", f"{LOCALHOST}:{alloc['metrics']}")  # fmt: skip
        out.append(Workload(
            name=name, service=service, version="", replica=0, address=GATEWAY_ADDRESS,
            netns=None, app_argv=(), app_env=(), cwd="/", proxy_args=args,
            inbound_ports=ports, ports=tuple(sorted(alloc.items())), kind=GATEWAY, urls=urls,
        ))  # fmt: skip
    return tuple(out)


def _gateway_url(server: GatewayServer) -> str:
    """What a client opens for one server: its first host (`*` and `*.x` shown as they are)."""
    scheme = "https" if server.protocol == "HTTPS" else "http"
    host = server.hosts[0] if server.hosts else "*"
    return f"{scheme}://{host}:{server.port}/"


def changed(old: Plan | None, new: Plan) -> tuple[list[str], list[str], list[str]]:
    """(to start, to stop, to restart): names whose workload appeared, vanished or differs."""
    before = {w.name: w for w in old.members} if old else {}
    after = {w.name: w for w in new.members}
    start = [n for n in after if n not in before]
    stop = [n for n in before if n not in after]
    restart = [n for n in after if n in before and before[n] != after[n]]
    return start, stop, restart


# --- JSON form (plan.json, state.json) ------------------------------------------------------


def to_wire(plan: Plan) -> dict[str, Any]:
    return {
        "gateways": [_workload_to_wire(w) for w in plan.gateways],
        "mode": plan.mode,
        "prefix": plan.prefix,
        "config_dir": plan.config_dir,
        "registry_url": plan.registry_url,
        "registry_listen": plan.registry_listen,
        "registry_address": plan.registry_address,
        "registry_port": plan.registry_port,
        "monitor_port": plan.monitor_port,
        "network": (
            {"bridge": plan.network.bridge, "subnet": plan.network.subnet} if plan.network else None
        ),
        "workloads": [_workload_to_wire(w) for w in plan.workloads],
        "runtime": plan.runtime,
        "docker": _docker_to_wire(plan.docker),
    }


def _workload_to_wire(w: Workload) -> dict[str, Any]:
    return {
        "name": w.name,
        "service": w.service,
        "version": w.version,
        "replica": w.replica,
        "address": w.address,
        "netns": w.netns,
        "app_argv": list(w.app_argv),
        "app_env": dict(w.app_env),
        "cwd": w.cwd,
        "proxy_args": list(w.proxy_args),
        "inbound_ports": list(w.inbound_ports),
        "ports": dict(w.ports),
        "hosts": dict(w.hosts),
        "container": w.container,
        "pid": w.pid,
        "run_as": list(w.run_as) if w.run_as else None,
        "exclude_inbound_ports": list(w.exclude_inbound_ports),
        "published": [list(x) for x in w.published],
        "published_from": w.published_from,
        "published_net": w.published_net,
        "kind": w.kind,
        "urls": list(w.urls),
    }


def _docker_to_wire(d: DockerTarget | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {
        "project": d.project,
        "compose_file": d.compose_file,
        "compose_cmd": list(d.compose_cmd),
        "network": d.network,
        "services": [list(s) for s in d.services],
        "ports": {name: list(ports) for name, ports in d.ports},
        "exclude_inbound": [[s, v, list(p)] for s, v, p in d.exclude_inbound],
    }


def _docker_from_wire(d: Mapping[str, Any] | None) -> DockerTarget | None:
    if not d:
        return None
    return DockerTarget(
        project=str(d["project"]),
        compose_file=str(d["compose_file"]),
        compose_cmd=tuple(str(c) for c in d["compose_cmd"]),
        network=str(d["network"]),
        services=tuple((str(a), str(b), str(c)) for a, b, c in d["services"]),
        ports=tuple((str(k), tuple(int(p) for p in v)) for k, v in d["ports"].items()),
        exclude_inbound=tuple(
            (str(s), str(v), tuple(int(x) for x in p)) for s, v, p in d.get("exclude_inbound", ())
        ),
    )


def from_wire(d: Mapping[str, Any]) -> Plan:
    net = d.get("network")
    return Plan(
        mode=str(d["mode"]),
        prefix=str(d["prefix"]),
        config_dir=str(d["config_dir"]),
        registry_url=str(d["registry_url"]),
        registry_listen=str(d["registry_listen"]),
        registry_address=str(d.get("registry_address", "")),
        registry_port=int(d["registry_port"]),
        monitor_port=int(d["monitor_port"]),
        network=Network(str(net["bridge"]), str(net["subnet"])) if net else None,
        workloads=tuple(_workload_from_wire(w) for w in d["workloads"]),
        gateways=tuple(_workload_from_wire(w) for w in d.get("gateways", ())),
        runtime=str(d.get("runtime", LOCAL)),
        docker=_docker_from_wire(d.get("docker")),
    )


def _workload_from_wire(w: Mapping[str, Any]) -> Workload:
    return Workload(
        name=str(w["name"]),
        service=str(w["service"]),
        version=str(w["version"]),
        replica=int(w["replica"]),
        address=str(w["address"]),
        netns=w["netns"],
        app_argv=tuple(w["app_argv"]),
        app_env=tuple(sorted(w["app_env"].items())),
        cwd=str(w["cwd"]),
        proxy_args=tuple(w["proxy_args"]),
        inbound_ports=tuple(int(p) for p in w["inbound_ports"]),
        ports=tuple((str(k), int(v)) for k, v in w["ports"].items()),
        hosts=tuple(sorted(w["hosts"].items())),
        container=str(w.get("container", "")),
        pid=int(w.get("pid", 0)),
        run_as=(int(w["run_as"][0]), int(w["run_as"][1])) if w.get("run_as") else None,
        exclude_inbound_ports=tuple(int(p) for p in w.get("exclude_inbound_ports", ())),
        published=tuple((int(a), str(b)) for a, b in w.get("published") or ()),
        published_from=str(w.get("published_from", "")),
        published_net=str(w.get("published_net", "")),
        kind=str(w.get("kind", SIDECAR)),
        urls=tuple(str(u) for u in w.get("urls", ())),
    )


def _loopback(host: str) -> bool:
    """Whether "IP:PORT" or "[IP]:PORT" binds a loopback address."""
    ip = host.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False
