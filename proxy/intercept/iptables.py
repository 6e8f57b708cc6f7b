"""Install, remove and inspect the interception rules inside a network namespace (I/O).

Which namespace: `netns=None` is the caller's own; a `str` is a name made by `ip netns add`
(or pyroute2), the file /run/netns/NAME; an `int` is a process id, whose /proc/PID/ns/net
is the namespace of a running container (Docker's `State.Pid`). Either way the iptables
tools run under `nsenter --net=FILE`: it enters the network namespace only, so the host's
iptables binaries, its alternatives choice (nft or legacy) and its xtables lock are used,
whatever the container's image holds (a distroless image has no iptables at all).

Every change is one `iptables-restore --noflush` transaction of text from `rules.py`,
built from a fresh `iptables-save -t nat` of the same namespace, then the same for IPv6
with `ip6tables-restore` (both families, as Istio). One installer per namespace at a time:
two running at once could both read the dump before either writes.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Literal

from proxy.intercept.rules import (
    Family,
    InterceptConfig,
    is_installed,
    render_remove,
    render_restore,
)

Backend = Literal["nft", "legacy"]
Netns = str | int | None

CAP_NET_ADMIN = 12  # linux/capability.h: configure interfaces, routes, netfilter
CAP_SYS_ADMIN = 21  # setns(2) into a network namespace needs it (nsenter)
NETNS_RUN_DIR = Path("/run/netns")
_TIMEOUT = 30.0
_NETNS_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class InterceptError(Exception):
    """Interception rules could not be applied or read; `rules` and `stderr` say why."""

    def __init__(self, message: str, *, rules: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.rules = rules
        self.stderr = stderr

    def __str__(self) -> str:
        text = self.message
        if self.stderr.strip():
            text += "\n" + self.stderr.strip()
        if self.rules:
            # Numbered, because iptables-restore reports "Error occurred at line: N".
            numbered = "\n".join(
                f"{n:4} {line}" for n, line in enumerate(self.rules.splitlines(), start=1)
            )
            text += "\nThe rules were:\n" + numbered
        return text


class PrivilegeError(InterceptError):
    """This process lacks a capability that installing rules needs."""


def effective_capabilities(status: str) -> int:
    """The CapEff bit mask from the text of /proc/<pid>/status."""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split(":", 1)[1].strip(), 16)
    raise InterceptError("no CapEff line in /proc/self/status: is /proc mounted?")


def check_privileges(*, enter_namespace: bool = False, status: str | None = None) -> None:
    """Raise PrivilegeError unless the effective set has what the rules need.

    CAP_NET_ADMIN to change netfilter rules, plus CAP_SYS_ADMIN when the rules go into
    another network namespace (setns). Capabilities, not uid 0, are checked: root in a
    container started without NET_ADMIN cannot install rules either.
    """
    if status is None:
        status = Path("/proc/self/status").read_text()
    caps = effective_capabilities(status)
    needed = {"CAP_NET_ADMIN": CAP_NET_ADMIN}
    if enter_namespace:
        needed["CAP_SYS_ADMIN"] = CAP_SYS_ADMIN
    missing = [name for name, bit in needed.items() if not caps >> bit & 1]
    if missing:
        raise PrivilegeError(
            f"cannot read or change interception rules: this process (uid {os.geteuid()}) "
            f"lacks {' and '.join(missing)} in its effective capability set (CAP_NET_ADMIN "
            "changes netfilter rules, CAP_SYS_ADMIN enters another network namespace). Run "
            "as root (sudo meshctl ...), grant the capabilities (docker run --cap-add "
            "NET_ADMIN; systemd AmbientCapabilities=CAP_NET_ADMIN CAP_SYS_ADMIN), or run the "
            "proxy in explicit mode, without interception."
        )


def namespace_file(netns: Netns) -> Path | None:
    """The file that names the namespace, checked to exist; None for our own."""
    if netns is None:
        return None
    if isinstance(netns, bool):
        raise TypeError("netns must be a namespace name, a pid or None, not a bool")
    if isinstance(netns, int):
        path = Path(f"/proc/{netns}/ns/net")
        if not path.exists():
            raise InterceptError(f"no process {netns}: its network namespace {path} is gone")
        return path
    if not _NETNS_NAME.fullmatch(netns) or netns in (".", ".."):
        raise InterceptError(f"{netns!r} is not a network namespace name")
    path = NETNS_RUN_DIR / netns
    if not path.exists():
        raise InterceptError(
            f"no network namespace {netns!r} ({path} does not exist; see `ip netns list`)"
        )
    return path


def _where(netns: Netns) -> str:
    if netns is None:
        return "this network namespace"
    if isinstance(netns, int):
        return f"the network namespace of pid {netns}"
    return f"network namespace {netns!r}"


def _run(
    netns: Netns, argv: list[str], *, stdin: str | None = None, rules: str = ""
) -> subprocess.CompletedProcess[str]:
    path = namespace_file(netns)
    prefix = [] if path is None else ["nsenter", f"--net={path}", "--"]
    try:
        done = subprocess.run(
            [*prefix, *argv], input=stdin, capture_output=True, text=True, timeout=_TIMEOUT
        )
    except FileNotFoundError as exc:
        raise InterceptError(
            f"{exc.filename or argv[0]} is not installed: install iptables (and util-linux "
            "for nsenter), e.g. `apt-get install iptables`, or run the proxy in explicit mode"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise InterceptError(
            f"{argv[0]} did not finish in {_TIMEOUT:.0f}s in {_where(netns)}", rules=rules
        ) from exc
    if done.returncode != 0:
        raise InterceptError(
            f"{argv[0]} failed in {_where(netns)} (exit {done.returncode})",
            rules=rules,
            stderr=done.stderr,
        )
    return done


def _tool(backend: Backend | None, name: str, family: Family = 4) -> str:
    """`iptables-save` for the host's default, `iptables-nft-save` for an explicit backend;
    `ip6tables-*` for family 6."""
    base = "iptables" if family == 4 else "ip6tables"
    name = name.replace("iptables", base, 1)
    return name if backend is None else name.replace(base, f"{base}-{backend}", 1)


def families() -> tuple[Family, ...]:
    """The address families this kernel has: IPv6 unless it was built or booted without it
    (`ipv6.disable=1`), in which case no socket can carry IPv6 and there is nothing to catch."""
    return (4, 6) if Path("/proc/sys/net/ipv6").is_dir() else (4,)


def detect_backend() -> Backend:
    """Which netfilter backend `iptables` drives here: "nft" or "legacy" (from `iptables -V`).

    Rules should go where the host's other tools put theirs (Docker uses `iptables`):
    both backends' nat tables are evaluated, so mixing works, but one dump shows only one.
    """
    version = _run(None, ["iptables", "-V"]).stdout
    return "nft" if "nf_tables" in version else "legacy"  # before 1.8: no suffix, legacy


def dump(netns: Netns = None, *, backend: Backend | None = None, family: Family = 4) -> str:
    """`iptables-save -t nat` (family 6: `ip6tables-save -t nat`) inside the namespace."""
    check_privileges(enter_namespace=netns is not None)
    return _run(netns, [_tool(backend, "iptables-save", family), "-t", "nat"]).stdout


def installed(netns: Netns = None, *, backend: Backend | None = None) -> bool:
    """True when our chains and the OUTPUT jump are present in the namespace, in every
    family the kernel has (a namespace with IPv4 rules only is not intercepted)."""
    return all(is_installed(dump(netns, backend=backend, family=f)) for f in families())


def _restore(netns: Netns, backend: Backend | None, rules: str, family: Family) -> None:
    # -w: wait for the xtables lock (legacy) instead of failing when Docker holds it.
    argv = [_tool(backend, "iptables-restore", family), "-w", "10", "--noflush"]
    _run(netns, argv, stdin=rules, rules=rules)


def install(cfg: InterceptConfig, netns: Netns = None, *, backend: Backend | None = None) -> None:
    """Install `cfg`'s rules in the namespace, for IPv4 and IPv6, replacing ours already there.

    One atomic transaction per family, and idempotent. Raises PrivilegeError before
    touching anything when capabilities are missing, and InterceptError, carrying the rules
    text and iptables' stderr, when iptables rejects them. IPv4 goes first; if IPv6 then
    fails, the IPv4 rules stay (they fail closed: the app's traffic goes to the proxy), the
    error names ip6tables, and the next install replaces both.
    """
    for family in families():
        current = dump(netns, backend=backend, family=family)
        _restore(netns, backend, render_restore(cfg, replacing=current, family=family), family)


def remove(netns: Netns = None, *, backend: Backend | None = None) -> None:
    """Delete our jumps and chains in both families; nothing else. Fine when none are there."""
    for family in families():
        text = render_remove(dump(netns, backend=backend, family=family))
        if text:
            _restore(netns, backend, text, family)
