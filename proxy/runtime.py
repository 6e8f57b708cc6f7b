"""What the stacks and connection drivers receive from the process: the data plane.

The process shell (`proxy/main.py`: identity, control stream, listeners, admin, drain)
builds one `DataPlane` and hands it to both stacks; they never see the shell. It holds:

- `settings`: the process's fixed options the request path reads (timeouts, the app's
  addresses, which ports inbound passthrough may reach), frozen.
- `runtime`: a frozen `Runtime` (the config snapshot, the workload identity, the access
  log), replaced in one assignment when the control stream applies a snapshot or the
  certificate is renewed. A request reads it once and finishes on it.
- what lives as long as the process: telemetry, connection pools, cluster state, the
  tracer, the in-flight count and the drain flag, and the per-request helpers that record
  a request (metrics with Istio's labels, access log, span, tap), pick request ids, apply
  faults and the local rate limit, and decide authorization on the current snapshot.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from proxy.accesslog import AccessLog
from proxy.forwarding.authz import decide, decide_tcp
from proxy.forwarding.cluster import ClusterRuntime, Clusters
from proxy.forwarding.forward import Result, local_reply
from proxy.forwarding.routing import RouteLimits, new_bucket, over_limit
from proxy.http1 import Request
from proxy.http1.render import hex_id
from proxy.identity import Identity
from proxy.policy.authz import IPAddress
from proxy.policy.fault import FaultParams
from proxy.policy.fault import decide as decide_fault
from proxy.policy.ratelimit import TokenBucket
from proxy.snapshot import ProxySnapshot
from proxy.telemetry import Series, SeriesMemo, Telemetry, observe_request
from proxy.tracing import Hop, Tracer
from proxy.tracing.attributes import http_span
from proxy.transport.headwatch import HeadWatch
from proxy.transport.streams import ByteWriter, ConnLimiter, Pool
from registry.ca import SpiffeId

_now: Final = time.monotonic  # a static in the compiled core, not time's attribute per call
_RNG: Final = random.Random()


class Tap(Protocol):
    """The admin port's /tap fan-out (proxy/admin.py TapHub), as the data plane uses it."""

    active: bool

    def publish(self, event: dict[str, Any]) -> None: ...


