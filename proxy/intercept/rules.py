"""Interception rules as `iptables-restore --noflush` text: pure, no I/O.

House rules of this file:
  * We own four chains in the nat table (MESH_*) and the jumps into them from OUTPUT and
    PREROUTING. Nothing else is ever written or deleted: no flush of a built-in chain, no
    touching Docker's DOCKER_OUTPUT / DOCKER_POSTROUTING (its embedded DNS at 127.0.0.11).
  * Every change is one iptables-restore transaction, so the namespace is never half-done.
    Declaring `:MESH_X - [0:0]` under --noflush creates the chain or empties it; jumps
    are deleted by replaying the `-A` lines of the current `iptables-save -t nat` as `-D`,
    so a second install, or one over an older config, leaves exactly one copy.
  * The rule order follows istio-iptables (ISTIO_OUTPUT, ISTIO_REDIRECT, ISTIO_INBOUND,
    ISTIO_IN_REDIRECT); docs/interception.md walks through a rendered example.
  * IPv4 only: these rules go to iptables, not ip6tables, so IPv6 is not intercepted.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

MESH_INBOUND = "MESH_INBOUND"
MESH_REDIRECT = "MESH_REDIRECT"
MESH_IN_REDIRECT = "MESH_IN_REDIRECT"
MESH_OUTPUT = "MESH_OUTPUT"
CHAINS = (MESH_INBOUND, MESH_REDIRECT, MESH_IN_REDIRECT, MESH_OUTPUT)

LOOPBACK = "127.0.0.0/8"
ANYWHERE = "0.0.0.0/0"


@dataclass(frozen=True, slots=True, kw_only=True)
class InterceptConfig:
    """What to capture in one workload's network namespace.

    Defaults follow Istio's sidecar: outbound 15001, inbound 15006, and the proxy's own
    admin (15000), health (15021) and metrics (15090) ports plus ssh (22) are never captured
    inbound. A port in both `inbound_ports` and `exclude_inbound_ports` is not captured:
    the exclusion wins, so an operator cannot lock themselves out by declaring port 22.
    """

    outbound_port: int = 15001
    inbound_port: int = 15006
    proxy_uid: int
    proxy_gid: int | None = None
    inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_inbound_ports: tuple[int, ...] = (22, 15000, 15021, 15090)
    exclude_outbound_cidrs: tuple[str, ...] = ()
    include_outbound_cidrs: tuple[str, ...] = (ANYWHERE,)
    # Docker's published ports (docs/docker.md): connections to one of `published_ports`
    # from one of `published_sources` (the network's gateway: docker-proxy and Docker's
    # NAT) go to the proxy's published listener, which serves them as ingress.
    published_ports: tuple[int, ...] = ()
    published_sources: tuple[str, ...] = ()
    published_port: int = 15007
    # Ports bound on more than loopback: also connections from outside the container's
    # network (`published_local_net`), which Docker DNATs without masquerading.
    published_open_ports: tuple[int, ...] = ()
    published_local_net: str = ""

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("invalid interception config: " + "; ".join(problems))


def _problems(cfg: InterceptConfig) -> list[str]:
    problems: list[str] = []
    single = {"outbound_port": cfg.outbound_port, "inbound_port": cfg.inbound_port,
              "published_port": cfg.published_port}  # fmt: skip
    lists = {
        "inbound_ports": cfg.inbound_ports,
        "published_ports": cfg.published_ports,
        "published_open_ports": cfg.published_open_ports,
        "exclude_outbound_ports": cfg.exclude_outbound_ports,
        "exclude_inbound_ports": cfg.exclude_inbound_ports,
    }
    for field, port in [*single.items(), *((f, p) for f, ps in lists.items() for p in ps)]:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append(f"{field}: {port!r} is not a TCP port (1-65535)")
    if cfg.outbound_port == cfg.inbound_port:
        problems.append(f"outbound_port and inbound_port are both {cfg.inbound_port}")
    own = [cfg.outbound_port, cfg.inbound_port]
    if cfg.published_ports:  # the published listener exists only then
        if cfg.published_port in own:
            problems.append(f"published_port {cfg.published_port} is the proxy's other port")
        if not cfg.published_sources:
            problems.append("published_ports without published_sources: whose connections?")
        own.append(cfg.published_port)
    if cfg.published_open_ports:
        if not cfg.published_local_net:
            problems.append("published_open_ports without published_local_net: outside what?")
        if not set(cfg.published_open_ports) <= set(cfg.published_ports):
            problems.append("published_open_ports must also be in published_ports")
    for port in own:
        if port in cfg.inbound_ports:
            problems.append(
                f"inbound_ports contains the proxy's own port {port}: capturing it would loop"
            )
    for field, ident in (("proxy_uid", cfg.proxy_uid), ("proxy_gid", cfg.proxy_gid)):
        if ident is not None and (
            isinstance(ident, bool) or not isinstance(ident, int) or ident < 0
        ):
            problems.append(f"{field}: {ident!r} is not a user or group id (an int >= 0)")
    for field, cidrs in (
        ("exclude_outbound_cidrs", cfg.exclude_outbound_cidrs),
        ("include_outbound_cidrs", cfg.include_outbound_cidrs),
        ("published_sources", cfg.published_sources),
        ("published_local_net", (cfg.published_local_net,) if cfg.published_local_net else ()),
    ):
        problems.extend(f"{field}: {msg}" for msg in map(_cidr_problem, cidrs) if msg)
    return problems


def _cidr_problem(cidr: str) -> str | None:
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        return f"{cidr!r} is not a CIDR ({exc})"
    if net.version != 4:
        return f"{cidr!r} is IPv6, and interception is IPv4 only (iptables, not ip6tables)"
    return None


def _ports(ports: Iterable[int]) -> list[int]:
    return sorted(set(ports))


def _net(cidr: str) -> str:
    return str(ipaddress.ip_network(cidr))


def _chain_rules(cfg: InterceptConfig) -> list[str]:
    """The rules inside our chains, in evaluation order, as `-A` lines."""
    uid = cfg.proxy_uid
    rules = [
        f"-A {MESH_REDIRECT} -p tcp -j REDIRECT --to-ports {cfg.outbound_port}",
        f"-A {MESH_IN_REDIRECT} -p tcp -j REDIRECT --to-ports {cfg.inbound_port}",
    ]
    if cfg.inbound_ports:
        # Exclusions first: ssh and the proxy's admin/metrics ports stay reachable directly.
        rules += [
            f"-A {MESH_INBOUND} -p tcp --dport {p} -j RETURN"
            for p in _ports(cfg.exclude_inbound_ports)
        ]
        rules += _published_rules(cfg)
        rules += [
            f"-A {MESH_INBOUND} -p tcp --dport {p} -j {MESH_IN_REDIRECT}"
            for p in _ports(cfg.inbound_ports)
        ]
        # The proxy dialing its own workload by the namespace's own (non-loopback) address:
        # locally delivered packets never cross PREROUTING's nat hook, so hand them to the
        # inbound capture here, as Istio does, and they reach 15006 like a peer's would.
        rules.append(
            f"-A {MESH_OUTPUT} -o lo ! -d {LOOPBACK} -m owner --uid-owner {uid} -j {MESH_INBOUND}"
        )
    rules += [
        # The app talking to itself (localhost or its own address) stays out of the mesh.
        f"-A {MESH_OUTPUT} -o lo -m owner ! --uid-owner {uid} -j RETURN",
        # The proxy's own connections (to peers, the registry, the app): no loop.
        f"-A {MESH_OUTPUT} -m owner --uid-owner {uid} -j RETURN",
    ]
    if cfg.proxy_gid is not None:
        rules.append(f"-A {MESH_OUTPUT} -m owner --gid-owner {cfg.proxy_gid} -j RETURN")
    rules.append(f"-A {MESH_OUTPUT} -d {LOOPBACK} -j RETURN")
    rules += [
        f"-A {MESH_OUTPUT} -p tcp --dport {p} -j RETURN" for p in _ports(cfg.exclude_outbound_ports)
    ]
    rules += [f"-A {MESH_OUTPUT} -d {_net(c)} -j RETURN" for c in cfg.exclude_outbound_cidrs]
    for cidr in cfg.include_outbound_cidrs:
        dest = "" if _net(cidr) == ANYWHERE else f" -d {_net(cidr)}"
        rules.append(f"-A {MESH_OUTPUT}{dest} -j {MESH_REDIRECT}")
    return rules


def _published_rules(cfg: InterceptConfig) -> list[str]:
    """Published ports: the host's side of the network -> the published listener.

    Before the capture, so these connections never reach 15006's STRICT check; only for
    captured ports (an uncaptured one reaches the app as it did). The source match is what
    tells them apart: a mesh workload has its own address on the network, never the
    gateway's, nor one outside the network (docs/docker.md: why, and what about spoofing).
    """
    ports = [p for p in _ports(cfg.published_ports)
             if p in cfg.inbound_ports and p not in cfg.exclude_inbound_ports]  # fmt: skip
    sources = [(f"-s {_net(src)}", p) for src in cfg.published_sources for p in ports]
    if cfg.published_local_net:
        outside = f"! -s {_net(cfg.published_local_net)}"
        sources += [(outside, p) for p in ports if p in cfg.published_open_ports]
    return [
        f"-A {MESH_INBOUND} {src} -p tcp --dport {p} -j REDIRECT --to-ports {cfg.published_port}"
        for src, p in sources
    ]


def _jumps(cfg: InterceptConfig) -> list[str]:
    """Our jumps from the built-in chains, appended after whatever is there (Docker's DNS)."""
    jumps = [f"-A OUTPUT -p tcp -j {MESH_OUTPUT}"]
    if cfg.inbound_ports:
        jumps.append(f"-A PREROUTING -p tcp -j {MESH_INBOUND}")
    return jumps


@dataclass(frozen=True, slots=True)
class NatTable:
    """The nat table as `iptables-save -t nat` printed it: chain names and `-A` lines."""

    chains: tuple[str, ...]
    rules: tuple[str, ...]

    def ours(self) -> tuple[str, ...]:
        """Our rules: those in our chains and the jumps into them, in dump order."""
        return tuple(r for r in self.rules if is_ours(r))

    def others(self) -> tuple[str, ...]:
        """Everyone else's rules, in dump order: what an install must leave as it was."""
        return tuple(r for r in self.rules if not is_ours(r))


def parse_nat(saved: str) -> NatTable:
    """Parse the `*nat` section of iptables-save output (empty when there is none)."""
    chains: list[str] = []
    rules: list[str] = []
    inside = False
    for raw in saved.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            inside = line == "*nat"
        elif not inside or not line or line.startswith("#"):
            continue
        elif line == "COMMIT":
            inside = False
        elif line.startswith(":"):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            rules.append(line)
    return NatTable(tuple(chains), tuple(rules))


def _chain_and_target(rule: str) -> tuple[str, str | None]:
    words = shlex.split(rule)
    target = None
    for flag, value in pairwise(words):
        if flag in ("-j", "--jump", "-g", "--goto"):
            target = value
    return words[1], target


def is_ours(rule: str) -> bool:
    """True for an `-A` line in one of our chains or jumping into one."""
    chain, target = _chain_and_target(rule)
    return chain in CHAINS or target in CHAINS


def _delete_jumps(table: NatTable) -> list[str]:
    """`-D` lines for every jump into our chains from a chain that is not ours.

    The rule text is iptables-save's own, so it matches the kernel's rule exactly,
    whichever config (or version of this file) installed it.
    """
    return [
        "-D " + rule[3:]
        for rule in table.rules
        if _chain_and_target(rule)[0] not in CHAINS and is_ours(rule)
    ]


def render_restore(cfg: InterceptConfig, *, replacing: str = "") -> str:
    """The iptables-restore --noflush text that installs `cfg`.

    `replacing` is the namespace's current `iptables-save -t nat`: jumps into our chains
    found there are deleted in the same transaction, which is what makes install
    idempotent (install twice = the same rules) and lets a new config replace an old one.
    """
    lines = [
        "*nat",
        *(f":{chain} - [0:0]" for chain in CHAINS),
        *_delete_jumps(parse_nat(replacing)),
        *_chain_rules(cfg),
        *_jumps(cfg),
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def render_remove(current: str) -> str:
    """The iptables-restore --noflush text that deletes our jumps and chains.

    `current` is the namespace's `iptables-save -t nat`. Returns "" when nothing of ours is
    there: removing twice, or from a namespace never intercepted, is not an error.
    """
    table = parse_nat(current)
    present = [chain for chain in CHAINS if chain in table.chains]
    deletes = _delete_jumps(table)
    if not present and not deletes:
        return ""
    lines = [
        "*nat",
        *(f":{chain} - [0:0]" for chain in present),  # empties them: no references left
        *deletes,
        *(f"-X {chain}" for chain in present),
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def is_installed(current: str) -> bool:
    """True when all our chains exist and OUTPUT jumps into MESH_OUTPUT."""
    table = parse_nat(current)
    jump = any(_chain_and_target(r) == ("OUTPUT", MESH_OUTPUT) for r in table.rules)
    return jump and all(chain in table.chains for chain in CHAINS)
