"""Canary analysis (pure): steps, checks, failed checks, promotion and rollback.

A state machine over an injected clock (`now` is passed in; nothing here reads a clock,
the network or a file), with Flagger's rules:

- The new subset (`canary`) gets `policy.steps[0]` percent, the old one (`baseline`) the
  rest. Each `policy.interval_s` one check looks at the canary's traffic in that interval.
- A check fails when the canary served fewer than `min_requests` (too little traffic to
  judge is a failure, not a pass), its success rate (responses not 5xx) is under
  `success_rate`, or its p99 is over `p99_ms`; and, where the baseline had traffic too
  (at least `min_requests` in the interval), when its success rate is more than
  BASELINE_RATE_SLACK points under the baseline's. Latency is judged on the threshold
  only: a p99 over a few dozen requests is their slowest one, and the histogram's buckets
  (100, 250, 500 ms) make two such p99s differ by a bucket on noise alone.
- A passing check moves to the next step; after the last step passes the canary is
  promoted (100 %). The `failures`-th failed check (counted over the whole analysis, as
  Flagger's failedChecks) rolls back: 100 % to the baseline.
- The operator may promote or abort (a rollback) at any time.

Phases: progressing -> promoted | rolled_back. `weight` is the canary's share the route
must carry in each state; the runner (registry.canary.runner) makes the file say so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from registry.config.model import CanaryPolicy

__all__ = [
    "BASELINE_RATE_SLACK",
    "Canary",
    "Check",
    "Event",
    "Window",
    "abort",
    "advance",
    "due",
    "judge",
    "promote",
    "resume",
    "start",
]

PROGRESSING, PROMOTED, ROLLED_BACK = "progressing", "promoted", "rolled_back"
BASELINE_RATE_SLACK = 1.0  # percentage points
KEEP_CHECKS = 20


@dataclass(frozen=True, slots=True)
class Window:
    """One subset's traffic in one interval, as its own proxies counted it."""

    requests: float
    success_rate: float | None  # 0..1; None without requests
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class Check:
    at: float
    weight: int  # the canary's weight during the interval
    ok: bool
    reasons: tuple[str, ...]  # why it failed; empty when it passed
    canary: Window
    baseline: Window | None


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    kind: str  # started | step | failed-check | promoted | rolled-back | resumed
    message: str


@dataclass(frozen=True, slots=True)
class Canary:
    service: str
    baseline: str  # the subset traffic moves from
    canary: str  # the subset traffic moves to
    route: str | None
    policy: CanaryPolicy
    origin: str  # "meshctl route canary", or the declaring resource and its file:line:column
    phase: str
    step: int  # index in policy.steps of the weight in force while progressing
    failed: int  # failed checks so far
    started_at: float
    next_check_at: float
    checks: tuple[Check, ...]  # the last KEEP_CHECKS
    events: tuple[Event, ...]

    @property
    def weight(self) -> int:
        """The canary subset's share of the route in this state, percent."""
        if self.phase == PROMOTED:
            return 100
        if self.phase == ROLLED_BACK:
            return 0
        return self.policy.steps[self.step]

    @property
    def weights(self) -> dict[str, int]:
        return {self.baseline: 100 - self.weight, self.canary: self.weight}

    @property
    def done(self) -> bool:
        return self.phase != PROGRESSING


def start(service: str, baseline: str, canary: str, policy: CanaryPolicy, now: float, *,
          route: str | None = None, origin: str = "meshctl route canary") -> Canary:
    first = policy.steps[0]
    event = Event(now, "started", f"{service}: {canary} {first}%, {baseline} {100 - first}% "
                  f"({origin}); steps {','.join(map(str, policy.steps))} every "
                  f"{policy.interval_s:g}s")
    return Canary(service, baseline, canary, route, policy, origin, PROGRESSING, 0, 0, now,
                  now + policy.interval_s, (), (event,))


