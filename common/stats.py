"""`meshctl stat`: golden metrics per service and per edge from two scrapes (pure).

Like `linkerd viz stat`: success rate (responses not 5xx), requests per second, p50/p95/p99
latency, TCP connections. Everything is a difference between two scrapes of the same
proxies `interval_s` apart, so the numbers describe that window, not the proxy's lifetime.
Quantiles are interpolated inside the histogram bucket as Prometheus' histogram_quantile
does; inbound numbers come from the destination's proxies (reporter="destination"), edges
from the callers' proxies (reporter="source").
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from common.promparse import Sample

REQUESTS = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds_bucket"
TCP_OPENED = "istio_tcp_connections_opened_total"
TCP_CLOSED = "istio_tcp_connections_closed_total"


@dataclass(slots=True)
class Window:
    """Counters of one (service) or (source, destination) pair, summed over its series."""

    requests: float = 0.0
    failures: float = 0.0  # 5xx
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    tcp_opened: float = 0.0
    tcp_closed: float = 0.0


Key = tuple[str, ...]
Scrape = Mapping[str, Sequence[Sample]]  # proxy id -> its samples


def _le(v: str) -> float:
    return math.inf if v == "+Inf" else float(v)


def collect(scrape: Scrape, reporter: str, key_labels: tuple[str, ...]) -> dict[Key, Window]:
    """Sum the request, latency and TCP series of `reporter` by `key_labels`."""
    out: dict[Key, Window] = defaultdict(Window)
    for samples in scrape.values():
        for s in samples:
            if s.labels.get("reporter") != reporter:
                continue
            key = tuple(s.labels.get(k, "") for k in key_labels)
            w = out[key]
            if s.name == REQUESTS:
                w.requests += s.value
                if s.labels.get("response_code", "").startswith("5"):
                    w.failures += s.value
            elif s.name == DURATION:
                le = _le(s.labels["le"])
                w.buckets[le] = w.buckets.get(le, 0.0) + s.value
            elif s.name == TCP_OPENED:
                w.tcp_opened += s.value
            elif s.name == TCP_CLOSED:
                w.tcp_closed += s.value
    return dict(out)


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """histogram_quantile over cumulative buckets (le -> count); None without observations."""
    les = sorted(buckets)
    if not les:
        return None
    total = buckets[les[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le in les:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower_le  # beyond the last finite bucket: its bound is all we know
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return lower_le


@dataclass(frozen=True, slots=True)
class Row:
    """One line of `meshctl stat`."""

    name: str  # the service, or "source -> destination" for an edge
    source: str | None
    destination: str
    requests: float  # in the window
    rps: float
    success_rate: float | None  # None: no request in the window
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    tcp_open: float  # connections open at the second scrape
    tcp_opened: float  # opened in the window
    requests_total: float  # since the proxies started

    def to_wire(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def delta(a: Window, b: Window) -> tuple[float, float, dict[float, float]]:
    """(requests, 5xx, latency buckets) between two scrapes' windows; a counter that went
    back (a restarted proxy) counts as nothing new."""
    n = max(0.0, b.requests - a.requests)
    fails = max(0.0, b.failures - a.failures)
    return n, fails, {le: max(0.0, c - a.buckets.get(le, 0.0)) for le, c in b.buckets.items()}


def _row(name: str, src: str | None, dst: str, a: Window, b: Window, dt: float) -> Row:
    n, fails, delta_buckets = delta(a, b)
    return Row(
        name=name,
        source=src,
        destination=dst,
        requests=n,
        rps=n / dt if dt > 0 else 0.0,
        success_rate=(n - fails) / n if n else None,
        p50_ms=quantile(0.50, delta_buckets),
        p95_ms=quantile(0.95, delta_buckets),
        p99_ms=quantile(0.99, delta_buckets),
        tcp_open=max(0.0, b.tcp_opened - b.tcp_closed),
        tcp_opened=max(0.0, b.tcp_opened - a.tcp_opened),
        requests_total=b.requests,
    )


def stat(
    first: Scrape, second: Scrape, interval_s: float, service: str | None = None
) -> dict[str, list[Row]]:
    """{"services": rows by destination (inbound), "edges": rows by caller and destination}."""
    key = ("destination_service_name",)
    a_svc, b_svc = collect(first, "destination", key), collect(second, "destination", key)
    ekey = ("source_workload", "destination_service_name")
    a_edge, b_edge = collect(first, "source", ekey), collect(second, "source", ekey)
    services = [
        _row(k[0], None, k[0], a_svc.get(k, Window()), w, interval_s)
        for k, w in sorted(b_svc.items())
        if service is None or k[0] == service
    ]
    edges = [
        _row(f"{k[0]} -> {k[1]}", k[0], k[1], a_edge.get(k, Window()), w, interval_s)
        for k, w in sorted(b_edge.items())
        if service is None or service in (k[1], k[0].rsplit("-", 1)[0], k[0])
    ]
    return {"services": services, "edges": edges}


def paths_of(events: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """`meshctl top`: tap events grouped by (destination, method, path): count, success, latency."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in events:
        path = str(e.get("path", "")).partition("?")[0]
        k = (str(e.get("destination", "")), str(e.get("method", "")), path)
        row = out.setdefault(
            k, {"destination": k[0], "method": k[1], "path": k[2], "count": 0, "failures": 0,
                "latencies": []},
        )  # fmt: skip
        row["count"] += 1
        row["failures"] += int(e.get("status", 0)) >= 500
        row["latencies"].append(float(e.get("latency_ms", 0.0)))
    return out


def top_rows(events: Iterable[Mapping[str, Any]], limit: int = 20) -> list[dict[str, Any]]:
    rows = []
    for r in paths_of(events).values():
        lat = sorted(r.pop("latencies"))
        r["success_rate"] = round((r["count"] - r["failures"]) / r["count"], 4)
        r["p50_ms"] = round(lat[len(lat) // 2], 3)
        r["max_ms"] = round(lat[-1], 3)
        rows.append(r)
    rows.sort(key=lambda r: (-r["count"], r["destination"], r["path"]))
    return rows[:limit]
