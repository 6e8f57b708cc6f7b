"""The gateway's pure pieces: X-Forwarded-For and trusted hops, host patterns, the
per-snapshot table (servers by port and host, bound routes), --rate-limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.hostmatch import host_matches, request_host, specificity
from proxy.gateway.forwarded import forwarded_for
from proxy.gateway.server import parse_rate_limit
from proxy.gateway.table import build_table
from registry.config import load_directory
from registry.config.model import MeshConfig, RateLimit
from tests.certs import write_self_signed
from tests.example import copy_config


def test_forwarded_for_appends_the_peer_and_picks_the_trusted_client() -> None:
    assert forwarded_for(None, "10.0.0.1", 0) == (b"10.0.0.1", b"10.0.0.1")
    sent = b"203.0.113.128, 203.0.113.10,203.0.113.1"
    xff = b"203.0.113.128, 203.0.113.10, 203.0.113.1, 192.0.2.5"
    # Envoy's documented example: one trusted hop -> the rightmost address received.
    assert forwarded_for(sent, "192.0.2.5", 1) == (xff, b"203.0.113.1")
    assert forwarded_for(sent, "192.0.2.5", 3) == (xff, b"203.0.113.128")
    # More trusted hops than addresses: the connection's peer (Envoy's fallback).
    assert forwarded_for(sent, "192.0.2.5", 4) == (xff, b"192.0.2.5")
    assert forwarded_for(sent, "192.0.2.5", 0)[1] == b"192.0.2.5"  # none trusted: a forgery
    assert forwarded_for(b" , ", "192.0.2.5", 1) == (b"192.0.2.5", b"192.0.2.5")


@given(st.lists(st.ip_addresses().map(str), max_size=6), st.integers(0, 8))
def test_forwarded_for_always_ends_with_the_peer(hops: list[str], trusted: int) -> None:
    sent = ", ".join(hops).encode() or None
    xff, client = forwarded_for(sent, "198.51.100.7", trusted)
    assert xff.split(b", ")[-1] == b"198.51.100.7"
    assert client in (*(h.encode() for h in hops), b"198.51.100.7")


def test_host_patterns() -> None:
    assert host_matches("*", "anything.example")
    assert host_matches("*.example.com", "shop.example.com")
    assert host_matches("*.example.com", "a.b.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert not host_matches("*.example.com", "shopexample.com")
    assert host_matches("shop.example.com", "shop.example.com")
    assert not host_matches("shop.example.com", "www.shop.example.com")
    ranked = sorted(["*", "*.com", "*.example.com", "shop.example.com"], key=specificity)
    assert ranked == ["shop.example.com", "*.example.com", "*.com", "*"]
    assert request_host(b"Shop.Example.com:8443") == "shop.example.com"
    assert request_host(b"[::1]:8443") == "[::1]"
    assert request_host(None) == ""


GATEWAYS = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 8443, name: https, protocol: HTTPS}
      hosts: ["shop.example.com"]
      tls: {mode: SIMPLE, credentialName: shop}
    - port: {number: 8443, name: https-any, protocol: HTTPS}
      hosts: ["*.example.com"]
      tls: {mode: SIMPLE, credentialName: shop}
    - port: {number: 8080, name: http, protocol: HTTP}
      hosts: ["*"]
      tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: internal}
spec:
  selector: {istio: internalgateway}
  servers:
    - port: {number: 9090, name: http, protocol: HTTP}
      hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-shop}
spec:
  hosts: [shop.example.com, "*.example.com"]
  gateways: [public, internal]
  http:
    - route: [{destination: {host: frontend}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b-api}
spec:
  hosts: [api.example.com, shop.example.com]
  gateways: [public]
  http:
    - route: [{destination: {host: orders}}]
"""


@pytest.fixture
def config(tmp_path: Path) -> MeshConfig:
    directory = copy_config(tmp_path / "mesh")
    # This file's own Gateways only: the example's shop-gateway selects ingressgateway too.
    (directory / "shop-gateway.yaml").unlink()
    write_self_signed(directory, "shop", "shop.example.com", "*.example.com")
    (directory / "gateways.yaml").write_text(GATEWAYS)
    result = load_directory(directory)
    assert result.ok and result.config is not None, [str(e) for e in result.errors]
    return result.config


def test_table_holds_only_the_gateways_selecting_this_proxy(config: MeshConfig) -> None:
    table = build_table(config, {"istio": "ingressgateway"})
    assert sorted(table.ports) == [8080, 8443]
    assert table.ports[8443].protocol == "HTTPS"
    other = build_table(config, {"istio": "internalgateway"})
    assert sorted(other.ports) == [9090]
    assert build_table(config, {"app": "frontend"}).ports == {}


