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
MESH_DNS = "MESH_DNS"  # the app's port-53 queries -> the proxy's DNS listener (dns_port)
CHAINS = (MESH_INBOUND, MESH_REDIRECT, MESH_IN_REDIRECT, MESH_OUTPUT, MESH_DNS)

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
    dns_port: int | None = None  # None: DNS not captured (Istio's default); see _dns_rules

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("invalid interception config: " + "; ".join(problems))


def _problems(cfg: InterceptConfig) -> list[str]:
    problems: list[str] = []
    single = {"outbound_port": cfg.outbound_port, "inbound_port": cfg.inbound_port}
    lists = {
        "inbound_ports": cfg.inbound_ports,
        "exclude_outbound_ports": cfg.exclude_outbound_ports,
        "exclude_inbound_ports": cfg.exclude_inbound_ports,
    }
    for field, port in [*single.items(), *((f, p) for f, ps in lists.items() for p in ps)]:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append(f"{field}: {port!r} is not a TCP port (1-65535)")
    if cfg.dns_port is not None:
        problems.extend(_dns_problems(cfg))
    if cfg.outbound_port == cfg.inbound_port:
        problems.append(f"outbound_port and inbound_port are both {cfg.inbound_port}")
    for port in (cfg.outbound_port, cfg.inbound_port):
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


def _dns_problems(cfg: InterceptConfig) -> list[str]:
    port = cfg.dns_port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return [f"dns_port: {port!r} is not a port (1-65535)"]
    if port in (cfg.outbound_port, cfg.inbound_port):
        return [f"dns_port {port} is also the proxy's outbound or inbound port"]
    return []


def _dns_rules(cfg: InterceptConfig) -> list[str]:
    """DNS capture (Istio's ISTIO_META_DNS_CAPTURE): the app's UDP and TCP port 53, to any
    resolver, go to the proxy's DNS listener; the proxy's own queries (its uid, its gid)
    leave as they are, which is how it forwards what it does not answer without a loop.
    Jumped to before MESH_OUTPUT, which would otherwise send TCP 53 to 15001."""
    if cfg.dns_port is None:
        return []
    rules = [f"-A {MESH_DNS} -m owner --uid-owner {cfg.proxy_uid} -j RETURN"]
    if cfg.proxy_gid is not None:
        rules.append(f"-A {MESH_DNS} -m owner --gid-owner {cfg.proxy_gid} -j RETURN")
    rules += [f"-A {MESH_DNS} -p {proto} -j REDIRECT --to-ports {cfg.dns_port}"
              for proto in ("udp", "tcp")]
    rules += [f"-A OUTPUT -p {proto} --dport 53 -j {MESH_DNS}" for proto in ("udp", "tcp")]
    return rules


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
    current = parse_nat(replacing)
    # MESH_DNS is declared only with DNS capture on, or to empty and drop an old one.
    dns_before = MESH_DNS in current.chains
    declared = [c for c in CHAINS if c != MESH_DNS or cfg.dns_port is not None or dns_before]
    lines = [
        "*nat",
        *(f":{chain} - [0:0]" for chain in declared),
        *_delete_jumps(current),
        *_chain_rules(cfg),
        *_dns_rules(cfg),
        *_jumps(cfg),
        *([f"-X {MESH_DNS}"] if dns_before and cfg.dns_port is None else []),
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
    return jump and all(chain in table.chains for chain in CHAINS if chain != MESH_DNS)
