"""HTTP routes on ports the proxy relays as opaque TCP: said, never silently ignored.

A port declared `tcp`, or `http2`, `grpc` or `grpc-web` (Istio's names; the proxy has no
HTTP/2 codec yet, issue 21), is relayed byte for byte: a VirtualService `http` entry that
would apply to it changes nothing there (no per-request routing or weights, retries,
timeouts, faults, header operations or request metrics); only `tcp` entries (and the
subsets' load balancing per connection) do. `meshctl validate` warns at the entry
(`warnings`), `meshctl why` and `meshctl proxy-config` say the same (`tcp_ports_of`), and
`meshctl stat` says why such a port's calls are not counted as requests (`stat_notes`).
"""

from __future__ import annotations

from registry.config.diagnostics import Diagnostic
from registry.config.model import HTTPRoute, Port, Service, VirtualService
from registry.config.reader import at

__all__ = ["relay_note", "stat_notes", "tcp_ports_of", "warnings"]


def tcp_ports_of(route: HTTPRoute, service: Service) -> tuple[Port, ...]:
    """The ports of `service` relayed as TCP that `route` would apply to: all of them when
    a match entry names no port (or there is no `match`), else those its entries name."""
    ports = [p for p in service.ports if p.relayed_as_tcp]
    if not ports or not route.match or any(m.port is None for m in route.match):
        return tuple(ports)
    named = {m.port for m in route.match}
    return tuple(p for p in ports if p.port in named)


def relay_note(port: Port) -> str:
    """What a connection to `port` really gets, in one sentence."""
    why = ("declared tcp" if port.protocol == "tcp"
           else f"declared {port.protocol}: HTTP/2 is not proxied per request yet")
    return (f"relayed as opaque TCP ({why}): HTTP routes do not apply there, so no "
            "per-request routing or weights, retries, timeouts, faults or request metrics; "
            "`tcp` routes and one endpoint per connection do")


def warnings(
    services: tuple[Service, ...], virtual_services: tuple[VirtualService, ...]
) -> list[Diagnostic]:
    """One warning per VirtualService `http` entry and opaque port it would apply to."""
    by_name = {s.name: s for s in services}
    out: list[Diagnostic] = []
    for vs in virtual_services:
        for host in vs.hosts:
            service = by_name.get(host)
            if service is None:
                continue
            for i, route in enumerate(vs.http):
                src = route.source or vs.source
                for port in tcp_ports_of(route, service):
                    out.append(Diagnostic(
                        src.file, src.line, src.column, at("spec.http", i),
                        f"applies to port {port.port} of `{host}`, which is "
                        f"{relay_note(port)}; declare the port `http`, or route it with "
                        "a `tcp` entry"))
    return out


def stat_notes(services: tuple[Service, ...] | list[Service], only: str | None = None) -> list[str]:
    """For `meshctl stat`: each port declared with an HTTP/2 protocol (where calls are
    expected) whose traffic is counted as TCP connections, not requests."""
    return [
        f"`{s.name}` port {p.port} ({p.protocol}) is relayed as opaque TCP: its calls are "
        "counted as TCP connections (tcp open), not as requests (no success rate, rps or "
        "latency per call)"
        for s in services
        if only is None or s.name == only
        for p in s.ports
        if p.relayed_as_tcp and p.protocol != "tcp"
    ]
