"""`meshctl check`: is the mesh healthy? Facts are gathered once (I/O), judged here (pure).

Each check yields a `Result` with a status: ok, warn (works, but act soon) or fail (broken
now; `meshctl check` exits 1). What each judges:
- registry: reachable with the operator credential; when not, what still runs and whether
  the supervisor is restarting it (as `meshctl status` says).
- proxies: each one the registry knows is connected (config stream open) and has ACKed the
  config version in force; a NACK is shown with its reason.
- certificates: not expired; warn below 25 % of lifetime left (renewal happens at 50 %, so a
  certificate under 25 % means renewals are failing).
- clock skew: registry's Date against ours; Linkerd allows 20 s, certificates are issued
  with that allowance in mind: warn past 5 s, fail past 20 s.
- interception: in transparent mode, the iptables rules of each workload's namespace.
- config: the registry's last config error (the previous version stays in force).
- endpoints: an endpoint whose app is down (its proxy's probe, with the reason) warns, and
  louder when its service has no healthy endpoint left (callers get 503 UH).
"""

from __future__ import annotations

import email.utils
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.proxies import ObserveError, local_proxies
from meshctl.client import RegistryClient, RegistryError, RegistryUnavailable
from proxy.compiled import OFF

OK, WARN, FAIL = "ok", "warn", "fail"
CERT_WARN_FRACTION = 0.25
SKEW_WARN_S, SKEW_FAIL_S = 5.0, 20.0


@dataclass(frozen=True, slots=True)
class Result:
    check: str
    subject: str
    status: str
    detail: str

    def to_wire(self) -> dict[str, str]:
        return asdict(self)


@dataclass(slots=True)
class Facts:
    registry_error: str | None = None
    status: dict[str, Any] = field(default_factory=dict)
    registry_date: float | None = None  # the registry's clock (Date header)
    local_time: float = 0.0
    lifetimes: dict[str, float] = field(default_factory=dict)  # proxy id -> cert lifetime (s)
    # proxy id -> its certificate's notAfter, from the proxy itself (known with no registry)
    local_not_after: dict[str, float] = field(default_factory=dict)
    mode: str | None = None
    netns: list[str] = field(default_factory=list)  # transparent mode's namespaces
    iptables: dict[str, bool | str] = field(default_factory=dict)  # netns -> installed / error
    # proxy id -> (runs the compiled core, why or why not), from its /server_info
    cores: dict[str, tuple[bool, str]] = field(default_factory=dict)


def gather(home: Path, iptables: Callable[[str], bool] | None = None,
           client: RegistryClient | None = None) -> Facts:
    """What `check` judges. `client`: a registry on another host (--registry); else this
    host's, or the one a joined host's proxies use (RegistryClient.resolve)."""
    facts = Facts(local_time=time.time())
    try:
        client = client or RegistryClient.resolve(home)
        facts.status = client.call("GET", "/v1/status", timeout=5)
        facts.registry_date = _date_of(client)
        facts.local_time = time.time()
    except (RegistryUnavailable, RegistryError) as exc:
        facts.registry_error = _outage(home, str(exc))
    for p in local_proxies(home):
        try:
            certs = p.admin_json("/certs", timeout=3)
        except ObserveError:
            continue
        life = certs.get("lifetime_seconds") if isinstance(certs, dict) else None
        if isinstance(life, (int, float)) and life > 0:
            facts.lifetimes[p.proxy_id] = float(life)
        left = certs.get("seconds_left") if isinstance(certs, dict) else None
        if isinstance(left, (int, float)):
            facts.local_not_after[p.proxy_id] = time.time() + float(left)
        try:
            core = p.admin_json("/server_info", timeout=3).get("core")
        except (ObserveError, AttributeError):
            continue
        if isinstance(core, dict):
            facts.cores[p.proxy_id] = (core.get("compiled") is True, str(core.get("detail")))
    _plan(home, facts)
    if facts.netns:
        check = iptables or _iptables_installed
        for ns in facts.netns:
            try:
                facts.iptables[ns] = check(ns)
            except Exception as exc:  # not root, no iptables: say so, do not crash
                facts.iptables[ns] = f"{type(exc).__name__}: {exc}"
    return facts


