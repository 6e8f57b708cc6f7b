"""The dashboard's per-service panel and live-request list, shaped from the registry's answers
(pure): endpoints with health and ejection, proxies with their config and certificate, the
route in force as `meshctl why` explains it (meshctl.observe.explain, the one implementation),
the last rejected config change, and the tap events filtered by path and status."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from meshctl.observe.explain import ExplainError, explain

__all__ = ["MAX_SHOWN", "filter_requests", "service_panel"]

MAX_SHOWN = 100  # live requests the page gets at once, newest first


def service_panel(
    service: str,
    status: Mapping[str, Any],
    config_wire: dict[str, Any],
    ejected: Mapping[str, Sequence[str]],
    source: str | None,
    path: str = "/",
) -> dict[str, Any]:
    """Everything the panel shows for `service`. `status` is the registry's GET /v1/status,
    `config_wire` its GET /v1/config's `config`, `ejected` address:port -> the callers'
    workloads ejecting it, `source` the calling service the route is explained for (the
    service itself when None: a VirtualService without sourceLabels applies to any caller)."""
    latest = int(status.get("config_version") or 0)
    all_endpoints = list(status.get("endpoints", []))
    endpoints = []
    for e in all_endpoints:
        if e.get("service") != service:
            continue
        addr = f"{e.get('address')}:{e.get('inbound_port')}"
        endpoints.append({
            "id": e.get("id"), "address": addr, "host": e.get("address"),
            "version": dict(e.get("labels", {})).get("version", ""),
            "health": e.get("health"), "reason": e.get("reason") or "",
            "ejected_by": sorted(set(ejected.get(addr, ()))),
        })
    proxies = [{
        "proxy_id": p.get("proxy_id"), "connected": bool(p.get("connected")),
        "acked_version": p.get("acked_version"), "latest_version": latest,
        "current": p.get("acked_version") == latest,
        "nack_error": p.get("nack_error") or "", "cert_not_after": p.get("cert_not_after"),
    } for p in status.get("proxies", []) if p.get("service") == service]
    try:
        why: dict[str, Any] = explain(config_wire, all_endpoints, source or service, service,
                                      path, ejected=_BySubset(all_endpoints, ejected))
        why["config_version"] = latest
    except ExplainError as exc:
        why = {"error": str(exc)}
    return {"service": service, "endpoints": sorted(endpoints, key=lambda e: str(e["id"])),
            "proxies": sorted(proxies, key=lambda p: str(p["proxy_id"])), "why": why,
            "last_config_error": status.get("last_config_error")}


class _BySubset(dict[tuple[str, str | None], list[str]]):
    """explain() asks (service, subset) -> ejected hosts; an ejection is per endpoint, so
    every subset of a service gets the service's ejected addresses (explain() marks only
    those of the subset's own endpoints)."""

    def __init__(self, endpoints: list[dict[str, Any]],
                 ejected: Mapping[str, Sequence[str]]) -> None:
        super().__init__()
        self.by_service: dict[str, list[str]] = {}
        for e in endpoints:
            addr = f"{e.get('address')}:{e.get('inbound_port')}"
            if addr in ejected:
                self.by_service.setdefault(str(e.get("service")), []).append(addr)

    def get(self, key: tuple[str, str | None], default: Any = None) -> Any:
        return self.by_service.get(key[0], default)

    def __len__(self) -> int:  # explain() treats an empty mapping as "none ejected"
        return len(self.by_service)


def filter_requests(events: Iterable[Mapping[str, Any]], path: str = "",
                    status: str = "") -> list[dict[str, Any]]:
    """The tap events whose path starts with `path` and whose status is `status` (a code,
    `4xx`/`5xx` for a class, empty for any), newest first, at most MAX_SHOWN. Raises
    ValueError for a status that is neither."""
    status = status.strip().lower()
    if status and not (len(status) == 3 and status[0] in "12345" and
                       (status[1:].isdigit() or status[1:] == "xx")):
        raise ValueError(f"status `{status}`: expected a code (404) or a class (5xx)")
    out = []
    for e in reversed(list(events)):
        code = str(e.get("status", ""))
        if path and not str(e.get("path", "")).startswith(path):
            continue
        if status and not (code == status or (status.endswith("xx") and code[:1] == status[0])):
            continue
        out.append(dict(e))
        if len(out) >= MAX_SHOWN:
            break
    return out
