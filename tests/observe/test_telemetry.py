"""observe_request on a label set's series (the per-request path) against the exposition."""

from __future__ import annotations

from proxy.telemetry import REQUEST_LABELS, Telemetry, observe_request


def _sample(text: str, prefix: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, (prefix, lines)
    return float(lines[0].rsplit(" ", 1)[1])


def test_record_request_counts_sums_and_buckets() -> None:
    tel = Telemetry()
    a = tuple(f"a{i}" for i in range(len(REQUEST_LABELS)))
    b = tuple(f"b{i}" for i in range(len(REQUEST_LABELS)))
    for ms, req, resp in ((0.3, 0, 1024), (7.0, 10, 1024), (70000.0, 5000, 0)):
        observe_request(tel.series(a), ms, req, resp)
    observe_request(tel.series(b), 1.0, 1, 1)
    text = tel.render()
    sel = 'reporter="a0"'
    assert _sample(text, f"istio_requests_total{{{sel}") == 3
    assert _sample(text, f"istio_request_duration_milliseconds_count{{{sel}") == 3
    assert _sample(text, f"istio_request_duration_milliseconds_sum{{{sel}") == 70007.3
    assert _sample(text, f"istio_request_bytes_sum{{{sel}") == 5010
    assert _sample(text, f"istio_response_bytes_count{{{sel}") == 3
    # Cumulative buckets: 0.3 <= 0.5; 7 <= 10; 70000 only under +Inf.
    dur = "istio_request_duration_milliseconds_bucket{" + sel
    buckets = {
        line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(dur)
    }
    assert buckets["0.5"] == 1 and buckets["5"] == 1 and buckets["10"] == 2
    assert buckets["60000"] == 2 and buckets["+Inf"] == 3
    # The other label set is its own series.
    assert _sample(text, 'istio_request_duration_milliseconds_count{reporter="b0"') == 1


def test_bucket_is_bisect_left() -> None:
    """The forward scan answers what bisect_left does, at and around every bound."""
    from bisect import bisect_left

    from proxy.telemetry import DURATION_BUCKETS_MS, SIZE_BUCKETS, bucket

    for buckets in (DURATION_BUCKETS_MS, SIZE_BUCKETS):
        for bound in buckets:
            for v in (bound - 0.001, bound, bound + 0.001, 0.0, -1.0, 1e12):
                assert bucket(buckets, v) == bisect_left(buckets, v), (buckets, v)


def test_fast_path_counter_is_shown_with_the_health_counters() -> None:
    t = Telemetry()
    t.counters["meshctl_proxy_accept_errors_total"] += 2
    assert t.health()["meshctl_proxy_fast_path_requests_total"] == 0  # shown before any
    t.fast_path_requests += 3
    health = t.health()
    assert health["meshctl_proxy_fast_path_requests_total"] == 3
    assert health["meshctl_proxy_accept_errors_total"] == 2
    text = t.render()
    assert "meshctl_proxy_fast_path_requests_total 3" in text
    assert "meshctl_proxy_accept_errors_total 2" in text
