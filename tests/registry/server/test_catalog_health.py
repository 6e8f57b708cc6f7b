"""The catalog keeps an endpoint's health with its reason; only a change moves the version."""

from __future__ import annotations

from pathlib import Path

from proxy.policy.clock import FakeClock
from registry.server.catalog import REASON_MAX, Catalog, Endpoint

WHY = "app: connect refused on 127.0.0.1:8080 (3 failures)"


def test_health_reason_is_kept_and_cleared(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "catalog.json", FakeClock())
    cat.register(Endpoint("orders-1", "orders", "127.0.0.1", 15006))
    v = cat.version
    ep = cat.heartbeat("orders-1", "unhealthy", WHY)
    assert ep is not None and (ep.health, ep.reason) == ("unhealthy", WHY)
    assert cat.version == v + 1
    assert cat.heartbeat("orders-1", "unhealthy", WHY) is not None
    assert cat.heartbeat("orders-1") is not None  # a bare keep-alive keeps the verdict
    assert cat.version == v + 1
    reloaded = Catalog(tmp_path / "catalog.json").get("orders-1")  # a registry restart
    assert reloaded is not None and (reloaded.health, reloaded.reason) == ("unhealthy", WHY)
    back = cat.heartbeat("orders-1", "healthy", "stale words")
    assert back is not None and (back.health, back.reason) == ("healthy", "")
    assert cat.version == v + 2
    assert b'"reason":""' in cat.wire()


def test_reason_is_bounded() -> None:
    cat = Catalog(None, FakeClock())
    cat.register(Endpoint("orders-1", "orders", "127.0.0.1", 15006))
    ep = cat.heartbeat("orders-1", "unhealthy", "x" * 10_000)
    assert ep is not None and len(ep.reason) == REASON_MAX


def test_reason_holds_no_control_characters() -> None:
    cat = Catalog(None, FakeClock())
    cat.register(Endpoint("orders-1", "orders", "127.0.0.1", 15006))
    ep = cat.heartbeat("orders-1", "unhealthy", "app: \x1b[2J down\r\n")
    assert ep is not None and ep.reason == "app: ?[2J down??"
