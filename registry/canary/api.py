"""`/v1/canaries`: the operator's canary calls (start, status, promote, abort).

    GET  /v1/canaries                     every canary, in progress or the last of each service
    POST /v1/canaries                     {service, to, from?, route?, policy?}: start one
    POST /v1/canaries/{service}/promote   promote now (100 % to the new subset)
    POST /v1/canaries/{service}/abort     roll back now (100 % to the baseline)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from aiohttp import web

from registry.canary.runner import CanaryError, Runner
from registry.config.model import CanaryPolicy

__all__ = ["add_routes", "policy_from_wire"]

Authorize = Callable[[web.Request], bool]  # True for the operator; raises 401/403 otherwise


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, sort_keys=True))


def policy_from_wire(data: Any) -> CanaryPolicy:
    """A policy from JSON (fields as CanaryPolicy's, missing ones default); ValueError."""
    if data is None:
        return CanaryPolicy()
    if not isinstance(data, dict):
        raise ValueError("`policy` must be an object")
    known = {f.name for f in fields(CanaryPolicy)}
    if unknown := sorted(set(data) - known):
        raise ValueError(f"unknown policy field(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known))}")
    kw: dict[str, Any] = {}
    for k, v in data.items():
        if k == "steps":
            if not isinstance(v, list) or not all(type(s) is int for s in v):
                raise ValueError("`steps` must be a list of integers")
            kw[k] = tuple(v)
        elif k in ("min_requests", "failures"):
            if type(v) is not int:
                raise ValueError(f"`{k}` must be an integer")
            kw[k] = v
        else:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"`{k}` must be a number")
            kw[k] = float(v)
    return CanaryPolicy(**kw)


def add_routes(app: web.Application, runner: Runner, operator: Authorize,
               elsewhere: Callable[[], str | None] = lambda: None) -> None:
    """`elsewhere`: why this registry replica does not run canaries (docs/etcd.md), or None."""

    def guard(request: web.Request, *, acts: bool = False) -> web.Response | None:
        if not operator(request):
            return _json({"error": "canaries are the operator's: use the operator "
                                   "credential"}, 403)
        if acts and (why := elsewhere()) is not None:
            return _json({"error": why}, 409)
        return None

    async def listing(request: web.Request) -> web.Response:
        return guard(request) or _json({"canaries": await runner.status()})

    async def begin(request: web.Request) -> web.Response:
        if (refused := guard(request, acts=True)) is not None:
            return refused
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            service, to = body.get("service"), body.get("to")
            from_, route = body.get("from"), body.get("route")
            if not isinstance(service, str) or not isinstance(to, str) or not service or not to:
                raise ValueError("`service` and `to` are required (non-empty strings)")
            if not all(x is None or isinstance(x, str) for x in (from_, route)):
                raise ValueError("`from` and `route` must be strings")
            policy = policy_from_wire(body.get("policy"))
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        try:
            c = await runner.begin(service, to, from_, route, policy)
        except CanaryError as exc:
            return _json({"error": str(exc)}, 409)
        return _json(runner.status_of(c.service))

    async def end(request: web.Request) -> web.Response:
        if (refused := guard(request, acts=True)) is not None:
            return refused
        service, action = request.match_info["service"], request.match_info["action"]
        try:
            c = await (runner.promote(service) if action == "promote" else runner.abort(service))
        except CanaryError as exc:
            return _json({"error": str(exc)}, 409)
        return _json(runner.status_of(c.service))

    app.add_routes([
        web.get("/v1/canaries", listing),
        web.post("/v1/canaries", begin),
        web.post(r"/v1/canaries/{service}/{action:promote|abort}", end),
    ])