def due(c: Canary, now: float) -> bool:
    return not c.done and now >= c.next_check_at


def judge(policy: CanaryPolicy, canary: Window, baseline: Window | None) -> tuple[str, ...]:
    """Why one interval fails (empty: it passes)."""
    if canary.requests < max(policy.min_requests, 1):
        return (f"too few requests: {canary.requests:.0f} in the interval, under "
                f"{policy.min_requests} (min-requests)",)
    out = []
    rate = 100 * (canary.success_rate or 0.0)
    if rate < policy.success_rate:
        out.append(f"success rate {rate:.2f}% is under {policy.success_rate:g}%")
    if canary.p99_ms is not None and canary.p99_ms > policy.p99_ms:
        out.append(f"p99 {canary.p99_ms:.0f}ms is over {policy.p99_ms:g}ms")
    if baseline is not None and baseline.requests >= max(policy.min_requests, 1):
        base_rate = 100 * (baseline.success_rate or 0.0)
        if rate < base_rate - BASELINE_RATE_SLACK:
            out.append(f"success rate {rate:.2f}% is more than {BASELINE_RATE_SLACK:g} point "
                       f"under the baseline's {base_rate:.2f}%")
    return tuple(out)


def advance(c: Canary, now: float, canary: Window, baseline: Window | None) -> Canary:
    """The check at the end of an interval, and the step, promotion or rollback it leads to."""
    if c.done:
        return c
    reasons = judge(c.policy, canary, baseline)
    check = Check(now, c.weight, not reasons, reasons, canary, baseline)
    checks = (*c.checks, check)[-KEEP_CHECKS:]
    nxt = now + c.policy.interval_s
    if reasons:
        failed = c.failed + 1
        event = Event(now, "failed-check", f"{c.service}: check {failed}/{c.policy.failures} "
                      f"failed at {c.canary} {c.weight}%: {'; '.join(reasons)}")
        c = replace(c, failed=failed, checks=checks, next_check_at=nxt,
                    events=(*c.events, event))
        if failed >= c.policy.failures:
            return _end(c, now, ROLLED_BACK, f"{failed} failed checks (failures "
                        f"{c.policy.failures}); last: {'; '.join(reasons)}")
        return c
    if c.step + 1 >= len(c.policy.steps):
        c = replace(c, checks=checks)
        return _end(c, now, PROMOTED, f"every step passed ({','.join(map(str, c.policy.steps))})")
    step = c.step + 1
    weight = c.policy.steps[step]
    event = Event(now, "step", f"{c.service}: check passed at {c.canary} {c.weight}%; "
                  f"{c.canary} {weight}%, {c.baseline} {100 - weight}%")
    return replace(c, step=step, checks=checks, next_check_at=nxt, events=(*c.events, event))


def promote(c: Canary, now: float, why: str = "promoted by the operator") -> Canary:
    return c if c.done else _end(c, now, PROMOTED, why)


def abort(c: Canary, now: float, why: str = "aborted by the operator") -> Canary:
    return c if c.done else _end(c, now, ROLLED_BACK, why)


def resume(c: Canary, now: float) -> Canary:
    """After a registry restart: the interval in progress was not watched, so a new one
    starts now at the same step (the checks and failures so far are kept)."""
    if c.done:
        return c
    event = Event(now, "resumed", f"{c.service}: analysis resumed at {c.canary} {c.weight}% "
                  f"after a registry restart ({c.failed} failed checks so far)")
    return replace(c, next_check_at=now + c.policy.interval_s, events=(*c.events, event))


def _end(c: Canary, now: float, phase: str, why: str) -> Canary:
    if phase == PROMOTED:
        event = Event(now, "promoted", f"{c.service}: {c.canary} promoted to 100%: {why}")
    else:
        event = Event(now, "rolled-back", f"{c.service}: rolled back to {c.baseline} 100% "
                      f"({c.canary} 0%): {why}")
    return replace(c, phase=phase, events=(*c.events, event))