# One finished request as a tap line: (reporter, destination service, result, ms, request,
# peer id, hop) -> the event; the shell binds its own name and service into it.
TapEvent = Callable[[str, str, Result, float, Request, str | None, Hop | None], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Settings:
    """The options the request path reads, fixed for the process's life."""

    service: str
    version: str | None
    header_timeout_s: float
    request_timeout_s: float
    body_idle_timeout_s: float
    inbound_handshake_timeout_s: float
    apps: Mapping[int, tuple[str, int]]  # service port -> the app's address
    # Ports inbound passthrough must never reach (the proxy's own); None: no passthrough
    # at all (explicit mode, where 127.0.0.1 is the host's, not the workload's).
    own_ports: frozenset[int] | None

    def app_address(self, port: int) -> tuple[str, int]:
        return self.apps.get(port, ("127.0.0.1", port))

    def inbound_passthrough(self, port: int) -> bool:
        """Whether a connection to `port`, which the service does not declare, may be
        relayed to the app (Istio's inbound passthrough)."""
        return self.own_ports is not None and port not in self.own_ports


@dataclass(frozen=True, slots=True)
class Runtime:
    """One config snapshot with the identity and access log it runs with."""

    snapshot: ProxySnapshot
    identity: Identity | None
    access_log: AccessLog


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        proxy_id: str,
        telemetry: Telemetry,
        tracer: Tracer,
        tap: Tap,
        tap_event: TapEvent,
        server_ctx: ssl.SSLContext,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.tracer = tracer
        self.tap = tap
        self.tap_event = tap_event
        # The inbound context is long-lived; a renewal loads the new chain into it, so new
        # handshakes use it and open connections keep theirs. (Outbound connections use
        # the Identity's own client context: the pool keys them by identity.)
        self.server_ctx = server_ctx
        self.pool = Pool()
        self.app_pool = Pool()
        self.clusters = Clusters()
        self.route_limits = RouteLimits()  # outbound, per (service, route): routeRateLimits
        self.runtime: Runtime | None = None  # until the first snapshot
        self.inflight = 0
        self.draining = False
        self.head_watch = HeadWatch(settings.header_timeout_s, telemetry.counters)
        self._bucket: TokenBucket | None = None
        self._bucket_key: object = None
        self._rid = secrets.randbits(32)
        self._rid_prefix = proxy_id.encode()[-24:] + b"-"  # request ids: prefix-counter
        # (config version, reporter, service, peer, status, flags) -> the label set's
        # histograms: the 19 Istio labels are made and hashed once per combination.
        self._label_cache: dict[tuple[object, ...], Series] = {}

    @property
    def snapshot(self) -> ProxySnapshot | None:
        rt = self.runtime
        return rt.snapshot if rt is not None else None

    @property
    def identity(self) -> Identity | None:
        rt = self.runtime
        return rt.identity if rt is not None else None

    # -- per-request helpers used by the stacks ---------------------------------------

    def request_id(self) -> bytes:
        self._rid += 1
        return self._rid_prefix + hex_id(self._rid & 0xFFFFFFFF, 8)

    def limiter(self, rt: ClusterRuntime) -> ConnLimiter:
        """The connection limiter of a cluster, following its current limits."""
        lim = rt.limiter
        limits = rt.gauges.limits
        if lim is None:
            lim = rt.limiter = ConnLimiter(limits.max_connections, limits.max_pending)
        else:
            lim.max_connections, lim.max_pending = limits.max_connections, limits.max_pending
        return lim

    def default_inbound_port(self, snap: ProxySnapshot) -> int | None:
        return snap.me.ports[0].port if snap.me and snap.me.ports else None

    def authorize(
        self, peer: SpiffeId | None, req: Request, port: int, source_ip: IPAddress | None = None
    ) -> bool:
        snap = self.snapshot
        if snap is None:
            return False
        d = decide(snap.compiled_authz, peer, req, port, source_ip)
        return d.allowed

    def authorize_tcp(
        self, peer: SpiffeId | None, port: int, source_ip: IPAddress | None = None
    ) -> bool:
        """AuthorizationPolicy on a TCP port: only source and port fields can match."""
        snap = self.snapshot
        if snap is None:
            return False
        return bool(decide_tcp(snap.compiled_authz, peer, port, source_ip).allowed)

    def rate_limited(self) -> int | None:
        """Seconds to advertise in retry-after when the service's bucket is empty, else None."""
        snap = self.snapshot
        rl = snap.me.rate_limit if snap and snap.me else None
        if rl is None:
            return None
        if self._bucket is None or self._bucket_key != rl:
            self._bucket = new_bucket(rl, time.monotonic)
            self._bucket_key = rl
        return over_limit(self._bucket)

    async def apply_fault(self, fault: FaultParams, writer: ByteWriter) -> int | None:
        """VirtualService fault injection: delay and/or abort, each on its percentage."""
        d = decide_fault(fault, _RNG)
        if d.delay_s:
            await asyncio.sleep(d.delay_s)
        if d.abort_status is not None:
            writer.write(local_reply(d.abort_status, "FI"))
            return d.abort_status
        return None

    def record(
        self,
        snap: ProxySnapshot,
        reporter: str,
        dest_service: str,
        result: Result,
        start: float,
        req: Request,
        peer: SpiffeId | None = None,
        hop: Hop | None = None,
        end: float = -1.0,
        memo: SeriesMemo | None = None,
    ) -> None:
        """Metrics (Istio's labels), the access-log line, the span and the tap event for one
        finished request, which began at `start` and ended at `end` (time.monotonic(); read
        now when not given). The span and the tap cost nothing unless sampled / tapped.
        `memo`: the caller's (one connection's, whose reporter, service and peer do not
        change) last label set, reused while the snapshot, status and flags repeat."""
        ms = ((end if end >= 0.0 else _now()) - start) * 1000.0
        if (
            memo is not None
            and memo.series is not None
            and memo.version == snap.version
            and memo.status == result.status
            and memo.flags == result.flags
        ):
            series = memo.series
        else:
            series = self._series_of(snap, reporter, dest_service, peer, result)
            if memo is not None:
                memo.version, memo.status, memo.flags = snap.version, result.status, result.flags
                memo.series = series
        observe_request(series, ms, result.req_bytes, result.resp_bytes)
        tel = self.telemetry
        if result.flags == "UO":  # a circuit breaker: the cluster's gauges or its pool
            tel.counters["meshctl_proxy_upstream_overflow_total"] += 1
        rt = self.runtime
        if rt is not None and rt.access_log.enabled:
            rt.access_log.write(
                req, result, time.time() - ms / 1000.0, ms, str(peer) if peer else None, reporter
            )
        if hop is not None and hop.recording:
            peer_id = self._peer_of(snap, reporter, dest_service, peer)
            name, attrs, error = http_span(hop, reporter, dest_service, result, req, peer_id)
            self.tracer.finish(hop, name, ms, attrs, error)
        if self.tap.active:
            peer_id = self._peer_of(snap, reporter, dest_service, peer)
            event = self.tap_event(reporter, dest_service, result, ms, req, peer_id, hop)
            self.tap.publish(event)

    def _series_of(
        self,
        snap: ProxySnapshot,
        reporter: str,
        dest_service: str,
        peer: SpiffeId | None,
        result: Result,
    ) -> Series:
        # The 19 Istio labels of a request depend on few things: computed once per
        # combination and config version, not per request.
        # The peer by its two strings: a SpiffeId hashes in interpreted Python (~1,300
        # instructions), its strings keep their hashes.
        key = (
            snap.version,
            reporter,
            dest_service,
            peer.trust_domain if peer is not None else None,
            peer.path if peer is not None else None,
            result.status,
            result.flags,
        )
        series = self._label_cache.get(key)
        if series is None:
            if len(self._label_cache) > 4096:
                self._label_cache.clear()
            series = self._label_cache[key] = self.telemetry.series(
                self._labels(snap, reporter, dest_service, peer, result))
        return series

    def _peer_of(
        self, snap: ProxySnapshot, reporter: str, dest_service: str, peer: SpiffeId | None
    ) -> str | None:
        """The other side's SPIFFE ID: the upstream's (verified at connect) or the caller's."""
        if reporter == "source":
            return snap.config.spiffe_id(dest_service)
        return str(peer) if peer else None

    def record_tcp(
        self,
        snap: ProxySnapshot,
        reporter: str,
        dest_service: str,
        peer: SpiffeId | None,
        *,
        opened: bool = False,
        sent: int = 0,
        received: int = 0,
    ) -> None:
        """istio_tcp_* for one connection: opened at start; bytes and closed at the end."""
        full = self._labels(snap, reporter, dest_service, peer, None)
        labels = full[:15] + full[17:]  # TCP metrics carry no response_code/grpc status
        tel = self.telemetry
        if opened:
            tel.tcp_opened[labels] += 1
            return
        tel.tcp_closed[labels] += 1
        tel.tcp_sent[labels] += sent
        tel.tcp_received[labels] += received

    def _labels(
        self,
        snap: ProxySnapshot,
        reporter: str,
        dest_service: str,
        peer: SpiffeId | None,
        result: Result | None,
    ) -> tuple[str, ...]:
        ns = snap.config.namespace
        me = self.settings.service
        version = self.settings.version or "unknown"
        my_wl = f"{me}-{self.settings.version}" if self.settings.version else me
        mine = str(self.identity.spiffe_id) if self.identity else "unknown"
        if reporter == "source":
            src = (my_wl, me, version, mine)
            dst = (dest_service, dest_service, "unknown", snap.config.spiffe_id(dest_service))
            mtls = "mutual_tls"
        else:
            peer_svc = (peer.service_account if peer else None) or "unknown"
            src = (peer_svc, peer_svc, "unknown", str(peer) if peer else "unknown")
            dst = (my_wl, me, version, mine)
            mtls = "mutual_tls" if peer else "none"
        return (
            reporter,
            src[0],
            ns,
            src[3],
            src[1],
            src[2],
            dst[0],
            ns,
            dst[3],
            dst[1],
            dst[2],
            f"{dest_service}.{ns}",
            dest_service,
            ns,
            "http" if result else "tcp",
            str(result.status) if result else "-",
            "-",
            (result.flags or "-") if result else "-",
            mtls,
        )
