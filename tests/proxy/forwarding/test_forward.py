"""The forward loop's retries, in process: the real outbound stack's targets over plain
HTTP to two local servers, one answering 503. With Istio's previous_hosts predicate a retry
goes to an endpoint not tried yet, whatever the balancer (seeded where it draws)."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections import defaultdict
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from proxy import compiled
from proxy.forwarding.cluster import Clusters, endpoint_key
from proxy.forwarding.forward import Plan, Result, Started, forward
from proxy.http1 import Request, RequestParser
from proxy.outbound.stack import Outbound, _Admission
from proxy.policy.clock import FakeClock
from proxy.policy.retry import RetryParams
from proxy.snapshot import Cluster
from proxy.tracing import CLIENT, Tracer
from proxy.transport.streams import Pool
from registry.config.model import (
    ConnectionPool,
    HTTPSettings,
    LoadBalancer,
    TCPSettings,
    TrafficPolicy,
)
from registry.server.catalog import Endpoint

# The stack's Proxy, snapshot and downstream channel are stand-ins here, which the compiled
# core's type checks refuse: the same cases run through real proxies, compiled or not, in
# tests/integration/test_resilience.py (test_a_retry_goes_to_an_endpoint_not_tried_yet,
# test_per_try_timeout_*).
pytestmark = pytest.mark.skipif(
    compiled.STATUS.compiled, reason="stand-ins need the interpreted core (MESH_COMPILED=0)"
)


class _Upstream:
    """A plain HTTP/1.1 server answering every request with `status`, counting them."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while await r.readuntil(b"\r\n\r\n"):
                self.requests += 1
                w.write(b"HTTP/1.1 %d X\r\ncontent-length: 2\r\n\r\nok" % self.status)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


class _Writer:
    """The downstream side: what forward() writes to the client."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.transport = SimpleNamespace(get_write_buffer_size=lambda: 0)

    def write(self, data: bytes) -> None:
        self.out += data

    async def drain(self) -> None:
        return None


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[_Upstream, _Upstream]]:
    bad, good = _Upstream(503), _Upstream(200)
    await bad.start()
    await good.start()
    yield bad, good
    for u in (bad, good):
        assert u.server is not None
        u.server.close()


BALANCERS = {
    "round_robin": LoadBalancer("ROUND_ROBIN", None),
    "least_request": LoadBalancer("LEAST_REQUEST", None),
    "random": LoadBalancer("RANDOM", None),
    "peak_ewma": None,  # our default
    "ring_hash": LoadBalancer(None, "x-user"),
}


@pytest.mark.parametrize("name", list(BALANCERS))
async def test_a_retry_never_goes_back_to_the_endpoint_that_failed(
    upstreams: tuple[_Upstream, _Upstream], name: str
) -> None:
    bad, good = upstreams
    eps = [Endpoint(f"backend-{u.port}", "backend", "127.0.0.1", u.port) for u in (bad, good)]
    # tls DISABLE: plaintext to the "peer proxies" (here the servers themselves).
    policy = TrafficPolicy(BALANCERS[name], None, None, "DISABLE")
    rt = Clusters(clock=FakeClock(), rng=random.Random(19)).get("backend", None, policy, eps)
    cluster = Cluster("backend", None, tuple(eps), policy, rt)
    counters: dict[str, float] = defaultdict(float)
    proxy = SimpleNamespace(identity=None, limiter=lambda rt: None,
                            telemetry=SimpleNamespace(counters=counters))
    snap = SimpleNamespace(config=SimpleNamespace(namespace="default",
                                                  spiffe_id=lambda s: f"spiffe://t/{s}"))
    view = SimpleNamespace(service=SimpleNamespace(name="backend"))
    outbound = Outbound(cast(Any, proxy))
    pool = Pool()
    retry = RetryParams(attempts=3, retry_on=frozenset({"5xx"}))
    n = 100
    for i in range(n):
        key = b"user-%d" % i
        head = b"GET / HTTP/1.1\r\nhost: backend\r\nx-user: %s\r\n\r\n" % key
        req = RequestParser().feed(head)[0]
        assert isinstance(req, Request)
        hash_key = key if rt.hash_header else None
        assert rt.gauges.try_acquire_request()
        admission = _Admission(rt, rt.gauges, counters, Tracer().start([], CLIENT),
                               (outbound, cast(Any, snap), cast(Any, view), cluster, 8080,
                                hash_key))
        plan = Plan(admission, [], frozenset(), frozenset(), retry, None)
        before = bad.requests
        writer = _Writer()
        try:
            result: Result = await forward(req, cast(Any, None), cast(Any, writer), pool,
                                           plan, Started(b""))
        finally:
            admission.release()
        assert result.status == 200, (i, result)
        assert result.upstream.startswith(endpoint_key(eps[1])), result
        assert bad.requests - before <= 1, f"request {i} sent to the failing endpoint twice"
        assert result.attempts == 1 + (bad.requests - before)
    assert bad.requests > 0  # the failing endpoint was picked first at times
    assert good.requests == n


async def test_per_try_timeout_cuts_a_tls_handshake_never_answered() -> None:
    # A stopped peer proxy: TCP accepted, the ClientHello never answered. The per-try
    # timeout (200 ms) bounds the attempt, connecting included, not the connect timeout
    # (60 s here): 504 with flag UT, the attempt counted, the connection given up.
    closed = asyncio.Event()

    async def hang(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await r.read(65536):
            pass
        closed.set()
        w.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ep = Endpoint("backend-hung", "backend", "127.0.0.1", port)
    pool_policy = ConnectionPool(TCPSettings(connect_timeout_s=60.0), HTTPSettings())
    policy = TrafficPolicy(LoadBalancer("ROUND_ROBIN", None), pool_policy, None, None)  # mTLS
    rt = Clusters(clock=FakeClock(), rng=random.Random(1)).get("backend", None, policy, [ep])
    cluster = Cluster("backend", None, (ep,), policy, rt)
    counters: dict[str, float] = defaultdict(float)
    ident = SimpleNamespace(client_ctx=ssl.create_default_context())
    proxy = SimpleNamespace(identity=ident, limiter=lambda rt: None,
                            telemetry=SimpleNamespace(counters=counters))
    snap = SimpleNamespace(config=SimpleNamespace(namespace="default",
                                                  spiffe_id=lambda s: f"spiffe://t/{s}"))
    view = SimpleNamespace(service=SimpleNamespace(name="backend"))
    assert rt.gauges.try_acquire_request()
    admission = _Admission(rt, rt.gauges, counters, Tracer().start([], CLIENT),
                           (Outbound(cast(Any, proxy)), cast(Any, snap), cast(Any, view),
                            cluster, 8080, None))
    retry = RetryParams(attempts=0, per_try_timeout_s=0.2)
    plan = Plan(admission, [], frozenset(), frozenset(), retry, None)
    req = RequestParser().feed(b"GET / HTTP/1.1\r\nhost: backend\r\n\r\n")[0]
    assert isinstance(req, Request)
    writer = _Writer()
    try:
        async with asyncio.timeout(10):  # a deadline for the test, well under the 60 s
            result = await forward(req, cast(Any, None), cast(Any, writer), Pool(), plan,
                                   Started(b""))
            await closed.wait()  # the proxy gave the connection up
    finally:
        admission.release()
        server.close()
    assert (result.status, result.flags, result.attempts) == (504, "UT", 1)
    assert bytes(writer.out).endswith(b"upstream request timeout")
    assert counters["meshctl_proxy_upstream_rq_per_try_timeout_total"] == 1
