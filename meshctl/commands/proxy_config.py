"""`meshctl proxy-config SERVICE [routes|endpoints|policies|certs]`: what one proxy runs."""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from common.proxies import select
from common.state import mesh_home
from meshctl.commands.remote import OperatorFileOpt, RegistryOpt, remote
from meshctl.observe.cli import AdminOpt, Output, OutputOpt, echo_json, user_errors
from registry.config.model import HTTPRoute, Service
from registry.config.opaque import tcp_ports_of
from registry.config.wire import from_wire

__all__ = ["proxy_config"]


class Section(enum.StrEnum):
    routes = "routes"
    endpoints = "endpoints"
    policies = "policies"
    certs = "certs"
    all = "all"


def proxy_config(
    service: Annotated[str, typer.Argument(help="The service (or proxy id).")],
    section: Annotated[Section, typer.Argument(help="What to show.")] = Section.all,
    admin: AdminOpt = None,
    output: OutputOpt = Output.text,
    registry: RegistryOpt = None,
    operator_token_file: OperatorFileOpt = None,
) -> None:
    """The config a proxy really runs (its /config_dump and /certs), one section or all."""
    with user_errors("proxy-config"):
        proxies = select(mesh_home(), service, admin,
                         remote(registry, operator_token_file))
        result = []
        for p in proxies:
            dump = p.admin_json("/config_dump")
            certs = p.admin_json("/certs") if section in ("certs", "all") else None
            result.append(sections(dump, certs, section))
    if output == Output.json:
        echo_json(result if len(result) > 1 else result[0])
        return
    out = Console(highlight=False)
    for r in result:
        out.print(f"[bold]{r['proxy_id']}[/] config v{r['config_version']}")
        if "routes" in r:
            t = Table("service", "route", "match", "destinations", "timeout", "retries",
                      "not applied on")
            for x in r["routes"]:
                tcp = x.get("not_applied_on") or []
                t.add_row(
                    x["service"], x["name"], json.dumps(x["match"]), x["destinations"],
                    str(x["timeout_s"] or "-"), json.dumps(x["retries"]),
                    f"[yellow]{', '.join(tcp)}: relayed as TCP[/]" if tcp else "-",
                )  # fmt: skip
            out.print(t)
        if "endpoints" in r:
            t = Table("service", "subset", "endpoint", "ejected")
            for x in r["endpoints"]:
                t.add_row(x["service"], x["subset"] or "-", x["address"], str(x["ejected"]))
            out.print(t)
        if "policies" in r:
            out.print_json(json.dumps(r["policies"]))
        if "certs" in r:
            c = r["certs"]
            out.print(f"{c.get('spiffe_id')} until {c.get('not_after')} "
                      f"({c.get('seconds_left', 0) / 3600:.1f} h left)")  # fmt: skip


def _tcp_ports(cfg: dict[str, Any], vs: dict[str, Any], route: dict[str, Any]) -> list[str]:
    """`PORT (PROTOCOL)` for each port relayed as TCP that an http route would apply to."""
    try:
        r = from_wire(HTTPRoute, route)
        services = [from_wire(Service, s) for s in cfg.get("services", [])
                    if s.get("name") in vs.get("hosts", [])]
    except (ValueError, TypeError):  # a dump from another version: say nothing rather than wrong
        return []
    return [f"{p.port} ({p.protocol})" for s in services for p in tcp_ports_of(r, s)]


def sections(dump: dict[str, Any], certs: dict[str, Any] | None, section: str) -> dict[str, Any]:
    """Reshape /config_dump into the asked section(s)."""
    cfg = dump.get("config") or {}
    out: dict[str, Any] = {
        "proxy_id": dump.get("proxy_id"),
        "service": dump.get("service"),
        "config_version": dump.get("config_version"),
    }
    if section in ("routes", "all"):
        out["routes"] = [
            {
                "service": vs["hosts"][0] if vs.get("hosts") else vs.get("name"),
                "name": r.get("name") or f"route-{i}",
                "match": r.get("match", []),
                "destinations": ", ".join(
                    f"{d['destination']['host']}"
                    + (f"/{d['destination']['subset']}" if d["destination"].get("subset") else "")
                    + f" {d['weight']}%"
                    for d in r.get("route", [])
                ),
                "timeout_s": r.get("timeout_s"),
                "retries": r.get("retries"),
                # Ports of the service this route would apply to but that are relayed as
                # opaque TCP: the route does nothing there (registry/config/opaque.py).
                "not_applied_on": _tcp_ports(cfg, vs, r),
            }
            for vs in cfg.get("virtual_services", [])
            for i, r in enumerate(vs.get("http", []))
        ]
    if section in ("endpoints", "all"):
        out["endpoints"] = [
            {
                "service": c["service"],
                "subset": c["subset"],
                "address": host,
                "ejected": host in c.get("ejected", []),
            }
            for c in dump.get("clusters", [])
            for host in c.get("endpoints", [])
        ]
    if section in ("policies", "all"):
        out["policies"] = {
            "peer_authentication": dump.get("peer_authentication"),
            "authorization_policies": cfg.get("authorization_policies", []),
            "destination_rules": cfg.get("destination_rules", []),
        }
    if section in ("certs", "all"):
        c = dict(certs or {})
        c.pop("certificate", None)
        out["certs"] = c
    return out
