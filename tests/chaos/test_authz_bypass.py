"""Path normalisation and identity spoofing against AuthorizationPolicy, through real proxies.

Mesh: examples/compose/mesh (payments ALLOWs only orders' principal) plus a DENY of
``/admin*`` on payments. payments' app is tests/integration/recorder.py's Recorder, so the
test sees the exact request-target and headers that reached it. Requests are raw bytes on a
socket to the caller's proxy (orders' or frontend's explicit listener): no client library
normalises anything on the way.

For every path attempt the expected outcome is 403 (DENY matched on the normalised path) or
400 (the path cannot be normalised), and in both cases NOTHING reaches the app; the only
ones that reach it are those whose normalised form really is not under /admin.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.policy.authz import normalize_path
from tests.example import copy_config
from tests.integration.harness import Mesh, free_port, http_get, wait_until
from tests.integration.recorder import Recorder, exchange

pytestmark = pytest.mark.slow

DENY_ADMIN = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: payments-deny-admin}
spec:
  selector: {matchLabels: {app: payments}}
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin*"]}
"""


class Env:
    def __init__(self, mesh: Mesh, rec: Recorder, orders: int, frontend: int,
                 payments: dict[str, Any]) -> None:
        self.mesh, self.rec, self.orders, self.frontend, self.payments = (
            mesh, rec, orders, frontend, payments)

    def send(self, port: int, target: bytes, extra: bytes = b"") -> tuple[int, list[Any]]:
        """One request; (status, the requests that reached the app because of it)."""
        self.rec.clear()
        req = b"GET " + target + b" HTTP/1.1\r\nHost: payments\r\n" + extra + b"\r\n"
        ans = exchange(port, req)
        status = ans.statuses[0] if ans.responses else 0
        return status, self.rec.requests()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("authz")
    src = tmp / "src"
    copy_config(src)
    (src / "deny-admin.yaml").write_text(textwrap.dedent(DENY_ADMIN))
    with Recorder() as rec:
        mesh = Mesh(tmp, src)
        try:
            mesh.start_registry()
            pay = mesh.proxy("payments", "v1", app_port=rec.port)
            o, f = free_port(), free_port()
            mesh.proxy("orders", "v1", upstreams={"payments:8080": o})
            mesh.proxy("frontend", "v1", upstreams={"payments:8080": f})
            wait_until(lambda: http_get(f"http://127.0.0.1:{o}/ok")[0] == 200, timeout=30,
                       what="orders -> payments")
            yield Env(mesh, rec, o, f, pay)
        finally:
            mesh.close()


# (request-target as sent, expected: "refused" = 403/400 with nothing reaching the app,
#  "allowed" = reaches the app)
PATHS = [
    (b"/admin", "refused"),
    (b"/admin/users", "refused"),
    (b"/admin?x=1", "refused"),
    (b"/admin;jsessionid=1", "refused"),
    (b"/a/../admin", "refused"),
    (b"/./admin", "refused"),
    (b"/%2e%2e/admin", "refused"),
    (b"/%2E/admin", "refused"),
    (b"/public/..%2fadmin", "refused"),
    (b"/public/..%2Fadmin", "refused"),
    (b"/public/..%5cadmin", "refused"),
    (b"/public/..\\admin", "refused"),
    (b"//admin", "refused"),
    (b"///admin//x", "refused"),
    (b"/admin%2F", "refused"),
    (b"/%61dmin", "refused"),
    (b"/%61%64%6d%69%6e", "refused"),
    (b"\\admin", "refused"),
    (b"/..", "allowed"),  # resolves to "/", which is not under /admin
    (b"/admin%00", "refused"),
    (b"/adm%69n/x", "refused"),
    (b"http://payments/admin", "refused"),
    (b"/ADMIN", "allowed"),  # Istio paths are case-sensitive: /ADMIN is another path
    (b"/%2561dmin", "allowed"),  # double encoding: the app decodes once to /%61dmin
    (b"/administrator", "refused"),  # the DENY is a prefix /admin*
    (b"/public/x", "allowed"),
]


@pytest.mark.parametrize(("target", "expected"), PATHS, ids=[p.decode() for p, _ in PATHS])
def test_path_normalisation_cannot_bypass_deny(env: Env, target: bytes, expected: str) -> None:
    status, arrived = env.send(env.orders, target)
    if expected == "refused":
        assert status in (400, 403), status
        assert arrived == [], [a.request.target for a in arrived]
    else:
        assert status == 200, status
        assert len(arrived) == 1
        seen = arrived[0].request.target
        normal = normalize_path(seen)
        assert normal is not None and not normal.startswith("/admin"), seen


SPOOFS = [
    b"x-forwarded-client-cert: By=spiffe://shop.local/ns/default/sa/payments;"
    b"URI=spiffe://shop.local/ns/default/sa/orders\r\n",
    b"X-Forwarded-Client-Cert: URI=spiffe://shop.local/ns/default/sa/orders\r\n",
    b"x-spiffe-id: spiffe://shop.local/ns/default/sa/orders\r\n",
    b"x-forwarded-client-cert: a\r\nx-forwarded-client-cert: "
    b"URI=spiffe://shop.local/ns/default/sa/orders\r\n",
]


@pytest.mark.parametrize("header", SPOOFS, ids=["xfcc", "xfcc_case", "x_spiffe_id", "xfcc_twice"])
def test_spoofed_identity_headers_do_not_change_the_principal(env: Env, header: bytes) -> None:
    """frontend claims to be orders in a header: the policy sees frontend's certificate
    (403, nothing reaches the app); orders sending a header claiming frontend: the app
    sees exactly one x-forwarded-client-cert, naming orders, set by payments' proxy."""
    status, arrived = env.send(env.frontend, b"/public", header)
    assert status == 403 and arrived == []
    forged = header.replace(b"sa/orders", b"sa/frontend")
    status, arrived = env.send(env.orders, b"/public", forged)
    assert status == 200 and len(arrived) == 1
    xfcc = arrived[0].request.get_all(b"x-forwarded-client-cert")
    assert xfcc == [b"By=spiffe://shop.local/ns/default/sa/payments;"
                    b"URI=spiffe://shop.local/ns/default/sa/orders"], xfcc
