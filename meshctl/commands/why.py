"""`meshctl why SOURCE DESTINATION [PATH]`: which route, subsets, endpoints, policy, retry
and timeout apply to one request, computed with the proxy's own code on the live config."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from common.proxies import ObserveError, local_proxies
from common.state import mesh_home
from meshctl.commands.remote import OperatorFileOpt, RegistryOpt, client
from meshctl.observe.cli import Output, OutputOpt, echo_json, user_errors
from meshctl.observe.explain import explain

__all__ = ["why"]


def why(
    source: Annotated[str, typer.Argument(help="The calling service.")],
    destination: Annotated[str, typer.Argument(help="The called service.")],
    path: Annotated[str, typer.Argument(help="The request path.")] = "/",
    method: Annotated[str, typer.Option(help="The request method.")] = "GET",
    header: Annotated[
        list[str], typer.Option("--header", "-H", help="A request header K=V (repeatable).")
    ] = [],  # noqa: B006
    port: Annotated[int | None, typer.Option(help="Destination port (default: its first).")] = None,
    output: OutputOpt = Output.text,
    registry: RegistryOpt = None,
    operator_token_file: OperatorFileOpt = None,
) -> None:
    """Explain what the mesh does with SOURCE calling DESTINATION at PATH."""
    headers = []
    for h in header:
        k, sep, v = h.partition("=")
        if not sep or not k:
            raise typer.BadParameter(f"--header `{h}`: expected NAME=VALUE")
        headers.append((k.strip(), v.strip()))
    home = mesh_home()
    with user_errors("why"):
        reg = client(registry, operator_token_file)
        config = reg.call("GET", "/v1/config")
        catalog = reg.call("GET", "/v1/catalog")
        answer = explain(
            config["config"], catalog["endpoints"], source, destination, path, method,
            headers, port, _ejected(home, source),
        )  # fmt: skip
        answer["config_version"] = config["version"]
    if output == Output.json:
        echo_json(answer)
        return
    _print(answer)


def _ejected(home: Any, source: str) -> dict[tuple[str, str | None], list[str]]:
    """(service, subset) -> ejected hosts, as the source's proxies on this host see them."""
    out: dict[tuple[str, str | None], list[str]] = {}
    for p in local_proxies(home):
        if p.service != source:
            continue
        try:
            dump = p.admin_json("/config_dump", timeout=3)
        except ObserveError:
            continue
        for c in dump.get("clusters", []):
            out.setdefault((c["service"], c["subset"]), []).extend(c.get("ejected", []))
    return out


def _print(a: dict[str, Any]) -> None:
    out = Console(highlight=False)
    r = a["request"]
    out.print(
        f"[bold]{a['source']} -> {a['destination']}:{a['port']}[/] {r['method']} {r['path']} "
        f"({a['protocol']}, config v{a['config_version']})"
    )
    for t in a.get("routes_tried", []):
        mark = "[green]match[/]" if t["matches"] else "no match"
        out.print(f"  route {t['index']} {t['name'] or '-'}: {mark}")
    route = a.get("route")
    if route is None:
        out.print("  [red]no route matches[/]")
    elif route.get("note"):
        out.print(f"  [yellow]{route['note']}[/]")
        for r in a.get("http_routes_not_applied", []):
            out.print(f"  [yellow]http route {r['index']} {r['name']} ({r['source']}): not "
                      "applied on this port[/]")
    elif route.get("default"):
        out.print("  no VirtualService route: default route (every endpoint, no subset)")
    else:
        out.print(f"  [bold]route[/] {route['name']} (index {route['index']})")
    if route and "retries" in route:
        rt = route["retries"]
        out.print(
            f"  timeout {route['timeout_s'] or 'none'}; retries {rt['attempts']} on "
            f"{','.join(rt['retry_on'])} (per try {rt['per_try_timeout_s'] or '-'}; {rt['source']})"
        )
    for d in a.get("destinations", []):
        sub = f" subset {d['subset']}" if d["subset"] else ""
        per = " of connections" if a.get("carried_as") == "tcp" else ""
        out.print(f"  -> {d['service']}{sub} weight {d['weight']}%{per}, "
                  f"balancer {d['balancer']}")
        for e in d["endpoints"]:
            ej = " [red](ejected)[/]" if e["ejected"] else ""
            out.print(f"       {e['address']} {e['id']}{ej}")
        if not d["endpoints"]:
            out.print("       [red]no healthy endpoint[/]")
    for z in a.get("authorization", []):
        verdict = "[green]ALLOW[/]" if z["allowed"] else "[red]DENY[/]"
        labels = ",".join(f"{k}={v}" for k, v in sorted(z["workload_labels"].items()))
        out.print(f"  authz at {labels}: {verdict} ({z['policy'] or '-'}: {z['reason']})")
    out.print(f"  outcome: [bold]{a['outcome']}[/]")
