"""The dashboard's per-service panel and live-request list, shaped from the registry's answers
(pure): endpoints with health and ejection, proxies with their config and certificate, the
route in force as `meshctl why` explains it (meshctl.observe.explain, the one implementation),
the last rejected config change's errors that concern the service (`attribute_errors`), and
the tap events filtered by path and status."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from meshctl.observe.explain import ExplainError, explain

__all__ = ["MAX_SHOWN", "attribute_errors", "filter_requests", "service_panel"]

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
    rejected = status.get("last_config_error")
    mine = attribute_errors(rejected.get("errors", []), config_wire)[0].get(service) \
        if isinstance(rejected, dict) else None
    return {"service": service, "endpoints": sorted(endpoints, key=lambda e: str(e["id"])),
            "proxies": sorted(proxies, key=lambda p: str(p["proxy_id"])), "why": why,
            "last_config_error": {**rejected, "errors": mine} if mine and rejected else None}


_POSITION = re.compile(r"(?P<file>[^:\n]+):\d+:\d+: (?P<rest>.*)", re.S)
_MESH_SERVICE = re.compile(r"services\.(?P<name>[^.\[:\s]+)")


def attribute_errors(errors: Iterable[str], config_wire: Mapping[str, Any]
                     ) -> tuple[dict[str, list[str]], list[str]]:
    """The registry's config errors (`file:line:column: what`) by the services they concern,
    and those that concern no service in particular (shown mesh-wide). An error concerns the
    services of the resources the last good config has in its file (a VirtualService's hosts,
    a DestinationRule's host, a policy's `app` selector, a canary's service), or in
    mesh.yaml the service its field path names (`services.orders.ports[0]`). A file the last
    good config did not have (new), a mesh-wide policy's, or a line without a position is
    mesh-wide."""
    services = {s["name"] for s in config_wire.get("services", [])}
    by_file: dict[str, set[str]] = {}
    for kind, names in (("virtual_services", lambda r: r.get("hosts", [])),
                        ("destination_rules", lambda r: [r.get("host")]),
                        ("authorization_policies", _app_selected),
                        ("peer_authentications", _app_selected),
                        ("canaries", lambda r: [r.get("service")])):
        for r in config_wire.get(kind, []):
            found = {str(h).split(".")[0] for h in names(r) if h}
            file = (r.get("source") or {}).get("file")
            if file:
                by_file.setdefault(file, set())
                if found <= services and found:
                    by_file[file] |= found
                else:
                    by_file[file].add("")  # a resource of no (known) service: mesh-wide
    attributed: dict[str, list[str]] = {}
    unattributed: list[str] = []
    for line in errors:
        m = _POSITION.match(line)
        if m is None:
            unattributed.append(line)
            continue
        if m["file"] in ("mesh.yaml", "mesh.yml"):
            svc = _MESH_SERVICE.match(m["rest"])
            concerned = {svc["name"]} if svc and svc["name"] in services else {""}
        else:
            concerned = by_file.get(m["file"], {""})
        for name in sorted(concerned):
            if name:
                attributed.setdefault(name, []).append(line)
        if "" in concerned:
            unattributed.append(line)
    return attributed, unattributed


def _app_selected(policy: Mapping[str, Any]) -> list[str]:
    """The service a policy's selector names by its `app` label; none: mesh-wide."""
    return [str(v) for k, v in policy.get("selector") or [] if k == "app"]


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
