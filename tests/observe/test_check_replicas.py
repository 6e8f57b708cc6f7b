"""`meshctl check` on registry replicas (docs/etcd.md): the publisher, lag, etcd members."""

from __future__ import annotations

from typing import Any

from meshctl.observe.checks import FAIL, OK, WARN, Facts, evaluate


def _results(replicas: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    facts = Facts(status={"config_version": 3, "proxies": [], "endpoints": [],
                          "replicas": replicas}, registry_date=0.0, local_time=0.0)
    return [(r.check, r.subject, r.status, r.detail) for r in evaluate(facts)
            if r.check in ("replicas", "replica", "etcd")]


def _member(n: int, ok: bool = True, leader: bool = False) -> dict[str, Any]:
    url = f"http://10.0.0.{n}:2379"
    if not ok:
        return {"endpoint": url, "ok": False, "error": "connect refused"}
    return {"endpoint": url, "ok": True, "version": "3.4.23", "raft_index": 40, "leader": leader}


def test_one_registry_on_files_adds_nothing() -> None:
    assert _results(None) == []


def test_replicas_lag_and_etcd_members() -> None:
    got = _results({
        "publisher": "a:15012", "replica": "a:15012",
        "replicas": [{"id": "a:15012", "config_version": 3},
                     {"id": "b:15012", "config_version": 2}],
        "etcd": [_member(1, leader=True), _member(2), _member(3, ok=False)],
    })
    assert got == [
        ("replica", "a:15012", OK, "publisher, config v3"),
        ("replica", "b:15012", WARN, "follower, serves config v2, newest v3"),
        ("etcd", "http://10.0.0.1:2379", OK, "etcd 3.4.23, raft index 40, raft leader"),
        ("etcd", "http://10.0.0.2:2379", OK, "etcd 3.4.23, raft index 40"),
        ("etcd", "http://10.0.0.3:2379", WARN, "unreachable: connect refused"),
    ]


def test_no_publisher_and_no_etcd_majority_fail() -> None:
    got = _results({"publisher": "", "replica": "a", "replicas": [{"id": "a", "config_version": 1}],
                    "etcd": [_member(1), _member(2, ok=False), _member(3, ok=False)]})
    assert ("replicas", "publisher", FAIL,
            "no replica publishes config (an election under way, or etcd unreachable)") in got
    assert [s for c, _, s, _ in got if c == "etcd"] == [OK, FAIL, FAIL]
