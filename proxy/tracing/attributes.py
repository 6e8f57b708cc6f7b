"""A finished HTTP request as span attributes (OpenTelemetry HTTP semantic conventions)."""

from __future__ import annotations

from proxy.forwarding.forward import Result
from proxy.http1 import Request
from proxy.tracing.span import CLIENT, Attr, Hop


def http_span(
    hop: Hop, reporter: str, dest_service: str, result: Result, req: Request, peer_id: str | None
) -> tuple[str, tuple[Attr, ...], bool]:
    """(name, attributes, error) of one hop's span; built only for a recording hop.

    Stable HTTP attributes of semconv v1.26, plus the mesh's own under `meshctl.` and
    Envoy's `guid:x-request-id`."""
    method = req.method.decode("latin-1")
    host = (req.host or b"").decode("latin-1").rpartition(":")
    status = result.status
    attrs: list[Attr] = [
        ("http.request.method", method),
        ("url.path", req.target.partition(b"?")[0].decode("latin-1")),
        ("http.response.status_code", status),
        ("server.address", host[0] or host[2] or dest_service),
        ("network.protocol.version", req.version.decode("latin-1")),
        ("meshctl.reporter", reporter),
        ("meshctl.destination.service", dest_service),
        ("meshctl.response_flags", result.flags or "-"),
    ]
    if peer_id:
        attrs.append(("meshctl.peer.spiffe_id", peer_id))
    if result.attempts > 1:
        attrs.append(("http.request.resend_count", result.attempts - 1))
    if result.upstream:
        attrs.append(("meshctl.upstream.address", result.upstream.split("/")[0]))
    rid = req.get(b"x-request-id")
    if rid is not None:
        attrs.append(("guid:x-request-id", rid.decode("latin-1")))
    # Client spans: 4xx and 5xx are errors; server spans: 5xx only (semconv).
    error = status >= 500 or (hop.kind == CLIENT and status >= 400)
    if error:
        attrs.append(("error.type", str(status) if result.flags in ("", "-") else result.flags))
    return f"{method} {dest_service}", tuple(attrs), error
