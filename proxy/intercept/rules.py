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
  * Both families, as istio-iptables does: the same rules go to iptables (family 4) and
    ip6tables (family 6), with ::1 for loopback and each CIDR in its own family. Every
    namespace has a link-local IPv6 address, so rules for IPv4 alone leave a way around.
  * Inbound, every port is captured unless excluded (Istio's `includeInboundPorts: "*"`);
    the proxy's own listeners are always excluded, or a peer's mTLS would loop.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

MESH_INBOUND = "MESH_INBOUND"
MESH_REDIRECT = "MESH_REDIRECT"
MESH_IN_REDIRECT = "MESH_IN_REDIRECT"
MESH_OUTPUT = "MESH_OUTPUT"
MESH_DNS = "MESH_DNS"  # the app's port-53 queries -> the proxy's DNS listener (dns_port)
CHAINS = (MESH_INBOUND, MESH_REDIRECT, MESH_IN_REDIRECT, MESH_OUTPUT, MESH_DNS)

LOOPBACK = "127.0.0.0/8"
ANYWHERE = "0.0.0.0/0"
ALL: Literal["*"] = "*"  # Istio's wildcard: every inbound port; every destination, in both families

# A TCP packet that opens no connection. The nat table sees a connection's first packet only,
# and that is its SYN, except for connections open before the rules were loaded: a
# namespace without nat rules tracks nothing, so once ours are in, conntrack picks its open
# connections up mid-stream (nf_conntrack_tcp_loose) and whichever of their packets comes
# next, in or out, is "first". Redirected, it lands on 15001/15006, whose listeners answer
# it with a RST: the registry's streams to proxies on other hosts, a VM proxy's own stream
# (opened before the app's ExecStartPre installs capture-all: the registry's next ping, to
# the proxy's ephemeral port, went to 15006), an ssh session. MESH_OUTPUT, MESH_INBOUND and
# MESH_DNS start by letting these go with a null binding: a connection open before the
# install is left alone, as it always was in a namespace whose conntrack already tracked it
# (one with Docker's DNS rules); the rules apply to every connection opened after. A match on
# `-m conntrack --ctstate` cannot tell them apart: every packet the nat table sees is NEW,
# a picked-up connection's first one as much as a SYN; its TCP flags can.
MID_STREAM = "-p tcp ! --syn"

# ssh, and the proxy's admin, health and Prometheus ports: reached directly, never captured.
EXCLUDE_INBOUND_DEFAULT = (22, 15000, 15021, 15090)

Family = Literal[4, 6]
FAMILIES: tuple[Family, ...] = (4, 6)
_LOOPBACK: dict[int, str] = {4: LOOPBACK, 6: "::1/128"}
_ANYWHERE: dict[int, str] = {4: ANYWHERE, 6: "::/0"}


@dataclass(frozen=True, slots=True, kw_only=True)
class InterceptConfig:
    """What to capture in one workload's network namespace.

    Defaults follow Istio's sidecar: outbound 15001, inbound 15006, every inbound port
    captured (`inbound_ports="*"`, Istio's `includeInboundPorts: "*"`; a tuple captures
    those ports only, `()` none), and the proxy's own admin (15000), health (15021) and
    metrics (15090) ports plus ssh (22) never captured inbound (`excludeInboundPorts`).
    15001 and 15006 are never captured either, whatever the lists say. A port both
    captured and excluded is not captured: the exclusion wins, so an operator cannot lock
    themselves out by declaring port 22. CIDRs may be IPv4 or IPv6: each goes to its
    family's table; `include_outbound_cidrs=("*",)` is everything in both.
    """

    outbound_port: int = 15001
    inbound_port: int = 15006
    proxy_uid: int
    proxy_gid: int | None = None
    inbound_ports: tuple[int, ...] | Literal["*"] = ALL
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_inbound_ports: tuple[int, ...] = EXCLUDE_INBOUND_DEFAULT
    exclude_outbound_cidrs: tuple[str, ...] = ()
    include_outbound_cidrs: tuple[str, ...] = (ALL,)
    dns_port: int | None = None  # None: DNS not captured (Istio's default); see _dns_rules

    @property
    def captures_all_inbound(self) -> bool:
        return self.inbound_ports == ALL

    def excluded_inbound(self) -> list[int]:
        """The ports never captured inbound: the exclusions and the proxy's own listeners."""
        return _ports((*self.exclude_inbound_ports, self.outbound_port, self.inbound_port))

    def captured_inbound(self) -> list[int] | Literal["*"]:
        """The ports captured inbound: "*" (all but the excluded) or a list, maybe empty."""
        if isinstance(self.inbound_ports, str):
            return ALL
        excluded = self.excluded_inbound()
        return [p for p in _ports(self.inbound_ports) if p not in excluded]
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
    if isinstance(cfg.inbound_ports, str) and cfg.inbound_ports != ALL:
        problems.append(f'inbound_ports: {cfg.inbound_ports!r} is neither "*" nor a port list')
    listed: tuple[int, ...] = () if isinstance(cfg.inbound_ports, str) else cfg.inbound_ports
    lists = {
        "inbound_ports": listed,
        "published_ports": cfg.published_ports,
        "published_open_ports": cfg.published_open_ports,
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
        if port in listed:
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
    if cidr == ALL:
        return None
    try:
        ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        return f"{cidr!r} is not a CIDR ({exc})"
    return None


def _ports(ports: Iterable[int]) -> list[int]:
    return sorted(set(ports))


def _nets(cidrs: Iterable[str], family: Family) -> list[str]:
    """The CIDRs of one family, normalised ("*" is everything: ::/0 or 0.0.0.0/0)."""
    out = []
    for cidr in cidrs:
        net = ipaddress.ip_network(_ANYWHERE[family] if cidr == ALL else cidr)
        if net.version == family:
            out.append(str(net))
    return out


def _captures_inbound(cfg: InterceptConfig) -> bool:
    return cfg.captured_inbound() != []


def _chain_rules(cfg: InterceptConfig, family: Family) -> list[str]:
    """The rules inside our chains, in evaluation order, as `-A` lines."""
    uid = cfg.proxy_uid
    loopback = _LOOPBACK[family]
    rules = [
        f"-A {MESH_REDIRECT} -p tcp -j REDIRECT --to-ports {cfg.outbound_port}",
        f"-A {MESH_IN_REDIRECT} -p tcp -j REDIRECT --to-ports {cfg.inbound_port}",
    ]
    captured = cfg.captured_inbound()
    if captured:
        rules.append(f"-A {MESH_INBOUND} {MID_STREAM} -j RETURN")
        # Then exclusions: ssh, the proxy's admin/metrics ports and its own listeners
        # (peers dial 15006 directly).
        rules += [
            f"-A {MESH_INBOUND} -p tcp --dport {p} -j RETURN" for p in cfg.excluded_inbound()
        ]
        # Published ports first (before the catch-all capture and STRICT's 15006).
        rules += _published_rules(cfg, family)
        if captured == ALL:
            rules.append(f"-A {MESH_INBOUND} -p tcp -j {MESH_IN_REDIRECT}")
        else:
            rules += [
                f"-A {MESH_INBOUND} -p tcp --dport {p} -j {MESH_IN_REDIRECT}" for p in captured
            ]
        # The proxy dialing its own workload by the namespace's own (non-loopback) address:
        # locally delivered packets never cross PREROUTING's nat hook, so hand them to the
        # inbound capture here, as Istio does, and they reach 15006 like a peer's would.
        rules += [
            f"-A {MESH_OUTPUT} {MID_STREAM} -j RETURN",
            f"-A {MESH_OUTPUT} -o lo ! -d {loopback} -m owner --uid-owner {uid} -j {MESH_INBOUND}",
        ]
    else:
        rules.append(f"-A {MESH_OUTPUT} {MID_STREAM} -j RETURN")
    rules += [
        # The app talking to itself (localhost or its own address) stays out of the mesh.
        f"-A {MESH_OUTPUT} -o lo -m owner ! --uid-owner {uid} -j RETURN",
        # The proxy's own connections (to peers, the registry, the app): no loop.
        f"-A {MESH_OUTPUT} -m owner --uid-owner {uid} -j RETURN",
    ]
    if cfg.proxy_gid is not None:
        rules.append(f"-A {MESH_OUTPUT} -m owner --gid-owner {cfg.proxy_gid} -j RETURN")
    rules.append(f"-A {MESH_OUTPUT} -d {loopback} -j RETURN")
    rules += [
        f"-A {MESH_OUTPUT} -p tcp --dport {p} -j RETURN" for p in _ports(cfg.exclude_outbound_ports)
    ]
    rules += [
        f"-A {MESH_OUTPUT} -d {n} -j RETURN" for n in _nets(cfg.exclude_outbound_cidrs, family)
    ]
    for net in _nets(cfg.include_outbound_cidrs, family):
        dest = "" if net == _ANYWHERE[family] else f" -d {net}"
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
    rules = [
        f"-A {MESH_DNS} {MID_STREAM} -j RETURN",  # a TCP query open before the install
        f"-A {MESH_DNS} -m owner --uid-owner {cfg.proxy_uid} -j RETURN",
    ]
    if cfg.proxy_gid is not None:
        rules.append(f"-A {MESH_DNS} -m owner --gid-owner {cfg.proxy_gid} -j RETURN")
    rules += [f"-A {MESH_DNS} -p {proto} -j REDIRECT --to-ports {cfg.dns_port}"
              for proto in ("udp", "tcp")]
    rules += [f"-A OUTPUT -p {proto} --dport 53 -j {MESH_DNS}" for proto in ("udp", "tcp")]
    return rules


def _published_rules(cfg: InterceptConfig, family: Family) -> list[str]:
    """Published ports: the host's side of the network -> the published listener.

    Before the capture, so these connections never reach 15006's STRICT check; only for
    captured ports (an uncaptured one reaches the app as it did). The source match is what
    tells them apart: a mesh workload has its own address on the network, never the
    gateway's, nor one outside the network (docs/docker.md: why, and what about spoofing).
    Rendered for the family the sources are in (Docker's networks: IPv4).
    """
    captured = cfg.captured_inbound()
    excluded = cfg.excluded_inbound()
    ports = [p for p in _ports(cfg.published_ports)
             if (captured == ALL or p in captured) and p not in excluded]  # fmt: skip
    sources = [(f"-s {src}", p) for src in _nets(cfg.published_sources, family) for p in ports]
    for net in _nets([cfg.published_local_net] if cfg.published_local_net else [], family):
        sources += [(f"! -s {net}", p) for p in ports if p in cfg.published_open_ports]
    return [
        f"-A {MESH_INBOUND} {src} -p tcp --dport {p} -j REDIRECT --to-ports {cfg.published_port}"
        for src, p in sources
    ]


def _jumps(cfg: InterceptConfig) -> list[str]:
    """Our jumps from the built-in chains, appended after whatever is there (Docker's DNS)."""
    jumps = [f"-A OUTPUT -p tcp -j {MESH_OUTPUT}"]
    if _captures_inbound(cfg):
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


def render_restore(cfg: InterceptConfig, *, replacing: str = "", family: Family = 4) -> str:
    """The iptables-restore (family 4) or ip6tables-restore (6) --noflush text for `cfg`.

    `replacing` is the namespace's current `iptables-save -t nat` of the same family: jumps
    into our chains found there are deleted in the same transaction, which is what makes
    install idempotent (install twice = the same rules) and lets a new config replace an
    old one.
    """
    current = parse_nat(replacing)
    # MESH_DNS is declared only with DNS capture on, or to empty and drop an old one.
    dns_before = MESH_DNS in current.chains
    declared = [c for c in CHAINS if c != MESH_DNS or cfg.dns_port is not None or dns_before]
    lines = [
        "*nat",
        *(f":{chain} - [0:0]" for chain in declared),
        *_delete_jumps(current),
        *_chain_rules(cfg, family),
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
