"""What `meshctl route show` prints, as data: a service's http routes, their matches,
weights, retries, timeouts and where each is defined. Shared by the CLI on the registry's
host and the registry's API (`GET /v1/routes/{service}`) for an operator elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from registry.config import MeshConfig
from registry.config.apply import read_file
from registry.config.duration import format_duration
from registry.config.edit import EditError, route_label, route_positions
from registry.config.model import (
    DEFAULT_RETRY_ATTEMPTS,
    DEFAULT_RETRY_ON,
    HTTPMatch,
    HTTPRoute,
    StringMatch,
)


def route_view(config: MeshConfig, directory: Path, service: str) -> dict[str, Any]:
    if config.service(service) is None:
        known = ", ".join(s.name for s in config.services) or "none"
        raise EditError(f"unknown service `{service}`; mesh.yaml defines: {known}")
    rule = config.destination_rule_for(service)
    subsets = [{"name": s.name, "labels": dict(s.labels)} for s in rule.subsets] if rule else []
    vs = config.virtual_service_for(service)
    if vs is None:
        return {"service": service, "virtual_service": None, "file": None, "line": None,
                "routes": [], "subsets": subsets}
    try:
        positions = route_positions(read_file(directory / vs.source.file).decode("utf-8"), vs)
    except (EditError, UnicodeDecodeError):
        positions = []
    if len(positions) != len(vs.http):  # the file changed since it was loaded
        positions = [(vs.source.line, vs.source.column)] * len(vs.http)
    routes = [route_entry(r, i, vs.source.file, positions[i]) for i, r in enumerate(vs.http)]
    return {"service": service, "virtual_service": vs.name,
            "file": str(directory / vs.source.file), "line": vs.source.line,
            "routes": routes, "subsets": subsets}


def route_entry(r: HTTPRoute, index: int, file: str, position: tuple[int, int]
                ) -> dict[str, Any]:
    retries: dict[str, Any]
    if r.retries is None:
        retries = {"attempts": DEFAULT_RETRY_ATTEMPTS, "per_try_timeout": None,
                   "retry_on": list(DEFAULT_RETRY_ON), "default": True}
    else:
        per_try = r.retries.per_try_timeout_s
        retries = {"attempts": r.retries.attempts,
                   "per_try_timeout": format_duration(per_try) if per_try is not None else None,
                   "retry_on": list(r.retries.retry_on), "default": False}
    return {
        "name": route_label(r, index), "index": index,
        "defined_at": f"{file}:{position[0]}:{position[1]}",
        "match": [match_text(m) for m in r.match],
        "destinations": [{"host": d.destination.host, "subset": d.destination.subset,
                          "port": d.destination.port, "weight": d.weight} for d in r.route],
        "retries": retries,
        "timeout": format_duration(r.timeout_s) if r.timeout_s is not None else None,
    }


def match_text(m: HTTPMatch) -> str:
    def sm(what: str, s: StringMatch) -> str:
        return f"{what} present" if s.kind == "present" else f"{what} {s.kind} {s.value}"

    parts = [sm(what, s) for what, s in
             (("uri", m.uri), ("method", m.method), ("authority", m.authority)) if s is not None]
    parts += [sm(f"header {k}", s) for k, s in m.headers]
    parts += [f"not {sm(f'header {k}', s)}" for k, s in m.without_headers]
    parts += [sm(f"query {k}", s) for k, s in m.query_params]
    if m.port is not None:
        parts.append(f"port {m.port}")
    if m.ignore_uri_case:
        parts.append("(ignoring uri case)")
    return " and ".join(parts) or "any request"
