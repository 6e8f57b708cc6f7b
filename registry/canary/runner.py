"""The canary runner: the thin asyncio part around registry.canary.analysis.

It lives in the registry process (which owns the config directory and is kept running by
the supervisor or systemd), so a canary goes on when the CLI that started it exits. Its
state is MESH_HOME/registry/canaries.json, written after every change; a restarted
registry resumes each canary in progress at its step (analysis.resume).

Each tick it: starts the canaries the config declares (kind: Canary) once their new version
is in the catalog; for each canary whose interval is over, scrapes the metrics of the
service's proxies on this host, judges the interval (analysis.advance) and, when the weight
moves, edits the VirtualService in place with the same code as `meshctl route set-weight`
(registry.config.apply), which the watcher then publishes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from common.promparse import parse
from common.proxies import ObserveError, local_proxies
from common.state import atomic_write
from common.stats import Scrape
from registry.canary import analysis
from registry.canary.analysis import Canary
from registry.canary.metrics import subset_traffic
from registry.config.apply import apply_weights
from registry.config.canary import policy_problems
from registry.config.edit import EditError, plan_weights
from registry.config.model import CanaryPolicy, CanarySpec, MeshConfig
from registry.config.wire import from_wire, to_wire
from registry.server.catalog import Endpoint

__all__ = ["CanaryError", "Runner", "canary_wire", "scrape_service"]

log = logging.getLogger("meshctl.registry.canary")
TICK_S = 0.2


class CanaryError(Exception):
    """A canary cannot start or change; the message says why and what to do."""


def scrape_service(home: Path, service: str) -> Scrape:
    """The metrics of `service`'s proxies on this host (a proxy that does not answer is
    left out: its counters then look reset, and the interval counts as no traffic)."""
    out: dict[str, list[Any]] = {}
    for p in local_proxies(home):
        if p.service == service:
            try:
                out[p.proxy_id] = list(parse(p.metrics_text(timeout=2.0)))
            except ObserveError as exc:
                log.warning("canary: no metrics from %s: %s", p.proxy_id, exc)
    return out


class Runner:
    def __init__(
        self,
        state_path: Path,
        config_dir: Path,
        config: Callable[[], MeshConfig | None],
        endpoints: Callable[[], Iterable[Endpoint]],
        scrape: Callable[[str], Scrape],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path, self.config_dir = state_path, config_dir
        self._config, self._endpoints, self._scrape, self._clock = config, endpoints, scrape, clock
        self.canaries: dict[str, Canary] = {}  # by service: in progress, or the last one
        self.started: set[str] = set()  # declared canaries already started (name + spec)
        self.seen: dict[str, set[str]] = {}  # versions seen in the catalog, by service
        self._window: dict[str, Scrape] = {}  # the scrape the running interval began with
        self._unapplied: set[str] = set()  # services whose file does not carry the weight yet
        self._lock = asyncio.Lock()

    # -- state -----------------------------------------------------------------------------

    def load(self) -> None:
        """Read the state file and resume the canaries that were in progress."""
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("canary state %s unreadable (%s): starting without it", self.path, exc)
            return
        now = self._clock()
        for service, data in raw.get("canaries", {}).items():
            try:
                c = from_wire(Canary, data)
            except (ValueError, TypeError) as exc:
                log.error("canary of %s in %s unreadable (%s): dropped", service, self.path, exc)
                continue
            if not c.done:
                c = analysis.resume(c, now)
                log.info("%s", c.events[-1].message)
                self._unapplied.add(service)
            self.canaries[service] = c
        self.started = set(raw.get("started", []))
        self.seen = {k: set(v) for k, v in raw.get("seen", {}).items()}
        self._save()

    def _save(self) -> None:
        data = {"canaries": {s: to_wire(c) for s, c in sorted(self.canaries.items())},
                "started": sorted(self.started),
                "seen": {k: sorted(v) for k, v in sorted(self.seen.items())}}
        atomic_write(self.path, json.dumps(data, sort_keys=True).encode(), mode=0o600)

    async def status(self) -> list[dict[str, Any]]:
        """Every canary, once no edit is half done (a rollback reads as rolled back when
        the file says so)."""
        async with self._lock:
            return [canary_wire(c) for _, c in sorted(self.canaries.items())]

    def status_of(self, service: str) -> dict[str, Any]:
        return canary_wire(self.canaries[service])

    # -- operator actions --------------------------------------------------------------------

    async def begin(self, service: str, to: str, from_: str | None, route: str | None,
                    policy: CanaryPolicy, origin: str = "meshctl route canary") -> Canary:
        async with self._lock:
            return await self._begin(service, to, from_, route, policy, origin)

    async def _begin(self, service: str, to: str, from_: str | None, route: str | None,
                     policy: CanaryPolicy, origin: str) -> Canary:
        if problems := policy_problems(policy):
            raise CanaryError("; ".join(problems))
        running = self.canaries.get(service)
        if running is not None and not running.done:
            raise CanaryError(f"a canary of `{service}` is in progress ({running.canary} "
                              f"{running.weight}%): promote or abort it first")
        baseline = self._baseline(service, to, from_, route)
        c = analysis.start(service, baseline, to, policy, self._clock(), route=route,
                           origin=origin)
        await self._apply(c)  # refused (EditError): nothing started, nothing saved
        self._window[service] = await asyncio.to_thread(self._scrape, service)
        self.canaries[service] = c
        self._save()
        log.info("canary %s", c.events[-1].message)
        return c

    async def promote(self, service: str) -> Canary:
        return await self._end(service, analysis.promote)

    async def abort(self, service: str) -> Canary:
        return await self._end(service, analysis.abort)

    async def _end(self, service: str, how: Callable[[Canary, float], Canary]) -> Canary:
        async with self._lock:
            c = self.canaries.get(service)
            if c is None or c.done:
                state = f"its last one was {c.phase.replace('_', ' ')}" if c else "none ran"
                raise CanaryError(f"no canary of `{service}` is in progress ({state})")
            return await self._move(c, how(c, self._clock()))

    # -- the loop -----------------------------------------------------------------------------

    async def run(self, tick_s: float = TICK_S) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a bug must not end the canaries for good: log, go on
                log.exception("canary tick failed")
            await asyncio.sleep(tick_s)

    async def tick(self) -> None:
        async with self._lock:
            await self._declared()
            now = self._clock()
            for service, c in list(self.canaries.items()):
                if c.done:
                    continue
                if service in self._unapplied:
                    await self._apply(c, retry=True)
                if service not in self._window:  # resumed: its interval begins now
                    self._window[service] = await asyncio.to_thread(self._scrape, service)
                if not analysis.due(c, now):
                    continue
                second = await asyncio.to_thread(self._scrape, service)
                first = self._window[service]
                vs = {s: _version(self._config(), service, s) for s in (c.canary, c.baseline)}
                after = analysis.advance(
                    c, now, subset_traffic(first, second, service, vs[c.canary]),
                    subset_traffic(first, second, service, vs[c.baseline]))
                self._window[service] = second
                await self._move(c, after)

    async def _move(self, before: Canary, after: Canary) -> Canary:
        for e in after.events[len(before.events):]:
            (log.warning if e.kind in ("failed-check", "rolled-back") else log.info)(
                "canary %s", e.message)
        if after.weight != before.weight:
            self.canaries[after.service] = after
            self._save()  # the decision first: a crash before the edit re-applies it
            await self._apply(after, retry=True)
            if not after.done:
                self._window[after.service] = await asyncio.to_thread(self._scrape,
                                                                      after.service)
        self.canaries[after.service] = after
        self._save()
        return after

    async def _apply(self, c: Canary, *, retry: bool = False) -> None:
        """Make the VirtualService carry the canary's weights (nothing written when it
        already does). With retry, a refusal is logged and tried again next tick."""
        try:
            await asyncio.to_thread(apply_weights, self.config_dir, c.service, c.weights,
                                    c.route, dry_run=False)
        except EditError as exc:
            if not retry:
                raise CanaryError(str(exc)) from None
            if c.service not in self._unapplied:
                log.error("canary %s: cannot set %s: %s (trying again)", c.service,
                          c.weights, exc)
            self._unapplied.add(c.service)
            return
        self._unapplied.discard(c.service)

    # -- what the config declares -----------------------------------------------------------

    async def _declared(self) -> None:
        cfg = self._config()
        if cfg is None:
            return
        for spec in cfg.canaries:
            running = self.canaries.get(spec.service)
            versions = {ep.labels.get("version", "") for ep in self._endpoints()
                        if ep.service == spec.service and ep.health == "healthy"} - {""}
            seen = self.seen.setdefault(spec.service, set())
            new, key = versions - seen, _key(spec)
            if new:
                seen |= new
                self._save()
            if running is not None and not running.done:
                continue
            targets: list[str] = []
            if spec.to is not None:
                if key not in self.started and _version(cfg, spec.service, spec.to) in versions:
                    targets = [spec.to]
            else:
                targets = [s for s in _subsets_of(cfg, spec.service, new)
                           if s != self._primary(cfg, spec)]
            if not targets:
                continue
            self.started.add(key)
            origin = f"Canary {spec.name} ({spec.source})"
            try:
                await self._begin(spec.service, targets[0], spec.from_, spec.route, spec.policy,
                                  origin)
            except CanaryError as exc:
                log.error("canary %s declared by %s not started: %s", spec.service, origin, exc)
                self._save()

    def _primary(self, cfg: MeshConfig, spec: CanarySpec) -> str | None:
        if spec.from_ is not None:
            return spec.from_
        try:
            plan = plan_weights(cfg, spec.service, {}, spec.route)
        except EditError:
            return None
        return max(plan.old, key=lambda sw: sw[1])[0] if plan.old else None

    def _baseline(self, service: str, to: str, from_: str | None, route: str | None) -> str:
        cfg = self._config()
        if cfg is None:
            raise CanaryError("the registry has no valid config")
        try:
            plan = plan_weights(cfg, service, {to: 100}, route)
        except EditError as exc:
            raise CanaryError(str(exc)) from None
        old = dict(plan.old)
        if from_ is None:
            others = [(w, s) for s, w in plan.old if s != to]
            if not others:
                raise CanaryError(f"route {plan.label} of `{service}` sends only to `{to}`: "
                                  "there is no baseline to move from; give --from")
            from_ = max(others)[1]
        elif from_ == to:
            raise CanaryError(f"--from and --to are both `{to}`")
        if from_ not in old and from_ not in {s for s, _ in plan.new}:
            plan_weights(cfg, service, {from_: 100}, route)  # unknown subset: its message
        for subset in (from_, to):
            if _version(cfg, service, subset) == "":
                raise CanaryError(f"subset `{subset}` of `{service}` does not select a "
                                  "`version` label: the canary reads metrics by version")
        if old.get(to) == 100:
            raise CanaryError(f"`{to}` already has 100% of route {plan.label} of `{service}`")
        return from_


def _version(cfg: MeshConfig | None, service: str, subset: str) -> str:
    rule = cfg.destination_rule_for(service) if cfg else None
    s = rule.subset(subset) if rule else None
    return dict(s.labels).get("version", "") if s else ""


def _subsets_of(cfg: MeshConfig, service: str, versions: set[str]) -> list[str]:
    """The subsets of `service` that select one of `versions`, in the rule's order."""
    rule = cfg.destination_rule_for(service)
    return [s.name for s in (rule.subsets if rule else ())
            if dict(s.labels).get("version") in versions]


def _key(spec: CanarySpec) -> str:
    """A declared canary starts once per content (a file edit that changes it starts it
    again; one that only moves it does not)."""
    body = json.dumps({k: v for k, v in to_wire(spec).items() if k != "source"},
                      sort_keys=True)
    return f"{spec.name}:{body}"


def canary_wire(c: Canary) -> dict[str, Any]:
    data: dict[str, Any] = to_wire(c)
    data["weight"] = c.weight
    data["weights"] = c.weights
    return data
