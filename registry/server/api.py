"""The registry's HTTPS API: join, renew, config stream, ACK, catalog, tokens, status."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from common.aio import spawn
from common.keepalive import keep_alive
from registry.ca import CsrError, TokenError
from registry.ca.joinstring import JoinString, ca_pin
from registry.server.auth import Caller, caller_of
from registry.server.catalog import HEALTH_STATES, Endpoint
from registry.server.proxies import NotYours
from registry.server.relay import TAP_LINE_MAX, AdminRelay

if TYPE_CHECKING:
    from registry.server.main import Registry

log = logging.getLogger("meshctl.registry.api")
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
RELAY: web.AppKey[AdminRelay] = web.AppKey("relay")
# A ping line on each idle stream: the proxy takes 3 missed pings (15 s) for a dead stream.
STREAM_PING_S = 5.0
MAX_BODY = 64 * 1024
RELAY_MAX_BODY = 6 * 1024 * 1024  # a relayed admin page (4 MiB) as JSON, escapes included
MAX_ACK_LINE = 16 * 1024  # an ACK line on POST /v1/stream; a NACK's error is cut at 2000
PROXY_ID_MAX = 253  # a DNS name's length: ids are workload, container or host names


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, sort_keys=True))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"request body is not JSON: {exc}\n") from exc
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="request body must be a JSON object\n")
    return data


def _auth(request: web.Request) -> Caller:
    reg = request.app[REGISTRY]
    return caller_of(request, reg.ca, reg.operator_token)


def _proxy_id_problem(proxy_id: object) -> str | None:
    if not isinstance(proxy_id, str) or not proxy_id:
        return "field `proxy_id` is required (a non-empty string)"
    if len(proxy_id) > PROXY_ID_MAX or not proxy_id.isascii() or not proxy_id.isprintable():
        return f"`proxy_id` must be at most {PROXY_ID_MAX} printable ASCII characters"
    return None


def _require_str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise web.HTTPBadRequest(text=f"field `{key}` is required (a non-empty string)\n")
    return v


async def join(request: web.Request) -> web.Response:
    """Token + CSR -> SVID + trust bundle. The token names the identity; the CSR only its key."""
    reg = request.app[REGISTRY]
    body = await _body(request)
    token, csr = _require_str(body, "token"), _require_str(body, "csr")
    try:
        identity = await reg.tokens.redeem(token)
    except TokenError as exc:
        reg.metrics["join_refused"] += 1
        return _error(503 if exc.reason == "unavailable" else 403, f"join refused: {exc}")
    try:
        cert = reg.ca.sign_csr(csr.encode(), identity, reg.cert_ttl_s())
    except CsrError as exc:
        reg.metrics["join_refused"] += 1
        return _error(400, f"CSR refused: {exc}")
    reg.metrics["svids_issued"] += 1
    return _json(
        {
            "certificate": cert.decode(),
            "bundle": reg.ca.bundle_pem.decode(),
            "spiffe_id": str(identity),
            "epoch": reg.epoch,
        }
    )


async def renew(request: web.Request) -> web.Response:
    """mTLS with the current SVID + a new CSR -> a new SVID for the same identity."""
    reg = request.app[REGISTRY]
    caller = _auth(request)
    if caller.identity is None:
        return _error(403, "renew needs a workload certificate, not the operator credential")
    body = await _body(request)
    try:
        cert = reg.ca.sign_csr(
            _require_str(body, "csr").encode(), caller.identity, reg.cert_ttl_s()
        )
    except CsrError as exc:
        return _error(400, f"CSR refused: {exc}")
    reg.metrics["svids_issued"] += 1
    return _json(
        {
            "certificate": cert.decode(),
            "bundle": reg.ca.bundle_pem.decode(),
            "spiffe_id": str(caller.identity),
        }
    )


async def stream(request: web.Request) -> web.StreamResponse:
    """Newline-delimited JSON: a `view` line whenever the config or the catalog moves.

    The client says what it has (`config`, `catalog`, `epoch`); a view is sent at once if it
    is behind, then after each change. A `ping` line every 5 s keeps the stream alive
    through idle periods and tells the client the registry is still there.

    `POST /v1/stream` is the same stream, full duplex: the request body is the proxy's ACK
    lines (the JSON of POST /v1/ack, one per line), each answered on the stream by an `ack`
    line once recorded, or an `error` line. An ACK then costs a line each way on a
    connection that is already open, not an HTTP request of its own.
    """
    reg = request.app[REGISTRY]
    caller = _auth(request)
    proxy_id = request.query.get("proxy_id", "")
    try:
        have_cfg = int(request.query.get("config", "0"))
        have_cat = int(request.query.get("catalog", "-1"))
    except ValueError:
        return _error(400, "`config` and `catalog` must be integers")
    if request.method == "POST" and not proxy_id:
        return _error(400, "POST /v1/stream carries ACKs: `proxy_id` is required")
    if proxy_id and (problem := _proxy_id_problem(proxy_id)) is not None:
        return _error(400, problem)
    if request.query.get("epoch") != reg.epoch:
        have_cfg, have_cat = 0, -1  # another registry state: start over
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    if request.transport is not None:
        # A push written to a proxy that is gone without a word (its host off, the path
        # black-holed) fails in seconds, not after ~15 min of retransmits: common/keepalive.
        keep_alive(request.transport.get_extra_info("socket"))
    me = asyncio.current_task()
    if me is not None:
        reg.streams.add(me)  # Registry.stop() closes it: it would never end by itself
    service = caller.service or "operator"
    identity = str(caller.identity or "operator")
    if proxy_id:
        reg.proxies.stream_opened(proxy_id, identity, service)
        if caller.identity is not None:
            request.app[RELAY].opened(proxy_id, resp, identity)
        snap_now = reg.store.current
        if snap_now is not None and have_cfg == snap_now.version:
            # The proxy already runs the version in force (a reconnect, or this registry
            # restarted with its state): record it as ACKed, as a view's ACK would.
            try:
                not_after: float | None = float(request.query.get("cert_not_after", ""))
            except ValueError:
                not_after = None
            reg.proxies.ack(proxy_id, identity, service, have_cfg, ok=True,
                            cert_not_after=not_after)
    acks = (spawn(_stream_acks(request, resp, caller, proxy_id), name=f"acks {proxy_id}")
            if request.method == "POST" else None)
    told: list[str] = [] if reg.backend.status() is not None else reg.registry_urls()
    try:
        while True:
            snap = reg.store.current
            if proxy_id and told != (urls := reg.registry_urls()):
                # Replicas on etcd: every replica's URLs, at the start and when they change,
                # so that the proxy moves to another when this one dies (docs/etcd.md).
                told = urls
                await resp.write(b'{"type":"registries","urls":%s}\n' % json.dumps(urls).encode())
            if snap is not None and (snap.version != have_cfg or reg.catalog.version != have_cat):
                have_cfg, have_cat = snap.version, reg.catalog.version
                await resp.write(reg.view_line())
            elif not await reg.notifier.wait(STREAM_PING_S):
                await resp.write(b'{"type":"ping"}\n')
            else:
                continue
    except ConnectionResetError:
        pass  # the proxy went away mid-write; a disconnect while idle cancels this task
    finally:
        if me is not None:
            reg.streams.discard(me)
        if acks is not None:
            acks.cancel()
        if proxy_id:
            reg.proxies.stream_closed(proxy_id, identity)
            request.app[RELAY].closed(proxy_id, resp)
    return resp


async def _stream_acks(request: web.Request, resp: web.StreamResponse, caller: Caller,
                       proxy_id: str) -> None:
    """Read the ACK lines of a POST /v1/stream until the proxy ends its body."""
    reg = request.app[REGISTRY]
    try:
        while line := await request.content.readline(max_line_length=MAX_ACK_LINE):
            if not line.strip():
                continue  # the proxy opens its body with an empty line
            try:
                body = json.loads(line)
            except ValueError as exc:
                problem: str | None = f"ACK line is not JSON: {exc}"
            else:
                if not isinstance(body, dict):
                    problem = "ACK line must be a JSON object"
                elif body.setdefault("proxy_id", proxy_id) != proxy_id:
                    problem = f"ACK for `{body['proxy_id']}` on the stream of `{proxy_id}`"
                else:
                    refused = record_ack(reg, caller, body)
                    problem = None if refused is None else refused[1]
            reply: dict[str, Any] = (
                {"type": "ack", "config_version": body["config_version"],
                 "ok": bool(body.get("ok", True))}
                if problem is None else {"type": "error", "error": problem}
            )
            await resp.write(json.dumps(reply).encode() + b"\n")
    except OSError:
        pass  # the proxy went away; the stream handler is cancelled with the connection
    except HttpProcessingError as exc:
        # A line past MAX_ACK_LINE or broken chunking: the body is not ACK lines. Close the
        # connection, which ends the stream; the proxy reconnects.
        log.warning("stream of %s closed: its ACK lines are unreadable (%s)", proxy_id, exc)
        if request.transport is not None:
            request.transport.close()


def record_ack(reg: Registry, caller: Caller, body: dict[str, Any]) -> tuple[int, str] | None:
    """Record one ACK or NACK, however it came; None, or (HTTP status, what is wrong).

    The row is the caller's: its identity comes from its verified certificate (or is
    `operator`), so a proxy reports only on itself; an id another identity holds is 403.
    """
    version = body.get("config_version")
    if not isinstance(version, int):
        return 400, "field `config_version` is required (an integer)"
    proxy_id = body.get("proxy_id")
    if (problem := _proxy_id_problem(proxy_id)) is not None:
        return 400, problem
    assert isinstance(proxy_id, str)
    ok = bool(body.get("ok", True))
    not_after = body.get("cert_not_after")
    try:
        st = reg.proxies.ack(
            proxy_id,
            str(caller.identity or "operator"),
            caller.service or "operator",
            version,
            ok=ok,
            error=str(body.get("error", "")),
            cert_not_after=float(not_after) if isinstance(not_after, (int, float)) else None,
        )
    except NotYours as exc:
        reg.metrics["acks_refused"] += 1
        return 403, f"ACK refused: {exc}"
    if not ok:
        log.warning("proxy %s NACKed config version %d: %s", st.proxy_id, version, st.nack_error)
    # No notifier.notify() here: streams wait for config and catalog changes, not ACKs, and
    # waking every stream on every ACK cost N x N wake-ups per push (100 proxies: 10 000).
    return None


async def ack(request: web.Request) -> web.Response:
    """A proxy says it runs `version` (ok) or refused it (ok=false, with the error)."""
    reg = request.app[REGISTRY]
    caller = _auth(request)
    refused = record_ack(reg, caller, await _body(request))
    if refused is not None:
        return _error(*refused)
    return _json({"ok": True})


def _may_write_endpoint(caller: Caller, service: str) -> bool:
    # A workload may register only endpoints of its own service; launchers use the operator
    # credential. A stolen payments certificate cannot pull orders' traffic.
    return caller.operator or caller.service == service


_REASON_ERROR = "field `reason` must be a string (why the endpoint is not healthy)"


async def register_endpoint(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    caller = _auth(request)
    body = await _body(request)
    service = _require_str(body, "service")
    if not _may_write_endpoint(caller, service):
        return _error(403, f"identity {caller.identity} may not register endpoints of `{service}`")
    port = body.get("inbound_port")
    labels = body.get("labels", {})
    health = body.get("health", "healthy")
    if not isinstance(port, int) or not 0 < port < 65536:
        return _error(400, "field `inbound_port` must be a port number")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        return _error(400, "field `labels` must be a map of strings")
    if health not in HEALTH_STATES:
        return _error(400, f"field `health` must be one of {', '.join(HEALTH_STATES)}")
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        return _error(400, _REASON_ERROR)
    ep = Endpoint.from_wire(
        {
            "id": _require_str(body, "id"),
            "service": service,
            "address": _require_str(body, "address"),
            "inbound_port": port,
            "labels": labels,
            "identity": str(caller.identity) if caller.identity else str(body.get("identity", "")),
            "health": health,
            "reason": reason if health != "healthy" else "",
        }
    )
    old = reg.catalog.get(ep.id)
    if old is not None and not _may_write_endpoint(caller, old.service):
        return _error(403, f"endpoint {ep.id} belongs to `{old.service}`")
    return _json(reg.catalog.register(ep).to_wire())


async def heartbeat(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    caller = _auth(request)
    ep_id = request.match_info["id"]
    old = reg.catalog.get(ep_id)
    if old is None:
        return _error(404, f"no endpoint {ep_id}: register it again")
    if not _may_write_endpoint(caller, old.service):
        return _error(403, f"endpoint {ep_id} belongs to `{old.service}`")
    body = await _body(request)
    health = body.get("health")
    if health is not None and health not in HEALTH_STATES:
        return _error(400, f"field `health` must be one of {', '.join(HEALTH_STATES)}")
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        return _error(400, _REASON_ERROR)
    ep = reg.catalog.heartbeat(ep_id, health, reason)
    assert ep is not None
    return _json(ep.to_wire())


async def deregister(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    caller = _auth(request)
    ep_id = request.match_info["id"]
    old = reg.catalog.get(ep_id)
    if old is None:
        return _json({"removed": False})
    if not _may_write_endpoint(caller, old.service):
        return _error(403, f"endpoint {ep_id} belongs to `{old.service}`")
    return _json({"removed": reg.catalog.deregister(ep_id)})


async def catalog(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    _auth(request)
    return _json(
        {
            "version": reg.catalog.version,
            "endpoints": [e.to_wire() for e in reg.catalog.endpoints()],
        }
    )


async def config(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    _auth(request)
    snap = reg.store.current
    if snap is None:
        return _error(503, "no valid config has been loaded yet")
    return web.Response(
        body=b'{"version":%d,"config":%s}' % (snap.version, snap.wire),
        content_type="application/json",
    )


async def create_token(request: web.Request) -> web.Response:
    """Operator only: mint a join token for exactly one service identity (one-time, or
    reusable until it expires or is revoked)."""
    reg = request.app[REGISTRY]
    caller = _auth(request)
    if not caller.operator:
        return _error(403, "only the operator may mint join tokens")
    body = await _body(request)
    ttl = body.get("ttl_s", 3600)
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or ttl <= 0:
        return _error(400, "field `ttl_s` must be a positive number of seconds")
    reusable = body.get("reusable", False)
    if not isinstance(reusable, bool):
        return _error(400, "field `reusable` must be true or false")
    try:
        service = _require_str(body, "service")
        identity = reg.identity_for(service)
    except ValueError as exc:
        return _error(400, str(exc))
    try:
        token = await reg.tokens.create(identity, float(ttl), reusable=reusable)
    except TokenError as exc:  # the shared store did not answer (registry/store/tokens.py)
        return _error(503, str(exc))
    # The join string: the token, where to reach this registry and the CA's pin, so a new
    # host needs nothing else (registry/ca/joinstring.py).
    join = _join_string(reg, token, service, reusable=reusable)
    return _json({"token": token, "join": join, "spiffe_id": str(identity),
                  "token_id": token.split(".")[1], "reusable": reusable})


def _join_string(reg: Registry, token: str, service: str | None, *,
                 reusable: bool = False) -> str:
    pin = ca_pin(reg.ca.bundle_pem.decode())
    return JoinString(token, tuple(reg.registry_urls()), pin, service, reusable).encode()


async def list_tokens(request: web.Request) -> web.Response:
    """Operator only: every token (never a secret): id, identity, kind, uses, expiry."""
    reg = request.app[REGISTRY]
    if not _auth(request).operator:
        return _error(403, "only the operator may list join tokens")
    return _json({"tokens": [
        {"token_id": r.token_id, "spiffe_id": str(r.identity),
         "service": r.identity.service_account, "reusable": r.reusable, "uses": r.uses,
         "created_at": r.created_at.timestamp(), "expires_at": r.expires_at.timestamp(),
         "used_at": r.used_at.timestamp() if r.used_at else None,
         "revoked_at": r.revoked_at.timestamp() if r.revoked_at else None}
        for r in await reg.tokens.list()]})


async def revoke_token(request: web.Request) -> web.Response:
    """Operator only: refuse every later use of a token (by its id)."""
    reg = request.app[REGISTRY]
    if not _auth(request).operator:
        return _error(403, "only the operator may revoke join tokens")
    try:
        rec = await reg.tokens.revoke(request.match_info["id"])
    except TokenError as exc:
        return _error(404, str(exc))
    return _json({"token_id": rec.token_id, "revoked": True})


async def operator_join(request: web.Request) -> web.Response:
    """Operator only: the operator credential as a join string (the registry's URLs and CA
    pin beside it), for `meshctl token operator` to hand to another host."""
    reg = request.app[REGISTRY]
    if not _auth(request).operator:
        return _error(403, "only the operator may copy the operator credential")
    return _json({"operator": _join_string(reg, reg.operator_token, None)})


async def set_route_weights(request: web.Request) -> web.Response:
    """Operator only: `meshctl route set-weight` from another host. The registry edits the
    VirtualService's file in its config directory in place (comments kept), and its watcher
    publishes the change as for an edit made on this host."""
    from registry.config.apply import apply_weights
    from registry.config.edit import EditError, parse_weights

    reg = request.app[REGISTRY]
    if not _auth(request).operator:
        return _error(403, "only the operator may change routes")
    body = await _body(request)
    weights, route, dry_run = body.get("weights"), body.get("route"), body.get("dry_run", False)
    ok = (isinstance(weights, dict) and all(isinstance(k, str) and isinstance(v, int)
                                             and not isinstance(v, bool)
                                             for k, v in weights.items())
          and (route is None or isinstance(route, str)) and isinstance(dry_run, bool))
    if not ok or not isinstance(weights, dict):
        return _error(400, "expected {\"weights\": {SUBSET: PERCENT, ...}, \"route\": "
                      "NAME or null, \"dry_run\": bool}")
    service = request.match_info["service"]
    try:
        wanted = parse_weights([f"{k}={v}" for k, v in weights.items()])
        change = await asyncio.to_thread(apply_weights, reg.config_dir, service, wanted,
                                         route, dry_run=dry_run)
    except EditError as exc:
        return _error(409, str(exc))
    return _json(change.to_wire(dry_run=dry_run))


async def show_routes(request: web.Request) -> web.Response:
    """`meshctl route show` from another host: any authenticated caller (as /v1/config)."""
    from registry.config.apply import load_valid
    from registry.config.edit import EditError
    from registry.config.routeview import route_view

    reg = request.app[REGISTRY]
    _auth(request)
    try:
        view = await asyncio.to_thread(
            lambda: route_view(load_valid(reg.config_dir), reg.config_dir,
                               request.match_info["service"]))
    except EditError as exc:
        return _error(404, str(exc))
    return _json(view)


async def proxy_admin(request: web.Request) -> web.Response:
    """Operator only: a read-only admin page of a proxy on any host, relayed over its stream
    (registry/server/relay.py)."""
    if not _auth(request).operator:
        return _error(403, "only the operator may read proxies' admin pages")
    status, text = await request.app[RELAY].ask(request.match_info["id"],
                                                request.query.get("path", ""))
    return web.Response(status=status, text=text,
                        content_type="text/plain" if request.query.get("path") == "/metrics"
                        else "application/json")


async def admin_reply(request: web.Request) -> web.Response:
    """A proxy's answer to a relayed read; only from the identity holding that stream."""
    caller = _auth(request)
    if caller.identity is None:
        return _error(403, "admin replies come from proxies (client certificate)")
    # An admin page may be larger than MAX_BODY (client_max_size applies to .json() only).
    raw = bytearray()
    while chunk := await request.content.read(64 * 1024):
        raw += chunk
        if len(raw) > RELAY_MAX_BODY:
            return _error(413, f"admin reply larger than {RELAY_MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return _error(400, f"request body is not JSON: {exc}")
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    problem = request.app[RELAY].answer(str(caller.identity), body)
    return _error(409, problem) if problem else _json({"ok": True})


async def proxy_tap(request: web.Request) -> web.StreamResponse:
    """Operator only: a proxy's live tap (NDJSON, as its admin /tap), relayed over its stream
    and its POST /v1/tap-reply (registry/server/relay.py); the filters are /tap's."""
    if not _auth(request).operator:
        return _error(403, "only the operator may tap proxies")
    relay = request.app[RELAY]
    session = await relay.open_tap(request.match_info["id"], dict(request.query))
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    try:
        await resp.prepare(request)
        async for line in session.lines():
            await resp.write(line)
    except ConnectionResetError:
        pass  # the operator left mid-write; one who leaves while idle cancels this
    finally:
        relay.close_tap(session)  # ends the proxy's request: it stops sending
    return resp


async def tap_reply(request: web.Request) -> web.StreamResponse:
    """A proxy's side of a relayed tap: its tap lines as the request body, for as long as the
    answer (empty) lasts; only from the identity holding that proxy's stream."""
    caller = _auth(request)
    if caller.identity is None:
        return _error(403, "tap replies come from proxies (client certificate)")
    try:
        n = int(request.query.get("request", ""))
    except ValueError:
        return _error(400, "`request` must be the tap's number")
    session = request.app[RELAY].tap_for(str(caller.identity),
                                         request.query.get("proxy_id", ""), n)
    if isinstance(session, str):
        return _error(409, session)
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    await resp.write(b"\n")  # the head now: the proxy starts sending once it has it

    async def pump() -> None:
        try:
            while line := await request.content.readline(max_line_length=TAP_LINE_MAX):
                if line.strip():
                    session.offer(line)
            session.end("")  # the proxy ended its body: a plain end (any reason came before)
        except LineTooLong:
            session.end(f"proxy {session.proxy_id} sent a tap line over {TAP_LINE_MAX} bytes")
        except (OSError, HttpProcessingError):
            pass  # the connection went: `finally` below says so

    reading = spawn(pump(), name=f"tap {n}")
    try:
        await session.done.wait()
    finally:
        reading.cancel()
        session.end(f"proxy {session.proxy_id} disconnected: its tap ends")
    return resp


async def ca_certificate(request: web.Request) -> web.Response:
    """The root certificate, to anyone: public, and a joiner trusts it only if it matches
    the pin in its join string (kubeadm's cluster-info, checked by the discovery hash)."""
    reg = request.app[REGISTRY]
    return web.Response(body=reg.ca.bundle_pem, content_type="application/x-pem-file")


async def status(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    _auth(request)
    return _json(reg.status())


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def build_app(reg: Registry) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[REGISTRY] = reg
    app[RELAY] = AdminRelay()
    app.add_routes(
        [
            web.post("/v1/join", join),
            web.get("/v1/ca", ca_certificate),
            web.post("/v1/renew", renew),
            web.get("/v1/stream", stream),
            web.post("/v1/stream", stream),
            web.post("/v1/ack", ack),
            web.post("/v1/endpoints", register_endpoint),
            web.put("/v1/endpoints/{id}", heartbeat),
            web.delete("/v1/endpoints/{id}", deregister),
            web.get("/v1/catalog", catalog),
            web.get("/v1/config", config),
            web.post("/v1/tokens", create_token),
            web.get("/v1/tokens", list_tokens),
            web.delete("/v1/tokens/{id}", revoke_token),
            web.get("/v1/operator", operator_join),
            web.get("/v1/proxies/{id}/tap", proxy_tap),
            web.post("/v1/tap-reply", tap_reply),
            web.post("/v1/routes/{service}/weights", set_route_weights),
            web.get("/v1/routes/{service}", show_routes),
            web.get("/v1/proxies/{id}/admin", proxy_admin),
            web.post("/v1/admin-reply", admin_reply),
            web.get("/v1/status", status),
            web.get("/healthz", healthz),
        ]
    )
    return app
