"""Each VirtualService / DestinationRule policy changes behaviour through real proxies.

Topology (explicit mode, 127.0.0.1): test client -> client's proxy (one local listener per
upstream) -> mTLS -> backend's proxy (one per replica) -> shop app replica. The shop app
fails or slows down on command (/admin/fail, /admin/slow).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import textwrap
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Mesh, free_port, http_get, wait_until

pytestmark = pytest.mark.slow

MESH_YAML = """\
trustDomain: test.local
namespace: default
services:
  client:
    ports: [{port: 8080, protocol: http, name: http}]
  backend:
    ports: [{port: 8080, protocol: http, name: http}]
  shadow:
    ports: [{port: 8080, protocol: http, name: http}]
  limited:
    ports: [{port: 8080, protocol: http, name: http}]
    rateLimit: {requestsPerUnit: 2, unit: minute, burst: 2}
"""


def _write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def config_src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "mesh.yaml").write_text(MESH_YAML)
    return d


class Backend:
    """Two replicas of `backend` (versions a and b) behind their proxies, and a client."""

    def __init__(
        self, mesh: Mesh, replicas: tuple[str, ...] = ("a", "b"), service: str = "backend"
    ) -> None:
        self.mesh = mesh
        self.apps: dict[str, int] = {}
        for v in replicas:
            _, port = mesh.app(service, v)
            self.apps[v] = port
            mesh.proxy(service, v, app_port=port)
        self.local = free_port()
        self.client = mesh.proxy("client", "v1", upstreams={f"{service}:8080": self.local})
        wait_until(
            lambda: (
                len(
                    [
                        e
                        for e in mesh.api("GET", "/v1/catalog")["endpoints"]
                        if e["service"] == service
                    ]
                )
                == len(replicas)
            ),
            what="backend endpoints",
        )
        wait_until(lambda: self.get("/")[0] == 200, what="first request through the mesh")

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        return http_get(f"http://127.0.0.1:{self.local}{path}", headers=headers)

    def post(self, path: str, body: bytes = b"x") -> int:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.local}{path}", data=body, method="POST"
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    def admin(self, version: str, action: str) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.apps[version]}/admin/{action}", data=b"", method="POST"
        )
        urllib.request.urlopen(req, timeout=5).read()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(
            http_get(f"http://127.0.0.1:{self.client['admin']}/stats")[1]
        )
        return out

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.client['metrics']}/metrics")[1].decode()


@pytest.fixture
def mesh(tmp_path: Path, config_src: Path) -> Iterator[Mesh]:
    m = Mesh(tmp_path, config_src)
    yield m
    m.close()


def _versions(b: Backend, n: int, path: str = "/") -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        status, body, _ = b.get(path)
        seen[json.loads(body)["version"] if status == 200 else str(status)] += 1
    return seen


def test_seed_policy_retries_to_the_other_replica_and_ejects_the_failing_one(mesh: Mesh) -> None:
    # The article's VirtualService and DestinationRule, on `backend`.
    _write(
        mesh.config / "policy.yaml",
        """\
        apiVersion: networking.istio.io/v1beta1
        kind: DestinationRule
        metadata:
          name: backend
        spec:
          host: backend
          trafficPolicy:
            connectionPool:
              tcp:
                maxConnections: 100
              http:
                http1MaxPendingRequests: 50
                maxRequestsPerConnection: 10
            outlierDetection:
              consecutive5xxErrors: 3
              interval: 10s
              baseEjectionTime: 30s
              maxEjectionPercent: 50
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        metadata:
          name: backend
        spec:
          hosts:
          - backend
          http:
          - retries:
              attempts: 3
              perTryTimeout: 500ms
              retryOn: "5xx,reset,connect-failure"
            route:
            - destination:
                host: backend
        """,
    )
    mesh.start_registry()
    b = Backend(mesh)
    b.admin("a", "fail?status=503&count=-1")
    # Every request succeeds: a 503 from `a` is retried on `b` (never on `a` again). `a` is
    # ejected once it has been picked first 3 times (the default balancer, peak EWMA, may
    # take a while to pick it: a's cost decays until it is tried again).
    seen: Counter[str] = Counter()
    ejected = ('meshctl_proxy_outlier_ejections_active'
               '{destination_service_name="backend",subset=""} 1')

    def until_ejected() -> bool:
        seen.update(_versions(b, 5))
        return ejected in b.metrics()

    wait_until(until_ejected, timeout=30, what="`a` ejected after 3 consecutive 5xx")
    assert set(seen) == {"b"}
    retries_before = b.stats()["meshctl_proxy_retries_total"]
    # Each of a's three consecutive 503s was retried once (on b), then a was ejected: one
    # retry fewer means a 503 reached the client, one more means a was tried after ejection.
    assert retries_before == 3
    assert _versions(b, 20) == Counter({"b": 20})
    assert b.stats()["meshctl_proxy_retries_total"] == retries_before


def test_without_retries_a_failing_replica_is_seen(mesh: Mesh) -> None:
    _write(
        mesh.config / "vs.yaml",
        """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: backend}
        spec:
          hosts: [backend]
          http:
          - retries: {attempts: 0}
            route: [{destination: {host: backend}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: backend}
        spec:
          host: backend
          trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
        """,
    )
    mesh.start_registry()
    b = Backend(mesh)
    b.admin("a", "fail?status=503&count=-1")
    seen = _versions(b, 20)
    # Round robin over a and b, no retry, no outlier detection: every other request is a's 503.
    assert seen == Counter({"503": 10, "b": 10})


def test_post_is_not_retried_after_the_upstream_saw_it(mesh: Mesh) -> None:
    _write(
        mesh.config / "vs.yaml",
        """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: backend}
        spec:
          hosts: [backend]
          http:
          - retries: {attempts: 3, retryOn: 5xx}
            route: [{destination: {host: backend}}]
        """,
    )
    mesh.start_registry()
    b = Backend(mesh, replicas=("a",))
    b.admin("a", "fail?status=503&count=1")
    assert b.post("/echo") == 503  # a GET would have been retried
    b.admin("a", "fail?status=503&count=1")
    assert b.get("/")[0] == 200


def test_route_timeout_answers_504_with_flag(mesh: Mesh) -> None:
    _write(
        mesh.config / "vs.yaml",
        """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: backend}
        spec:
          hosts: [backend]
          http:
          - timeout: 300ms
            retries: {attempts: 0}
            route: [{destination: {host: backend}}]
        """,
    )
    mesh.start_registry()
    b = Backend(mesh, replicas=("a",))
    b.admin("a", "slow?ms=2000&count=1")
    status, body, _ = b.get("/")
    assert status == 504 and body == b"upstream request timeout"
    assert 'response_flags="UT"' in b.metrics()
    assert b.get("/")[0] == 200


def test_fault_abort_and_header_operations(mesh: Mesh) -> None:
    _write(
        mesh.config / "vs.yaml",
        """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: backend}
        spec:
          hosts: [backend]
          http:
          - match: [{uri: {prefix: /teapot}}]
            fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
            route: [{destination: {host: backend}}]
          - headers:
              request:
                set: {x-set: one}
                add: {x-added: two}
                remove: [x-drop-me]
              response:
                set: {x-resp: three}
                remove: [x-shop-service]
            route: [{destination: {host: backend}}]
        """,
    )
    mesh.start_registry()
    b = Backend(mesh, replicas=("a",))
    status, _, _ = b.get("/teapot")
    assert status == 418
    status, body, headers = b.get("/echo", headers={"X-Drop-Me": "1", "X-Set": "client"})
    assert status == 200
    seen = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    assert seen["x-set"] == "one" and seen["x-added"] == "two" and "x-drop-me" not in seen
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["x-resp"] == "three" and "x-shop-service" not in lower


def test_mirror_sends_a_shadow_copy_and_drops_its_answer(mesh: Mesh) -> None:
    _write(
        mesh.config / "vs.yaml",
        """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: backend}
        spec:
          hosts: [backend]
          http:
          - route: [{destination: {host: backend}}]
            mirror: {host: shadow}
            mirrorPercentage: {value: 100}
        """,
    )
    mesh.start_registry()
    _, shadow_port = mesh.app("shadow", "v1")
    mesh.proxy("shadow", "v1", app_port=shadow_port)
    wait_until(
        lambda: any(e["service"] == "shadow" for e in mesh.api("GET", "/v1/catalog")["endpoints"]),
        what="shadow",
    )
    b = Backend(mesh, replicas=("a",))
    # The shadow fails every request: the real request must not notice.
    urllib.request.urlopen(
        urllib.request.Request(
            f"http://127.0.0.1:{shadow_port}/admin/fail?status=500&count=-1",
            data=b"",
            method="POST",
        ),
        timeout=5,
    ).read()
    for _ in range(5):
        assert b.get("/echo")[0] == 200
    wait_until(lambda: b.stats().get("meshctl_proxy_mirror_sent_total", 0) >= 5, what="mirror")


def test_local_rate_limit_answers_429_with_retry_after(mesh: Mesh) -> None:
    mesh.start_registry()
    b = Backend(mesh, replicas=("a",), service="limited")
    # The first request was spent by the fixture's readiness probe; burst is 2 per minute.
    statuses = [b.get("/")[0] for _ in range(3)]
    assert statuses[-1] == 429
    status, body, headers = b.get("/")
    assert status == 429 and body == b"local_rate_limited"
    assert int({k.lower(): v for k, v in headers.items()}["retry-after"]) >= 1


def test_connection_pool_overflow_is_a_fast_503_uo(mesh: Mesh) -> None:
    _write(
        mesh.config / "dr.yaml",
        """\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: backend}
        spec:
          host: backend
          trafficPolicy:
            connectionPool:
              tcp: {maxConnections: 1}
              http: {http1MaxPendingRequests: 1, maxRetries: 0}
        """,
    )
    mesh.start_registry()
    b = Backend(mesh, replicas=("a",))
    b.admin("a", "slow?ms=1500&count=-1")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: b.get("/")[0], range(6)))
    # One request holds the only connection, one waits as pending; the other four overflow.
    assert sorted(results) == [200, 200, 503, 503, 503, 503]
    assert 'response_flags="UO"' in b.metrics()


def test_consistent_hash_keeps_a_key_on_one_replica(mesh: Mesh) -> None:
    _write(
        mesh.config / "dr.yaml",
        """\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: backend}
        spec:
          host: backend
          trafficPolicy:
            loadBalancer: {consistentHash: {httpHeaderName: x-user}}
        """,
    )
    mesh.start_registry()
    b = Backend(mesh)
    for user in ("alice", "bob", "carol", "dave"):
        seen = {json.loads(b.get("/", headers={"x-user": user})[1])["version"] for _ in range(8)}
        assert len(seen) == 1


def test_round_robin_spreads_evenly(mesh: Mesh) -> None:
    _write(
        mesh.config / "dr.yaml",
        """\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: backend}
        spec:
          host: backend
          trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
        """,
    )
    mesh.start_registry()
    b = Backend(mesh)
    seen = _versions(b, 20)
    assert seen == Counter({"a": 10, "b": 10})


def _config_pushed(b: Backend, after: int) -> int:
    return int(wait_until(
        lambda: (v := b.stats()["meshctl_proxy_config_version"]) > after and v,
        what="the client proxy takes the new config",
    ))


def test_route_rate_limit_in_the_callers_proxy(mesh: Mesh) -> None:
    def mesh_yaml(burst: int) -> str:
        return MESH_YAML.replace(
            "  backend:\n",
            "  backend:\n    routeRateLimits:\n"
            f"      limited-api: {{requestsPerUnit: 2, unit: minute, burst: {burst}}}\n",
        )

    (mesh.config / "mesh.yaml").write_text(mesh_yaml(2))
    _write(
        mesh.config / "vs.yaml",
        """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: backend}
        spec:
          hosts: [backend]
          http:
          - name: limited-api
            match: [{uri: {prefix: /echo}}]
            route: [{destination: {host: backend}}]
          - name: rest
            route: [{destination: {host: backend}}]
        """,
    )
    mesh.start_registry()
    b = Backend(mesh, replicas=("a",))
    assert [b.get("/echo")[0] for _ in range(2)] == [200, 200]
    status, body, headers = b.get("/echo")
    assert status == 429 and body == b"local_rate_limited"
    assert int({k.lower(): v for k, v in headers.items()}["retry-after"]) >= 1
    assert b.get("/")[0] == 200  # another route of the same service is not limited
    assert b.stats()["meshctl_proxy_rate_limited_total"] == 1
    assert 'response_flags="RL"' in b.metrics()
    # A config push that leaves the limit alone keeps the bucket (still empty) ...
    version = b.stats()["meshctl_proxy_config_version"]
    _write(
        mesh.config / "dr.yaml",
        """\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: backend}
        spec:
          host: backend
          trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
        """,
    )
    version = _config_pushed(b, version)
    assert b.get("/echo")[0] == 429
    # ... and new parameters give a new, full bucket.
    (mesh.config / "mesh.yaml").write_text(mesh_yaml(3))
    _config_pushed(b, version)
    assert [b.get("/echo")[0] for _ in range(4)] == [200, 200, 200, 429]


def _policy(mesh: Mesh, vs_http: str = "", dr_policy: str = "", subsets: str = "") -> None:
    """A VirtualService (its `http` list) and/or a DestinationRule for `backend`."""
    docs = []
    if vs_http:
        docs.append("apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                    "metadata: {name: backend}\nspec:\n  hosts: [backend]\n  http:\n"
                    + textwrap.indent(textwrap.dedent(vs_http), "  "))
    if dr_policy or subsets:
        docs.append("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                    "metadata: {name: backend}\nspec:\n  host: backend\n"
                    + (f"  trafficPolicy: {dr_policy}\n" if dr_policy else "")
                    + textwrap.indent(textwrap.dedent(subsets), "  "))
    (mesh.config / "policy.yaml").write_text("---\n".join(docs))


NO_RETRY = "- retries: {attempts: 0}\n  route: [{destination: {host: backend}}]\n"


def test_fault_delay_holds_the_response_for_at_least_the_delay(mesh: Mesh) -> None:
    _policy(mesh, vs_http="""\
        - fault: {delay: {fixedDelay: 400ms, percentage: {value: 100}}}
          route: [{destination: {host: backend}}]
        """)
    mesh.start_registry()
    b = Backend(mesh, replicas=("a",))
    start = time.monotonic()
    assert b.get("/")[0] == 200
    assert time.monotonic() - start >= 0.4


def test_per_try_timeout_retries_a_slow_try_on_the_other_replica(mesh: Mesh) -> None:
    _policy(mesh, vs_http="""\
        - retries: {attempts: 2, perTryTimeout: 300ms, retryOn: "5xx,reset,connect-failure"}
          route: [{destination: {host: backend}}]
        """, dr_policy="{loadBalancer: {simple: ROUND_ROBIN}}")
    mesh.start_registry()
    b = Backend(mesh)
    b.admin("a", "slow?ms=3000&count=-1")
    # Without perTryTimeout each request sent to `a` would wait the 3 s and answer from `a`.
    assert _versions(b, 6) == Counter({"b": 6})  # a's answer would come, after 3 s
    assert b.stats()["meshctl_proxy_retries_total"] >= 1


def test_max_requests_per_connection_one_opens_a_connection_per_request(mesh: Mesh) -> None:
    _policy(mesh, dr_policy="{connectionPool: {http: {maxRequestsPerConnection: 1}}}")
    mesh.start_registry()
    b = Backend(mesh, replicas=("a",))
    opened = b.stats()["upstream_connections_opened"]
    for _ in range(5):
        assert b.get("/")[0] == 200
    # Keep-alive would have reused one connection for all five.
    assert b.stats()["upstream_connections_opened"] - opened >= 5


def test_a_subsets_traffic_policy_overrides_the_top_level_one(mesh: Mesh) -> None:
    _policy(
        mesh,
        vs_http="""\
        - match: [{headers: {x-subset: {exact: all}}}]
          route: [{destination: {host: backend, subset: all}}]
        - route: [{destination: {host: backend}}]
        """,
        dr_policy="{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}",
        subsets="""\
        subsets:
        - name: all
          labels: {app: backend}
          trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
        """,
    )
    mesh.start_registry()
    b = Backend(mesh)

    def seen(headers: dict[str, str]) -> Counter[str]:
        return Counter(json.loads(b.get("/", headers=headers)[1])["version"] for _ in range(10))

    # The top-level consistent hash keeps one user on one replica ...
    assert len(seen({"x-user": "alice"})) == 1
    # ... the subset's own ROUND_ROBIN replaces it.
    assert seen({"x-user": "alice", "x-subset": "all"}) == Counter({"a": 5, "b": 5})


@pytest.mark.parametrize("simple", ["LEAST_REQUEST", "RANDOM"])
def test_least_request_and_random_use_both_replicas(mesh: Mesh, simple: str) -> None:
    _policy(mesh, dr_policy=f"{{loadBalancer: {{simple: {simple}}}}}")
    mesh.start_registry()
    b = Backend(mesh)
    seen = _versions(b, 40)
    assert set(seen) == {"a", "b"}


@pytest.mark.parametrize(("min_health", "spread"), [(50, True), (0, False)])
def test_min_health_percent_panics_rather_than_failing_every_request(
    mesh: Mesh, min_health: int, spread: bool
) -> None:
    _policy(mesh, vs_http=NO_RETRY, dr_policy=(
        "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 1, "
        f"baseEjectionTime: 60s, maxEjectionPercent: 100, minHealthPercent: {min_health}}}}}"))
    mesh.start_registry()
    b = Backend(mesh)
    b.admin("a", "fail?status=503&count=-1")
    b.admin("b", "fail?status=503&count=-1")
    _versions(b, 6)  # both replicas fail once: both are ejected for 60 s
    b.admin("a", "reset")
    b.admin("b", "reset")
    seen = _versions(b, 10)
    if spread:  # 0 % healthy < 50 %: Envoy's panic mode ignores the ejections
        assert seen == Counter({"a": 5, "b": 5})
    else:  # no panic threshold: every host is ejected, nothing to send to
        assert seen == Counter({"503": 10})
        assert 'response_flags="UH"' in b.metrics()


@pytest.mark.parametrize(("status", "ejected"), [(500, False), (502, True), (503, True),
                                                 (504, True)])
def test_consecutive_gateway_errors_eject_on_502_503_504_only(
    mesh: Mesh, status: int, ejected: bool
) -> None:
    _policy(mesh, vs_http=NO_RETRY, dr_policy=(
        "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 0, "
        "consecutiveGatewayErrors: 2, baseEjectionTime: 60s, maxEjectionPercent: 50}}"))
    mesh.start_registry()
    b = Backend(mesh)
    b.admin("a", f"fail?status={status}&count=-1")
    seen = _versions(b, 20)
    if ejected:
        assert seen[str(status)] == 2 and seen["b"] == 18
    else:
        assert seen == Counter({str(status): 10, "b": 10})


# -- issue 19: a retry never goes back to the endpoint that just failed (previous_hosts) ---


def _keepalive_get(
    conn: http.client.HTTPConnection, path: str, headers: dict[str, str]
) -> tuple[int, bytes]:
    """One request on a kept-alive connection (urllib closes each one, which keeps the
    client proxy's fast path out; this one lets it in)."""
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def _access_log(mesh: Mesh) -> Path:
    """Turn the client's access log on (mesh.yaml `accessLog`), before the registry starts."""
    log = mesh.tmp / "client-access.log"
    (mesh.config / "mesh.yaml").write_text(
        MESH_YAML.replace("  client:\n", f"  client:\n    accessLog: {log}\n")
    )
    return log


def _logged(log: Path, path: str, n: int) -> list[dict[str, Any]]:
    """The client proxy's access-log lines for `path` (flushed every second), once n are in."""

    def lines() -> list[dict[str, Any]] | None:
        if not log.exists():
            return None
        found = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        found = [x for x in found if x["path"] == path and x["reporter"] == "source"]
        return found if len(found) >= n else None

    out: list[dict[str, Any]] = wait_until(lines, what=f"{n} access-log lines for {path}")
    return out


@pytest.mark.parametrize(
    "balancer",
    [
        "{simple: ROUND_ROBIN}",
        "{simple: LEAST_REQUEST}",
        "{simple: RANDOM}",
        "",  # unset: our default, peak EWMA with power of two choices
        "{consistentHash: {httpHeaderName: x-user}}",
    ],
    ids=["round_robin", "least_request", "random", "peak_ewma", "ring_hash"],
)
def test_a_retry_goes_to_an_endpoint_not_tried_yet(mesh: Mesh, balancer: str) -> None:
    # Two replicas, `a` answering 503 to everything, no outlier detection: with Istio's
    # previous_hosts predicate a retry never picks `a` again, so one retry is always enough.
    # (Before the fix, the exclude set held pool keys the balancer never compared with: ~6 %
    # of requests failed with RANDOM, most with peak EWMA, which favours the fast-failing `a`,
    # and every key the ring put on `a`.)
    log = _access_log(mesh)
    _policy(
        mesh,
        vs_http="- retries: {attempts: 3, retryOn: 5xx}\n"
        "  route: [{destination: {host: backend}}]\n",
        dr_policy=f"{{loadBalancer: {balancer}}}" if balancer else "",
    )
    mesh.start_registry()
    b = Backend(mesh)
    b.admin("a", "fail?status=503&count=-1")
    n = 40
    conn = http.client.HTTPConnection("127.0.0.1", b.local, timeout=10)
    try:
        answers = [
            _keepalive_get(conn, "/echo", {"x-user": f"user-{i}"}) for i in range(n)
        ]
    finally:
        conn.close()
    assert [status for status, _ in answers] == [200] * n
    assert {json.loads(body)["version"] for _, body in answers} == {"b"}
    attempts = Counter(line["attempts"] for line in _logged(log, "/echo", n))
    # 1: straight to `b`; 2: `a` once, then `b`. Never `a` twice for one request.
    assert set(attempts) <= {1, 2}, attempts
    assert attempts[2] > 0  # `a` was tried at all (else the test proves nothing)


# -- issue 19: one bad request must not eject a one-endpoint subset ------------------------


def test_one_failing_request_does_not_eject_a_one_endpoint_subset(mesh: Mesh) -> None:
    # The example's policy: 3 consecutive 5xx, maxEjectionPercent 50, 3 retries on 5xx. One
    # request to a path answering 500 makes 4 attempts on v1's only endpoint. Envoy ejects a
    # host only while (ejected + 1) / hosts <= maxEjectionPercent: 1/1 > 50 %, so never.
    _policy(
        mesh,
        vs_http="""\
        - retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,reset,connect-failure"}
          route: [{destination: {host: backend, subset: v1}}]
        """,
        dr_policy="{outlierDetection: {consecutive5xxErrors: 3, interval: 10s, "
        "baseEjectionTime: 30s, maxEjectionPercent: 50}}",
        subsets="""\
        subsets:
        - {name: v1, labels: {version: a}}
        - {name: v2, labels: {version: b}}
        """,
    )
    mesh.start_registry()
    b = Backend(mesh)
    status, _, _ = b.get("/status/500")
    assert status == 500
    assert b.stats()["meshctl_proxy_retries_total"] == 3  # 4 attempts, all on `a`
    # The healthy requests that follow all succeed (before the fix: 503 UH for 30 s).
    assert _versions(b, 20) == Counter({"a": 20})
    text = b.metrics()
    labels = '{destination_service_name="backend",subset="v1"}'
    assert f"meshctl_proxy_outlier_ejections_overflow_total{labels} 1" in text
    assert f"meshctl_proxy_outlier_ejections_total{labels} 0" in text


# -- issue 19: perTryTimeout bounds connecting and the TLS handshake too -------------------


class _Hung:
    """A plain TCP listener that accepts and never answers (a stopped proxy: TCP up, TLS
    never): counts the connections it got and the ones the other side gave up on."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.closed_by_peer = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed by the test
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(60)
            try:
                while conn.recv(65536):  # the ClientHello, never answered
                    pass
            except OSError:
                return
            with self._lock:
                self.closed_by_peer += 1

    def register(self, mesh: Mesh) -> None:
        mesh.api("POST", "/v1/endpoints", {
            "id": f"backend-hung-{self.port}", "service": "backend", "address": "127.0.0.1",
            "inbound_port": self.port, "labels": {"app": "backend", "version": "hung"},
        })

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def hung() -> Iterator[_Hung]:
    h = _Hung()
    yield h
    h.close()


# connectTimeout 60 s: waiting for it (the bug) outlasts the client's 5 s timeout.
_HUNG_DR = "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {connectTimeout: 60s}}}"


def test_per_try_timeout_cuts_a_hung_tls_handshake_and_retries_elsewhere(
    mesh: Mesh, hung: _Hung
) -> None:
    log = _access_log(mesh)
    _policy(mesh, vs_http="""\
        - retries: {attempts: 2, perTryTimeout: 500ms, retryOn: "5xx,reset,connect-failure"}
          route: [{destination: {host: backend}}]
        """, dr_policy=_HUNG_DR)
    mesh.start_registry()
    b = Backend(mesh, replicas=("a",))
    hung.register(mesh)
    seen: list[tuple[int, bytes, dict[str, str]]] = []

    def tried() -> int:  # requests until the client proxy has tried the new endpoint
        seen.append(b.get("/echo"))
        return hung.accepted

    wait_until(tried, what="the client proxy tries the hung endpoint")
    # Round robin over `a` and the hung endpoint: every other request tries it first.
    seen += [b.get("/echo") for _ in range(4)]
    assert [(s, json.loads(body)["version"]) for s, body, _ in seen] == [(200, "a")] * len(seen)
    # Each hung attempt was given up on by the proxy (the connection closed), and retried.
    wait_until(lambda: hung.closed_by_peer == hung.accepted, what="the hung attempts cut")
    assert hung.accepted >= 2
    attempts = Counter(line["attempts"] for line in _logged(log, "/echo", len(seen)))
    assert attempts[2] == hung.accepted and set(attempts) <= {1, 2}
    stats = b.stats()
    assert stats["meshctl_proxy_retries_total"] == hung.accepted
    assert stats["meshctl_proxy_upstream_rq_per_try_timeout_total"] == hung.accepted


def test_per_try_timeout_without_retries_answers_504_ut_on_a_hung_handshake(
    mesh: Mesh, hung: _Hung
) -> None:
    _policy(mesh, vs_http="""\
        - retries: {attempts: 0, perTryTimeout: 500ms}
          route: [{destination: {host: backend}}]
        """, dr_policy=_HUNG_DR)
    mesh.start_registry()
    b = Backend(mesh, replicas=("a",))
    hung.register(mesh)
    # Requests until one goes to the hung endpoint (once the client proxy knows it): 504.
    status, body, _ = wait_until(
        lambda: (r := b.get("/status/200"))[0] != 200 and r,
        what="a request sent to the hung endpoint",
    )
    assert (status, body) == (504, b"upstream request timeout")
    assert 'response_flags="UT"' in b.metrics()
    assert b.stats()["meshctl_proxy_upstream_rq_per_try_timeout_total"] == hung.accepted
    assert b.get("/status/200")[0] == 200  # round robin: `a` next
    wait_until(lambda: hung.closed_by_peer == hung.accepted, what="the hung attempts cut")


def test_per_try_timeout_holds_on_kept_alive_connections(mesh: Mesh) -> None:
    # A kept-alive client lets the client proxy's fast path in (urllib closes each
    # connection, which keeps it out). That path keeps no timer: before, it sent a request to
    # the slow replica on an idle connection and waited the 3 s for its answer.
    _policy(mesh, vs_http="""\
        - retries: {attempts: 2, perTryTimeout: 300ms, retryOn: "5xx,reset,connect-failure"}
          route: [{destination: {host: backend}}]
        """, dr_policy="{loadBalancer: {simple: ROUND_ROBIN}}")
    mesh.start_registry()
    b = Backend(mesh)
    conn = http.client.HTTPConnection("127.0.0.1", b.local, timeout=10)
    try:
        for _ in range(4):  # idle upstream connections to both replicas
            assert _keepalive_get(conn, "/echo", {})[0] == 200
        b.admin("a", "slow?ms=3000&count=-1")
        answers = [_keepalive_get(conn, "/echo", {}) for _ in range(6)]
    finally:
        conn.close()
    assert [(s, json.loads(body)["version"]) for s, body in answers] == [(200, "b")] * 6
    assert b.stats()["meshctl_proxy_retries_total"] >= 3
