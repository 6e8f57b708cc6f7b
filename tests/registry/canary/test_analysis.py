"""The canary state machine, driven by the clock and fed metrics (registry.canary.analysis)."""

from __future__ import annotations

import pytest

from registry.canary import analysis as a
from registry.canary.analysis import Window
from registry.config.model import CanaryPolicy

POLICY = CanaryPolicy(steps=(10, 50, 100), interval_s=30.0, success_rate=99.0, p99_ms=500.0,
                      min_requests=20, failures=2)
GOOD = Window(100, 1.0, 20.0)
BASE = Window(400, 1.0, 20.0)


def started() -> a.Canary:
    return a.start("orders", "v1", "v2", POLICY, 1000.0)


def test_healthy_canary_walks_every_step_then_is_promoted() -> None:
    c = started()
    assert c.weights == {"v1": 90, "v2": 10} and c.phase == "progressing"
    weights = [c.weight]
    now = 1000.0
    while not c.done:
        assert not a.due(c, now + 29.9)  # nothing before the interval is over
        now += 30.0
        assert a.due(c, now)
        c = a.advance(c, now, GOOD, BASE)
        weights.append(c.weight)
    assert weights == [10, 50, 100, 100]
    assert c.phase == "promoted" and c.failed == 0 and len(c.checks) == 3
    assert [e.kind for e in c.events] == ["started", "step", "step", "promoted"]


def test_last_step_under_100_promotes_to_100() -> None:
    c = a.start("orders", "v1", "v2", CanaryPolicy(steps=(20, 40), interval_s=1.0), 0.0)
    c = a.advance(a.advance(c, 1.0, GOOD, None), 2.0, GOOD, None)
    assert c.phase == "promoted" and c.weights == {"v1": 0, "v2": 100}


@pytest.mark.parametrize(("canary", "baseline", "reason"), [
    (Window(19, 1.0, 5.0), BASE, "too few requests: 19 in the interval, under 20"),
    (Window(0, None, None), BASE, "too few requests: 0"),
    (Window(100, 0.5, 5.0), BASE, "success rate 50.00% is under 99%"),
    (Window(100, 1.0, 900.0), BASE, "p99 900ms is over 500ms"),
    (Window(100, 0.97, 5.0), Window(400, 1.0, 5.0), "more than 1 point under the baseline's"),
])
def test_a_check_fails(canary: Window, baseline: Window, reason: str) -> None:
    policy = CanaryPolicy(success_rate=99.0 if canary.success_rate != 0.97 else 90.0)
    reasons = a.judge(policy, canary, baseline)
    assert any(reason in r for r in reasons), reasons


def test_latency_is_judged_on_the_threshold_only() -> None:
    assert a.judge(CanaryPolicy(), Window(100, 1.0, 400.0), Window(400, 1.0, 50.0)) == ()


def test_baseline_without_traffic_is_not_compared() -> None:
    policy = CanaryPolicy(success_rate=90.0)
    # At 100 % the baseline has no traffic: only the thresholds count.
    assert a.judge(policy, Window(100, 0.95, 400.0), Window(3, 1.0, 5.0)) == ()
    assert a.judge(policy, Window(100, 0.95, 400.0), None) == ()
    assert a.judge(policy, Window(100, 0.95, 5.0), Window(400, 1.0, 5.0))  # with traffic: worse


def test_failures_roll_back_and_stay_at_the_step_meanwhile() -> None:
    c = a.advance(started(), 1030.0, GOOD, BASE)  # step 2: 50 %
    bad = Window(100, 0.4, 5.0)
    c = a.advance(c, 1060.0, bad, BASE)
    assert c.phase == "progressing" and c.weight == 50 and c.failed == 1
    assert c.next_check_at == 1090.0
    c = a.advance(c, 1090.0, bad, BASE)
    assert c.phase == "rolled_back" and c.weights == {"v1": 100, "v2": 0}
    assert c.events[-1].kind == "rolled-back" and "2 failed checks" in c.events[-1].message
    assert a.advance(c, 2000.0, GOOD, BASE) is c  # over: nothing moves it any more


def test_failed_checks_count_over_the_whole_analysis() -> None:
    c = started()
    c = a.advance(c, 1030.0, Window(1, 1.0, 1.0), BASE)  # too few: failure 1
    c = a.advance(c, 1060.0, GOOD, BASE)  # passes: 50 %
    assert c.weight == 50 and c.failed == 1
    c = a.advance(c, 1090.0, Window(5, 1.0, 1.0), BASE)  # failure 2 of 2
    assert c.phase == "rolled_back"


def test_operator_promote_and_abort() -> None:
    p = a.promote(started(), 1001.0)
    assert p.phase == "promoted" and p.weight == 100
    assert "promoted by the operator" in p.events[-1].message
    r = a.abort(started(), 1001.0)
    assert r.phase == "rolled_back" and r.weight == 0
    assert a.abort(p, 1002.0) is p and a.promote(r, 1002.0) is r


def test_resume_restarts_the_interval_keeping_the_step() -> None:
    c = a.advance(a.advance(started(), 1030.0, GOOD, BASE), 1060.0, Window(0, None, None), BASE)
    r = a.resume(c, 5000.0)
    assert (r.step, r.failed, r.weight) == (c.step, 1, 50)
    assert r.next_check_at == 5030.0 and r.events[-1].kind == "resumed"
    assert not a.due(r, 5029.0) and a.due(r, 5030.0)
