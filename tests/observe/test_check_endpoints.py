"""`meshctl check` on app health: a warning per unhealthy endpoint, with its reason."""

from __future__ import annotations

from meshctl.observe.checks import OK, WARN, Facts, evaluate, worst

WHY = "app: connect refused on 127.0.0.1:8080 (3 failures)"


def _facts(*endpoints: dict[str, str]) -> Facts:
    return Facts(status={"config_version": 1, "proxies": [], "endpoints": list(endpoints)},
                 registry_date=0.0, local_time=0.0)


def _ep(eid: str, service: str, health: str = "healthy", reason: str = "") -> dict[str, str]:
    return {"id": eid, "service": service, "health": health, "reason": reason}


def test_unhealthy_endpoint_warns_with_its_reason() -> None:
    got = [r for r in evaluate(_facts(_ep("orders-1", "orders", "unhealthy", WHY),
                                      _ep("orders-2", "orders"), _ep("pay-1", "payments",
                                                                     "draining")))
           if r.check == "endpoint"]
    assert [(r.subject, r.status, r.detail) for r in got] == [
        ("orders-1", WARN, f"orders unhealthy: {WHY}")]


def test_no_healthy_endpoint_left_says_what_callers_get() -> None:
    results = evaluate(_facts(_ep("orders-1", "orders", "unhealthy", WHY)))
    got = [r for r in results if r.check == "endpoint"]
    assert got[0].detail == (f"orders unhealthy: {WHY}; no healthy endpoint of `orders`: "
                             "callers get 503 UH")
    assert worst(results) == WARN


def test_all_healthy_adds_nothing() -> None:
    results = evaluate(_facts(_ep("orders-1", "orders")))
    assert not [r for r in results if r.check == "endpoint"]
    assert {r.status for r in results if r.check != "proxies"} == {OK}
