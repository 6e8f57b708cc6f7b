"""One subset's traffic between two scrapes of the proxies' metrics (pure).

The destination's own proxies count what each version served (reporter="destination",
destination_service_name, destination_version: Istio's standard labels), so a retry that
a caller sends elsewhere after a canary's 503 still counts as the canary's failure.
"""

from __future__ import annotations

from common.stats import Scrape, Window, collect, delta, quantile
from registry.canary.analysis import Window as Traffic

__all__ = ["subset_traffic"]

_KEY = ("destination_service_name", "destination_version")


def subset_traffic(first: Scrape, second: Scrape, service: str, version: str) -> Traffic:
    """Requests, success rate and p99 of `service`'s `version` between the two scrapes."""
    a = collect(first, "destination", _KEY).get((service, version), Window())
    b = collect(second, "destination", _KEY).get((service, version), Window())
    n, fails, buckets = delta(a, b)
    return Traffic(n, (n - fails) / n if n else None, quantile(0.99, buckets))