def test_servers_and_routes_by_host(config: MeshConfig) -> None:
    table = build_table(config, {"istio": "ingressgateway"})
    https = table.ports[8443]
    hit = https.server_for("shop.example.com")
    assert hit is not None and hit[1].port_name == "https"  # the exact host wins
    hit = https.server_for("www.example.com")
    assert hit is not None and hit[1].port_name == "https-any"
    assert https.server_for("example.org") is None
    # shop.example.com: bound by both VirtualServices; the first by name keeps it.
    routes = table.routes_for("public", "shop.example.com")
    assert routes is not None and routes[0].dests[0][0] == "frontend"
    routes = table.routes_for("public", "api.example.com")  # exact beats the wildcard
    assert routes is not None and routes[0].dests[0][0] == "orders"
    routes = table.routes_for("public", "www.example.com")
    assert routes is not None and routes[0].dests[0][0] == "frontend"
    assert table.routes_for("public", "example.org") is None
    assert table.https_port("public", "www.example.com") == 8443


def test_rate_limit_flag() -> None:
    assert parse_rate_limit("100/s") == RateLimit(100, "second", 100)
    assert parse_rate_limit("6000/m:50") == RateLimit(6000, "minute", 50)
    for bad in ("100", "0/s", "100/h", "100/s:0", "x/s", "100/s:"):
        with pytest.raises(ValueError, match="expected REQUESTS/s or REQUESTS/m"):
            parse_rate_limit(bad)


def test_remote_ip_blocks_see_the_forwarded_client_and_ip_blocks_the_peer() -> None:
    """At a gateway with trusted hops the two differ (Istio: ipBlocks is the connection's
    source, remoteIpBlocks the original client from X-Forwarded-For)."""
    import ipaddress

    from proxy.policy.authz import Action, Policy, RequestAttrs, Rule, Source, evaluate

    peer, client = ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("203.0.113.9")
    attrs = RequestAttrs("GET", "/", "shop.example.com", 8443, None, None, {}, peer, client)
    deny_client = Policy("c", Action.DENY, (Rule(sources=(Source.compile(
        remote_ip_blocks=["203.0.113.0/24"]),)),))  # fmt: skip
    deny_peer = Policy("p", Action.DENY, (Rule(sources=(Source.compile(
        ip_blocks=["203.0.113.0/24"]),)),))  # fmt: skip
    assert not evaluate([deny_client], attrs).allowed
    assert evaluate([deny_peer], attrs).allowed
    sidecar = RequestAttrs("GET", "/", "orders", 8080, None, None, {}, client)
    assert not evaluate([deny_client], sidecar).allowed  # no remote_ip: the source's


def test_two_gateways_claiming_one_port_with_two_protocols_are_refused(
        config: MeshConfig) -> None:
    """Each Gateway is valid alone; the gateway proxy both select refuses the pair (NACK)."""
    import dataclasses

    public = next(g for g in config.gateways if g.name == "public")
    clash = dataclasses.replace(public, name="clash", servers=(dataclasses.replace(
        public.servers[2], port=8443),))
    both = dataclasses.replace(config, gateways=(*config.gateways, clash))
    with pytest.raises(ValueError, match=r"gateway port 8443 is claimed with two protocols: "
                       r"clash \(HTTP\), public \(HTTPS\), public \(HTTPS\)"):
        build_table(both, {"istio": "ingressgateway"})


def test_sni_picks_the_certificate_of_the_server_for_the_name(tmp_path: Path) -> None:
    """One port, two HTTPS servers with their own certificates: the handshake presents the
    one whose hosts cover the client's SNI; a name neither covers is refused."""
    import contextlib
    import ssl

    from cryptography import x509

    from proxy.gateway.credentials import Credentials
    from registry.config.model import GatewayServer

    write_self_signed(tmp_path, "a", "a.example.com")
    write_self_signed(tmp_path, "b", "*.b.example.com")
    servers = [GatewayServer(8443, "a", "HTTPS", ("a.example.com",), False, "SIMPLE", "a",
                             _digest(tmp_path, "a")),
               GatewayServer(8443, "b", "HTTPS", ("*.b.example.com",), False, "SIMPLE", "b",
                             _digest(tmp_path, "b"))]
    ctx = Credentials(tmp_path).for_port(servers)

    def handshake(name: str) -> str:
        client = ssl.create_default_context(cafile=str(tmp_path / "a.crt"))
        client.load_verify_locations(cafile=str(tmp_path / "b.crt"))
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        cli = client.wrap_bio(c_in, c_out, server_hostname=name)
        srv = ctx.wrap_bio(s_in, s_out, server_side=True)
        for _ in range(10):
            with contextlib.suppress(ssl.SSLWantReadError):
                cli.do_handshake()  # the client raises the server's alert, if one came
            s_in.write(c_out.read())
            # A refusal raises here too: its alert is in s_out, for the client.
            with contextlib.suppress(ssl.SSLError):
                srv.do_handshake()
            c_in.write(s_out.read())
        der = cli.getpeercert(binary_form=True)
        assert der is not None
        cert = x509.load_der_x509_certificate(der)
        return str(cert.subject.rfc4514_string())

    assert handshake("a.example.com") == "CN=a.example.com"
    assert handshake("shop.b.example.com") == "CN=*.b.example.com"
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        handshake("c.example.com")


def _digest(directory: Path, name: str) -> str:
    import hashlib

    data = (directory / f"{name}.crt").read_bytes() + b"\0"
    return hashlib.sha256(data + (directory / f"{name}.key").read_bytes()).hexdigest()
