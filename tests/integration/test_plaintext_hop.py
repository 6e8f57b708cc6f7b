"""DestinationRule tls.mode DISABLE: the outbound proxy talks plaintext to the peer proxy,
which accepts it only where PeerAuthentication allows plaintext (PERMISSIVE or DISABLE);
under STRICT the same request fails and nothing reaches the app. HTTP and opaque TCP (with
its half-close, which plaintext carries as a real FIN)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Mesh, free_port, http_get, wait_until
from tests.integration.test_overload_and_tcp import MESH_YAML, echo_through_db  # client, web, db

pytestmark = pytest.mark.slow

RULES = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    tls: {mode: DISABLE}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db
  trafficPolicy:
    tls: {mode: DISABLE}
"""

PEER = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: %s}}
"""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "mesh.yaml").write_text(MESH_YAML)
    (src / "rules.yaml").write_text(RULES)
    (src / "peer.yaml").write_text(PEER % "PERMISSIVE")
    m = Mesh(tmp_path, src)
    m.start_registry()
    yield m
    m.close()


def _stats(px: dict[str, object]) -> dict[str, float]:
    return dict(json.loads(http_get(f"http://127.0.0.1:{px['admin']}/stats")[1]))


def test_http_goes_plaintext_where_permissive_and_fails_where_strict(mesh: Mesh) -> None:
    app_proc, app = mesh.app("web", "v1")
    web = mesh.proxy("web", "v1", app_port=app)
    local = free_port()
    mesh.proxy("client", "v1", upstreams={"web:8080": local})
    wait_until(lambda: http_get(f"http://127.0.0.1:{local}/echo")[0] == 200, what="route")
    status, body, _ = http_get(f"http://127.0.0.1:{local}/echo")
    assert status == 200
    headers = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    # No certificate on the hop, so no identity for the app: the inbound proxy saw plaintext.
    assert "x-forwarded-client-cert" not in headers
    assert _stats(web).get("meshctl_proxy_inbound_plaintext_total", 0) >= 1
    # The server side tightens to STRICT: a new plaintext hop is refused (connections
    # accepted before stay, as Envoy keeps them) and the app sees nothing of it.
    (mesh.config / "peer.yaml").write_text(PEER % "STRICT")
    wait_until(lambda: _stats(web).get("meshctl_proxy_config_version", 0) >= 2,
               what="STRICT reaches the web proxy")
    fresh = free_port()
    mesh.proxy("client", "v2", upstreams={"web:8080": fresh})
    status, _, _ = http_get(f"http://127.0.0.1:{fresh}/strict-check")
    assert status == 503
    refused = _stats(web)  # no plaintext port left: the bytes fail the TLS handshake
    assert (refused.get("meshctl_proxy_inbound_plaintext_refused_total", 0)
            + refused.get("meshctl_proxy_inbound_tls_failures_total", 0)) >= 1
    assert "/strict-check" not in app_proc.log.read_text()


def test_opaque_tcp_goes_plaintext_with_its_half_close(mesh: Mesh, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB, binary
    got, db = echo_through_db(mesh, tmp_path, payload)
    assert got == b"echo:" + payload
    assert _stats(db).get("meshctl_proxy_inbound_plaintext_total", 0) >= 1
