"""Request and connection metrics under Istio's standard names (telemetry v2), for Prometheus.

Counters are plain dict entries keyed by a label tuple that the snapshot pre-builds per
route and endpoint, so recording a request costs a few dict operations, no formatting.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Final

from common.promtext import labels_text

# Istio's default buckets for istio_request_duration_milliseconds.
DURATION_BUCKETS_MS: Final[tuple[float, ...]] = (
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    30000.0,
    60000.0,
    300000.0,
    600000.0,
    1800000.0,
    3600000.0,
)
SIZE_BUCKETS: Final[tuple[float, ...]] = (1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7)

REQUEST_LABELS: Final = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
TCP_LABELS: Final = tuple(
    n for n in REQUEST_LABELS if n not in ("response_code", "grpc_response_status")
)

LabelValues = tuple[str, ...]


class Histogram:
    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last is +Inf
        self.sum = 0.0

    @property
    def count(self) -> int:
        """Observations so far (the +Inf bucket's cumulative count; summed when rendered,
        not kept per observation)."""
        return sum(self.counts)


def bucket(buckets: tuple[float, ...], v: float) -> int:
    """The index of the first bucket ``v`` falls in (le: v <= bound), len(buckets) for +Inf:
    bisect_left's answer by a forward scan, which is shorter for the usual values (a
    millisecond, a kilobyte: the first few bounds) and compares native floats."""
    i = 0
    for bound in buckets:
        if v <= bound:
            return i
        i += 1
    return i


Series = tuple[Histogram, Histogram, Histogram]  # duration, request bytes, response bytes


class SeriesMemo:
    """One connection's last label set for Proxy.record: on a connection the reporter, the
    service and the peer are fixed, so while the config version, the status and the flags
    repeat (nearly always) the series is the one before, with no key built and hashed."""

    __slots__ = ("flags", "series", "status", "version")

    def __init__(self) -> None:
        self.version = -1
        self.status = 0
        self.flags = ""
        self.series: Series | None = None


def observe_request(hs: Series, duration_ms: float, req_bytes: int, resp_bytes: int) -> None:
    """One request into its label set's histograms (Histogram.observe, inlined)."""
    h = hs[0]
    h.counts[bucket(DURATION_BUCKETS_MS, duration_ms)] += 1
    h.sum += duration_ms
    h = hs[1]
    h.counts[bucket(SIZE_BUCKETS, req_bytes)] += 1
    h.sum += req_bytes
    h = hs[2]
    h.counts[bucket(SIZE_BUCKETS, resp_bytes)] += 1
    h.sum += resp_bytes


class Telemetry:
    """All of one proxy's metrics. Per request, `observe_request` on a cached `series`;
    `render` is not on the request path."""

    def __init__(self) -> None:
        self.durations: dict[LabelValues, Histogram] = {}
        self.request_bytes: dict[LabelValues, Histogram] = {}
        self.response_bytes: dict[LabelValues, Histogram] = {}
        # The three histograms of a label set together: one lookup per request.
        self._series: dict[LabelValues, tuple[Histogram, Histogram, Histogram]] = {}
        self.tcp_sent: dict[LabelValues, int] = defaultdict(int)
        self.tcp_received: dict[LabelValues, int] = defaultdict(int)
        self.tcp_opened: dict[LabelValues, int] = defaultdict(int)
        self.tcp_closed: dict[LabelValues, int] = defaultdict(int)
        # Proxy health: name -> value (counters and gauges with no labels).
        self.counters: dict[str, float] = defaultdict(float)
        self.gauges: dict[str, float] = {}
        # The one health counter counted per request: a native int (a dict entry costs a
        # lookup, a float add and a store), shown among `health()`'s counters.
        self.fast_path_requests = 0
        # Of those, the ones whose response went downstream as it came, in one C call with
        # no event made (proxy.downstream.fastpath.FastConn.on_raw).
        self.fast_path_whole_responses = 0

    def health(self) -> dict[str, float]:
        """The health counters by name, as /metrics and the admin's /stats show them."""
        out = dict(self.counters)
        out["meshctl_proxy_fast_path_requests_total"] = self.fast_path_requests
        out["meshctl_proxy_fast_path_whole_responses_total"] = self.fast_path_whole_responses
        return out

    @property
    def requests(self) -> dict[LabelValues, int]:
        """istio_requests_total by label set: each duration histogram's count (one series
        fewer to update per request)."""
        return {lv: h.count for lv, h in self.durations.items()}

    def series(self, labels: LabelValues) -> Series:
        """The three histograms of a label set (made on first use): Proxy.record caches
        them per label combination, so a request does not hash the 19 labels again."""
        hs = self._series.get(labels)  # (istio_requests_total is the durations' count)
        if hs is None:
            hs = self._series[labels] = (
                Histogram(DURATION_BUCKETS_MS),
                Histogram(SIZE_BUCKETS),
                Histogram(SIZE_BUCKETS),
            )
            self.durations[labels], self.request_bytes[labels], self.response_bytes[labels] = hs
        return hs

    def render(self, extra: str = "") -> str:
        """The exposition text; `extra` is appended (families rendered elsewhere)."""
        out: list[str] = []

        def counter(
            name: str, help_text: str, series: dict[LabelValues, int], names: tuple[str, ...]
        ) -> None:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} counter")
            for lv, v in series.items():
                out.append(f"{name}{labels_text(dict(zip(names, lv, strict=True)))} {v}")

        def hist(name: str, help_text: str, series: dict[LabelValues, Histogram]) -> None:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} histogram")
            for lv, h in series.items():
                base = dict(zip(REQUEST_LABELS, lv, strict=True))
                acc = 0
                les: list[float | str] = [*h.buckets, "+Inf"]
                for le, c in zip(les, h.counts, strict=True):
                    acc += c
                    out.append(f"{name}_bucket{labels_text({**base, 'le': _fmt(le)})} {acc}")
                out.append(f"{name}_sum{labels_text(base)} {h.sum}")
                out.append(f"{name}_count{labels_text(base)} {h.count}")

        counter(
            "istio_requests_total", "Requests handled by this proxy.", self.requests, REQUEST_LABELS
        )
        hist("istio_request_duration_milliseconds", "Request duration.", self.durations)
        hist("istio_request_bytes", "Request sizes (headers and body).", self.request_bytes)
        hist("istio_response_bytes", "Response sizes (headers and body).", self.response_bytes)
        counter(
            "istio_tcp_sent_bytes_total",
            "Bytes sent to the peer on TCP connections.",
            self.tcp_sent,
            TCP_LABELS,
        )
        counter(
            "istio_tcp_received_bytes_total",
            "Bytes received on TCP connections.",
            self.tcp_received,
            TCP_LABELS,
        )
        counter(
            "istio_tcp_connections_opened_total",
            "TCP connections opened.",
            self.tcp_opened,
            TCP_LABELS,
        )
        counter(
            "istio_tcp_connections_closed_total",
            "TCP connections closed.",
            self.tcp_closed,
            TCP_LABELS,
        )
        _plain(out, "counter", self.health())
        _plain(out, "gauge", self.gauges)
        if extra:
            out.append(extra.rstrip("\n"))
        return "\n".join(out) + "\n"


