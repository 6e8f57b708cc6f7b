"""The gateway's pure pieces: X-Forwarded-For and trusted hops, host patterns, the
per-snapshot table (servers by port and host, bound routes), --rate-limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.gateway.forwarded import forwarded_for
from proxy.gateway.hosts import host_matches, request_host, specificity
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