def _outage(home: Path, why: str) -> str:
    """What `meshctl status` says of the outage (who restarts it, what still runs), or
    `why` alone when nothing of a local mesh runs here."""
    from meshctl.client import read_joined
    from meshctl.launch.procs import LaunchError
    from meshctl.launch.report import outage

    try:
        return str(outage(home, why, read_joined(home))["registry"]["problem"])
    except LaunchError:
        return why


def _date_of(client: RegistryClient) -> float | None:
    req = urllib.request.Request(client.url + "/healthz")
    try:
        with urllib.request.urlopen(req, timeout=5, context=client.ssl_context) as r:
            date = r.headers.get("Date")
    except OSError:
        return None
    return email.utils.parsedate_to_datetime(date).timestamp() if date else None


def _plan(home: Path, facts: Facts) -> None:
    from meshctl.launch import plan as planmod
    from meshctl.launch.procs import LaunchPaths, read_json

    paths = LaunchPaths(home)
    state = read_json(paths.state) or {}
    raw = state.get("plan") or (read_json(paths.plan) or {}).get("plan")
    if not raw:
        return
    plan = planmod.from_wire(raw)
    facts.mode = plan.mode
    facts.netns = [w.netns for w in plan.workloads if w.netns]


def _iptables_installed(netns: str) -> bool:
    from proxy.intercept import iptables

    return iptables.installed(netns)


def evaluate(f: Facts) -> list[Result]:
    out: list[Result] = []
    if f.registry_error is not None:
        # The outage itself, and what matters during one: how long the certificates last
        # (proxies keep serving on them and renew once the registry is back).
        return [Result("registry", "registry", FAIL, f.registry_error)] + [
            _cert(pid, not_after, f.lifetimes.get(pid), f.local_time)
            for pid, not_after in sorted(f.local_not_after.items())
        ]
    st = f.status
    version = st.get("config_version")
    out.append(Result("registry", "registry", OK, f"reachable, config version {version}"))
    out.extend(_config(st))
    out.extend(_replicas(st.get("replicas")))
    out.extend(_proxies(st, version, f.lifetimes, f.local_time))
    out.extend(_endpoints(st))
    out.extend(_skew(f))
    out.extend(_iptables(f))
    out.extend(_cores(f))
    return out


def _config(st: dict[str, Any]) -> Iterable[Result]:
    err = st.get("last_config_error")
    if err:
        lines = "; ".join(err.get("errors", [])) or "rejected"
        yield Result("config", "config", FAIL, f"last change rejected, previous stays: {lines}")
    else:
        yield Result("config", "config", OK, "no config error")


def _replicas(rs: dict[str, Any] | None) -> Iterable[Result]:
    """Registry replicas on etcd (docs/etcd.md): one publishes, none lags, etcd has quorum."""
    if not rs:
        return  # one registry on files
    if not rs.get("publisher"):
        yield Result("replicas", "publisher", FAIL,
                     "no replica publishes config (an election under way, or etcd unreachable)")
    newest = max((int(r.get("config_version") or 0) for r in rs.get("replicas", [])), default=0)
    for r in rs.get("replicas", []):
        role = "publisher" if r.get("id") == rs.get("publisher") else "follower"
        version = int(r.get("config_version") or 0)
        if version < newest:
            yield Result("replica", str(r.get("id")), WARN,
                         f"{role}, serves config v{version}, newest v{newest}")
        else:
            yield Result("replica", str(r.get("id")), OK, f"{role}, config v{version}")
    members = rs.get("etcd") or []
    up = sum(bool(m.get("ok")) for m in members)
    for m in members:
        if m.get("ok"):
            leader = ", raft leader" if m.get("leader") else ""
            yield Result("etcd", str(m.get("endpoint")), OK,
                         f"etcd {m.get('version')}, raft index {m.get('raft_index')}{leader}")
        else:
            # A member down is a warning while the others keep a majority (etcd serves).
            yield Result("etcd", str(m.get("endpoint")), WARN if up * 2 > len(members) else FAIL,
                         f"unreachable: {m.get('error')}")