def _plain(out: list[str], kind: str, series: dict[str, float]) -> None:
    """Health counters and gauges keyed by sample name: `name` or `name{label="v"}`.

    One TYPE line per family, its samples together (the exposition format requires it)."""
    family = ""
    for key, value in sorted(series.items()):
        name = key.partition("{")[0]
        if name != family:
            family = name
            help_text = HELP.get(name)
            if help_text:
                out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
        out.append(f"{key} {_fmt(value)}")


# What each proxy health series means (the families without labels or with a few).
HELP: Final = {
    "meshctl_proxy_config_version": "Config version in force (the registry's snapshot version).",
    "meshctl_proxy_catalog_version": "Catalog (endpoints) version in force.",
    "meshctl_proxy_config_rejected_total": "Config versions refused (NACKed); the previous stays.",
    "meshctl_proxy_certificate_expiry_seconds": "Unix time the workload certificate expires.",
    "meshctl_proxy_certificate_seconds_left": "Seconds until the workload certificate expires.",
    "meshctl_proxy_certificate_lifetime_seconds": "Full lifetime of the workload certificate.",
    "meshctl_proxy_registry_connected": "1 while the config stream to the registry is open.",
    "meshctl_proxy_retries_total": "Retries made (after the budget and maxRetries allowed them).",
    "meshctl_proxy_retry_budget_exhausted_total": "Retries refused by the retry budget.",
    "meshctl_proxy_retry_overflow_total": "Retries refused by DestinationRule http.maxRetries.",
    "meshctl_proxy_upstream_rq_per_try_timeout_total": "Attempts cut by their perTryTimeout "
    "(connecting included), retried or answered 504 UT.",
    "meshctl_proxy_upstream_overflow_total": "Requests refused by a circuit breaker (flag UO).",
    "meshctl_proxy_rate_limited_total": "Requests refused by a local rate limit (429): the "
    "service's own limit on the inbound side, a route's in the caller's outbound proxy.",
    "meshctl_proxy_authz_denied_total": "Requests or connections denied by AuthorizationPolicy.",
    "meshctl_proxy_spans_dropped_total": "Spans lost: export queue full, or the export failed.",
    "meshctl_proxy_spans_exported_total": "Spans accepted by the OTLP collector.",
    "meshctl_proxy_span_export_failures_total": "OTLP export requests that failed.",
    "meshctl_proxy_tap_dropped_total": "Tap events dropped because a tap client was too slow.",
}


def _fmt(v: float | str) -> str:
    if isinstance(v, str):
        return v
    return str(int(v)) if float(v).is_integer() else repr(float(v))
