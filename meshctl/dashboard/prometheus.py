"""The graph's history from a Prometheus (`meshctl dashboard --prometheus URL`).

Two instant PromQL queries over its HTTP API (`/api/v1/query`): the increase of the
request counter and of the latency histogram over the window, summed by exactly the labels
the graph groups by. Their results become one "scrape" of increases, and the graph is the
same pure function as for the proxies' own scrapes (graph(nothing, increases, window)), so
the numbers mean the same whichever the source. Shaping is pure; `fetch` is the only I/O.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from common.promparse import Sample
from common.stats import DURATION, REQUESTS, Scrape

__all__ = ["PrometheusError", "fetch", "queries", "to_scrape"]

_BY = ("reporter", "source_app", "source_version", "destination_service_name",
       "destination_version", "connection_security_policy")


class PrometheusError(Exception):
    """The Prometheus did not answer the query; the message says which and why."""


def queries(window_s: int) -> dict[str, str]:
    """metric name -> the PromQL giving its increase over the last `window_s` seconds."""
    return {
        REQUESTS: f"sum by ({', '.join((*_BY, 'response_code'))}) "
                  f"(increase({REQUESTS}[{window_s}s]))",
        DURATION: f"sum by ({', '.join((*_BY, 'le'))}) (increase({DURATION}[{window_s}s]))",
    }


def to_scrape(results: Mapping[str, list[dict[str, Any]]]) -> Scrape:
    """Instant-vector results (metric name -> `data.result`) as one scrape of samples."""
    samples = []
    for name, vector in results.items():
        for series in vector:
            value = float(series["value"][1])
            if value != value:  # NaN: no two points in the window
                continue
            labels = {str(k): str(v) for k, v in series.get("metric", {}).items()}
            samples.append(Sample(name, labels, value))
    return {"prometheus": samples}


def fetch(url: str, window_s: int, timeout: float = 5.0) -> Scrape:
    """The increases over `window_s` from the Prometheus at `url` (http://host:port)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    results: dict[str, list[dict[str, Any]]] = {}
    for name, promql in queries(window_s).items():
        q = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        try:
            with opener.open(q, timeout=timeout) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise PrometheusError(f"{url}: HTTP {exc.code} for {promql}: "
                                  f"{exc.read()[:200].decode(errors='replace')}") from None
        except (OSError, ValueError) as exc:
            raise PrometheusError(f"{url}: no answer ({exc}); is --prometheus right?") from None
        if body.get("status") != "success" or body["data"].get("resultType") != "vector":
            raise PrometheusError(f"{url}: {promql}: {body.get('error', body)}")
        results[name] = body["data"]["result"]
    return to_scrape(results)