def _proxies(
    st: dict[str, Any], version: Any, lifetimes: dict[str, float], now: float
) -> Iterable[Result]:
    proxies = st.get("proxies", [])
    if not proxies:
        yield Result("proxies", "-", WARN, "no proxy has connected to the registry")
    for p in proxies:
        pid = p["proxy_id"]
        if not p.get("connected"):
            yield Result("proxy", pid, FAIL, "not connected to the registry")
        elif p.get("acked_version") != version:
            why = f" (NACK: {p['nack_error']})" if p.get("nack_error") else ""
            yield Result(
                "proxy", pid, FAIL, f"runs config v{p.get('acked_version')}, latest v{version}{why}"
            )
        else:
            yield Result("proxy", pid, OK, f"connected, config v{version}")
        yield _cert(pid, p.get("cert_not_after"), lifetimes.get(pid), now)


def _endpoints(st: dict[str, Any]) -> Iterable[Result]:
    """A warning per unhealthy endpoint: its app is down, the others serve (or nothing does).
    A warning, not a failure: the mesh routes around it, and a proxy with no app (a
    client-only workload) is unhealthy by design."""
    eps = [e for e in st.get("endpoints", []) if e.get("health") != "draining"]
    healthy = {e.get("service") for e in eps if e.get("health") == "healthy"}
    for e in sorted(eps, key=lambda e: (str(e.get("service")), str(e.get("id")))):
        if e.get("health") == "healthy":
            continue
        svc = e.get("service")
        left = "" if svc in healthy else f"; no healthy endpoint of `{svc}`: callers get 503 UH"
        why = e.get("reason") or "no reason given"
        yield Result("endpoint", str(e.get("id")), WARN, f"{svc} unhealthy: {why}{left}")


def _cert(pid: str, not_after: Any, lifetime: float | None, now: float) -> Result:
    if not isinstance(not_after, (int, float)) or not_after <= 0:
        return Result("certificate", pid, WARN, "expiry unknown (no ACK carried it yet)")
    left = not_after - now
    if left <= 0:
        return Result("certificate", pid, FAIL, f"expired {-left:.0f} s ago")
    if lifetime:
        frac = left / lifetime
        detail = f"{_span(left)} left ({frac:.0%} of {_span(lifetime)})"
        if frac < CERT_WARN_FRACTION:
            return Result("certificate", pid, WARN, detail + ": renewal is failing?")
        return Result("certificate", pid, OK, detail)
    return Result("certificate", pid, OK, f"{_span(left)} left")


def _span(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def _skew(f: Facts) -> Iterable[Result]:
    if f.registry_date is None:
        yield Result("clock", "registry", WARN, "the registry sent no Date header")
        return
    skew = f.registry_date - f.local_time
    status = FAIL if abs(skew) > SKEW_FAIL_S else WARN if abs(skew) > SKEW_WARN_S else OK
    yield Result("clock", "registry", status, f"skew {skew:+.1f} s (1 s resolution)")


def _iptables(f: Facts) -> Iterable[Result]:
    if f.mode != "transparent":
        return
    for ns, got in sorted(f.iptables.items()):
        if got is True:
            yield Result("iptables", ns, OK, "interception rules installed")
        elif got is False:
            yield Result("iptables", ns, FAIL, "interception rules missing: `meshctl up` again")
        else:
            yield Result("iptables", ns, WARN, f"cannot tell: {got}")


def _cores(f: Facts) -> Iterable[Result]:
    """Which request path each local proxy runs: interpreted works, at more CPU per request
    (docs/performance.md), so it is a warning unless asked for."""
    for pid, (compiled, detail) in sorted(f.cores.items()):
        if compiled:
            yield Result("core", pid, OK, f"compiled ({detail})")
        elif detail == OFF:
            yield Result("core", pid, OK, f"interpreted, as asked ({OFF})")
        else:
            yield Result("core", pid, WARN, f"interpreted, more CPU per request: {detail}")


def worst(results: Iterable[Result]) -> str:
    order = {OK: 0, WARN: 1, FAIL: 2}
    return max((r.status for r in results), key=order.__getitem__, default=OK)
