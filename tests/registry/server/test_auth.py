"""Who may call what: only join and /healthz are open; tokens and certificates are checked."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509

from registry.ca import CertificateAuthority, SpiffeId
from registry.ca.csr import generate_key, spiffe_id_of
from tests.integration.harness import Mesh
from tests.registry.server.support import (
    Workload,
    call,
    client_ctx,
    csr_for,
    join,
    mint,
    op,
)

pytestmark = pytest.mark.slow

# Every route but join and /healthz, with a body it would accept from an authorized caller.
GUARDED: list[tuple[str, str, object]] = [
    ("POST", "/v1/renew", {"csr": "x"}),
    ("GET", "/v1/stream?proxy_id=p", None),
    ("POST", "/v1/stream?proxy_id=p", None),
    ("POST", "/v1/ack", {"proxy_id": "p", "config_version": 1, "ok": True}),
    ("POST", "/v1/endpoints", {"id": "e", "service": "orders", "address": "127.0.0.1",
                               "inbound_port": 1}),
    ("PUT", "/v1/endpoints/e", {}),
    ("DELETE", "/v1/endpoints/e", None),
    ("GET", "/v1/catalog", None),
    ("GET", "/v1/config", None),
    ("POST", "/v1/tokens", {"service": "orders"}),
    ("GET", "/v1/tokens", None),
    ("DELETE", "/v1/tokens/0123456789abcdef", None),
    ("GET", "/v1/operator", None),
    ("POST", "/v1/routes/orders/weights", {"weights": {"v1": 100}}),
    ("GET", "/v1/routes/orders", None),
    ("GET", "/v1/proxies/p/admin?path=/stats", None),
    ("POST", "/v1/admin-reply", {"proxy_id": "p", "request": 1, "status": 200, "body": ""}),
    ("GET", "/v1/status", None),
]


@pytest.mark.parametrize(("method", "path", "body"), GUARDED,
                         ids=[f"{m} {p}" for m, p, _ in GUARDED])
def test_guarded_routes_refuse_missing_and_wrong_credentials(
        mesh: Mesh, method: str, path: str, body: object) -> None:
    assert call(mesh, method, path, body)[0] == 401
    assert call(mesh, method, path, body, bearer="not-the-operator-token")[0] == 403


def test_open_routes(mesh: Mesh) -> None:
    assert call(mesh, "GET", "/healthz")[0] == 200
    status, data = call(mesh, "POST", "/v1/join", {"token": "x", "csr": "y"})
    assert status == 403 and "malformed" in data["error"]


def test_certificate_from_another_ca_is_refused(mesh: Mesh, tmp_path: Path) -> None:
    # Same trust domain and service name, another root: only the registry's CA counts.
    other = CertificateAuthority.load_or_create(tmp_path / "other-ca", "shop.local")
    w = Workload(mesh, "orders", tmp_path / "rogue")
    cert = other.sign_csr(csr_for(w.key).encode(),
                          SpiffeId.for_service("shop.local", "default", "orders"))
    w.store(cert, w.key)
    # Refused in the TLS handshake (the registry verifies any certificate offered against
    # its own CA): no request is read, so no 401/403 either.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        w.call("GET", "/v1/status")


def test_workload_cannot_mint_tokens_or_write_other_services(mesh: Mesh,
                                                             tmp_path: Path) -> None:
    w = join(mesh, "frontend", tmp_path / "frontend")
    status, data = w.call("POST", "/v1/tokens", {"service": "frontend"})
    assert status == 403 and "operator" in data["error"]
    ep = {"id": "o-1", "service": "orders", "address": "127.0.0.1", "inbound_port": 15006}
    status, data = w.call("POST", "/v1/endpoints", ep)
    assert status == 403 and "orders" in data["error"]
    assert op(mesh, "POST", "/v1/endpoints", ep)[0] == 200
    # Nor take over, heartbeat or remove an endpoint of another service.
    assert w.call("POST", "/v1/endpoints", {**ep, "service": "frontend"})[0] == 403
    assert w.call("PUT", "/v1/endpoints/o-1", {"health": "draining"})[0] == 403
    assert w.call("DELETE", "/v1/endpoints/o-1")[0] == 403
    # Its own service is fine, and the endpoint carries its verified identity.
    own = {"id": "f-1", "service": "frontend", "address": "127.0.0.1", "inbound_port": 15006,
           "identity": "spiffe://shop.local/ns/default/sa/orders"}
    status, data = w.call("POST", "/v1/endpoints", own)
    assert status == 200 and data["identity"] == w.spiffe_id
    assert w.call("GET", "/v1/status")[0] == 200
    assert [e["id"] for e in op(mesh, "GET", "/v1/catalog")[1]["endpoints"]] == ["f-1", "o-1"]


def test_join_refusals_are_403_with_distinct_messages(mesh: Mesh) -> None:
    csr = csr_for(generate_key())
    used = mint(mesh, "orders")
    assert call(mesh, "POST", "/v1/join", {"token": used, "csr": csr})[0] == 200
    short = mint(mesh, "orders", ttl_s=0.3)
    time.sleep(1.0)
    prefix, tid, secret = mint(mesh, "orders").split(".")
    forged = f"{prefix}.{tid}.{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"
    cases = {"reused": used, "expired": short, "forged": forged, "malformed": "mtok.zz.not-it"}
    messages = {}
    for case, token in cases.items():
        status, data = call(mesh, "POST", "/v1/join", {"token": token, "csr": csr})
        assert status == 403, (case, data)
        messages[case] = data["error"]
    assert "already used" in messages["reused"]
    assert "expired" in messages["expired"]
    assert "does not match" in messages["forged"]
    assert "malformed" in messages["malformed"]
    assert len(set(messages.values())) == 4
    # The forged attempt did not spend the real token.
    real = f"{prefix}.{tid}.{secret}"
    assert call(mesh, "POST", "/v1/join", {"token": real, "csr": csr})[0] == 200
    # Bad bodies are 400, not 500.
    assert call(mesh, "POST", "/v1/join", raw=b"not json")[0] == 400
    assert call(mesh, "POST", "/v1/join", {"token": mint(mesh, "orders")})[0] == 400
    status, data = call(mesh, "POST", "/v1/join", {"token": mint(mesh, "orders"), "csr": "x"})
    assert status == 400 and "CSR" in data["error"]


def test_token_for_unknown_service_is_400(mesh: Mesh) -> None:
    status, data = op(mesh, "POST", "/v1/tokens", {"service": "nosuch"})
    assert status == 400 and "nosuch" in data["error"]
    assert op(mesh, "POST", "/v1/tokens", {"service": "orders", "ttl_s": -1})[0] == 400


def test_renew_keeps_identity_whatever_the_csr_asks(mesh: Mesh, tmp_path: Path) -> None:
    w = join(mesh, "orders", tmp_path / "orders")
    new_key = generate_key()
    greedy = csr_for(new_key, SpiffeId.for_service("shop.local", "default", "payments"))
    status, data = w.call("POST", "/v1/renew", {"csr": greedy})
    assert status == 200, data
    cert = x509.load_pem_x509_certificate(data["certificate"].encode())
    assert str(spiffe_id_of(cert)) == w.spiffe_id == data["spiffe_id"]
    assert cert.public_key() == new_key.public_key()
    assert cert.serial_number != x509.load_pem_x509_certificate(w.cert_pem).serial_number
    # The renewed SVID is a working identity.
    w.store(data["certificate"].encode(), new_key)
    assert w.call("GET", "/v1/catalog")[0] == 200
    # The operator has no identity to renew.
    status, data = op(mesh, "POST", "/v1/renew", {"csr": greedy})
    assert status == 403
    assert json.dumps(data).count("operator") >= 1
    assert client_ctx(mesh) is not None
