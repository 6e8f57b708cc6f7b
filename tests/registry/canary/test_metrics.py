"""One version's traffic between two scrapes, from the destination's own proxies."""

from __future__ import annotations

from common.promparse import Sample
from registry.canary.metrics import subset_traffic

V2 = {"reporter": "destination", "destination_service_name": "orders",
      "destination_version": "v2"}


def _scrape(ok: float, failed: float, fast: float, slow: float) -> dict[str, list[Sample]]:
    b = "istio_request_duration_milliseconds_bucket"
    return {"orders-v2": [
        Sample("istio_requests_total", {**V2, "response_code": "200"}, ok),
        Sample("istio_requests_total", {**V2, "response_code": "503"}, failed),
        Sample(b, {**V2, "le": "100"}, fast),
        Sample(b, {**V2, "le": "1000"}, fast + slow),
        Sample(b, {**V2, "le": "+Inf"}, fast + slow),
        # v1 and the callers' view do not count for v2
        Sample("istio_requests_total", {**V2, "destination_version": "v1",
                                        "response_code": "503"}, 1000),
        Sample("istio_requests_total", {**V2, "reporter": "source", "response_code": "503"},
               1000),
    ]}


def test_the_interval_only() -> None:
    t = subset_traffic(_scrape(100, 0, 100, 0), _scrape(190, 10, 180, 20), "orders", "v2")
    assert t.requests == 100 and t.success_rate == 0.9
    assert t.p99_ms is not None and 900 < t.p99_ms <= 1000  # the slow fifth's bucket


def test_a_restarted_proxy_counts_as_no_traffic() -> None:
    t = subset_traffic(_scrape(500, 0, 500, 0), _scrape(3, 0, 3, 0), "orders", "v2")
    assert t.requests == 0 and t.success_rate is None
