"""Istio Gateway and VirtualService `gateways`: what is read, and every refusal with its
file:line:column and field path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.config import load_directory
from registry.config.model import GatewayServer
from tests.certs import write_self_signed
from tests.registry.config.conftest import replace_in

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: shop
spec:
  selector:
    istio: ingressgateway
  servers:
    - port: {number: 8443, name: https, protocol: HTTPS}
      hosts: ["shop.example.com", "*/*.shop.example.com"]
      tls: {mode: SIMPLE, credentialName: shop-cert}
    - port: {number: 8080, name: http, protocol: HTTP}
      hosts: ["shop.example.com"]
      tls: {httpsRedirect: true}
"""

BOUND = """\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: shop
spec:
  hosts: [Shop.Example.com]
  gateways: [shop]
  http:
    - route:
        - destination: {host: frontend}
"""


@pytest.fixture
def config(example_copy: Path) -> Path:
    # This file's own Gateway `shop` only: the example's shop-gateway (its own ports and
    # certificate) would be in every error list below.
    (example_copy / "shop-gateway.yaml").unlink()
    write_self_signed(example_copy, "shop-cert", "shop.example.com")
    (example_copy / "gateway.yaml").write_text(GATEWAY)
    (example_copy / "shop.yaml").write_text(BOUND)
    return example_copy


def _errors(directory: Path) -> list[str]:
    result = load_directory(directory)
    assert not result.ok
    return [str(e) for e in result.errors]


def test_gateway_and_bound_virtual_service_are_read(config: Path) -> None:
    result = load_directory(config)
    assert result.ok, [str(e) for e in result.errors]
    assert result.config is not None
    (gw,) = result.config.gateways
    assert gw.selector == (("istio", "ingressgateway"),)
    https, http = gw.servers
    assert isinstance(https, GatewayServer)
    assert (https.port, https.protocol, https.tls_mode, https.credential_name) == (
        8443, "HTTPS", "SIMPLE", "shop-cert")
    assert https.hosts == ("shop.example.com", "*.shop.example.com")  # `*/` dropped
    assert len(https.credential_sha256) == 64
    assert (http.port, http.protocol, http.https_redirect, http.tls_mode) == (
        8080, "HTTP", True, None)
    vs = next(v for v in result.config.virtual_services if v.name == "shop")
    assert vs.gateways == ("shop",) and vs.hosts == ("shop.example.com",)
    # Bound to a gateway only: the sidecars do not see it.
    assert result.config.virtual_service_for("frontend") is None
    orders = result.config.virtual_service_for("orders")
    assert orders is not None and orders.gateways == ("mesh",)  # absent: mesh


def test_a_new_certificate_is_a_new_config_digest(config: Path) -> None:
    first = load_directory(config).config
    write_self_signed(config, "shop-cert", "shop.example.com")
    second = load_directory(config).config
    assert first is not None and second is not None
    assert first.digest != second.digest
    assert first.gateways[0].servers[0].credential_sha256 != (
        second.gateways[0].servers[0].credential_sha256)


def test_mesh_listed_too_keeps_the_sidecar_routes(config: Path) -> None:
    (config / "shop.yaml").write_text(BOUND.replace("[Shop.Example.com]", "[frontend]")
                                      .replace("[shop]", "[shop, mesh]"))
    result = load_directory(config)
    assert result.ok, [str(e) for e in result.errors]
    assert result.config is not None
    vs = result.config.virtual_service_for("frontend")
    assert vs is not None and vs.gateways == ("shop", "mesh")


# (id, file, old, new, expected diagnostics)
BROKEN: list[tuple[str, str, str, str, list[str]]] = [
    ("passthrough", "gateway.yaml", "mode: SIMPLE, credentialName: shop-cert",
     "mode: PASSTHROUGH",
     ["gateway.yaml:11:19: spec.servers[0].tls.mode: `PASSTHROUGH` is not supported yet"]),
    ("missing_credential_files", "gateway.yaml", "credentialName: shop-cert",
     "credentialName: other",
     ["gateway.yaml:11:43: spec.servers[0].tls.credentialName: credentialName `other`: "
      "other.crt and other.key not found in the config directory ({dir}): put the PEM "
      "certificate chain in other.crt and its private key in other.key"]),
    ("tcp_protocol", "gateway.yaml", "protocol: HTTP}", "protocol: TCP}",
     ["gateway.yaml:12:50: spec.servers[1].port.protocol: `TCP` is not supported yet"]),
    ("other_namespace", "gateway.yaml", '"*/*.shop.example.com"', '"prod/*.shop.example.com"',
     ["gateway.yaml:10:35: spec.servers[0].hosts[1]: namespace `prod` in "
      "`prod/*.shop.example.com`: every VirtualService of this mesh is in namespace "
      "`default`; write `*/*.shop.example.com` or `*.shop.example.com`"]),
    ("bad_host", "gateway.yaml", '"shop.example.com", "*/', '"shop.*.com", "*/',
     ["gateway.yaml:10:15: spec.servers[0].hosts[0]: `shop.*.com` is not a host name: write "
      "a DNS name such as shop.example.com, a wildcard such as *.example.com, or *"]),
    ("https_without_tls", "gateway.yaml",
     "      tls: {mode: SIMPLE, credentialName: shop-cert}\n", "",
     ["gateway.yaml:9:7: spec.servers[0]: an HTTPS server needs `tls.mode: SIMPLE` and "
      "`tls.credentialName`"]),
    ("unsupported_tls_field", "gateway.yaml", "tls: {mode: SIMPLE,",
     "tls: {minProtocolVersion: TLSV1_3, mode: SIMPLE,",
     ["gateway.yaml:11:13: spec.servers[0].tls.minProtocolVersion: `minProtocolVersion` is "
      "not supported yet"]),
    ("one_port_two_protocols", "gateway.yaml", "number: 8080", "number: 8443",
     ["gateway.yaml:12:7: spec.servers[1]: port 8443 is HTTPS in an earlier server and HTTP "
      "here: one port serves one protocol"]),
    ("unknown_gateway", "shop.yaml", "gateways: [shop]", "gateways: [shop, shopp]",
     ["shop.yaml:7:20: spec.gateways[1]: unknown Gateway `shopp` (defined: shop); `mesh` "
      "means the sidecars"]),
    ("gateway_other_namespace", "shop.yaml", "gateways: [shop]", "gateways: [prod/shop]",
     ["shop.yaml:7:14: spec.gateways[0]: gateway `prod/shop` is in namespace `prod`: this "
      "mesh's Gateways are in namespace `default`; write `shop`"]),
    ("mesh_host_must_be_a_service", "shop.yaml", "gateways: [shop]", "gateways: [shop, mesh]",
     ["shop.yaml:6:11: spec.hosts[0]: host `Shop.Example.com` is not a mesh service: write "
      "`shop`, `shop.default` or `shop.default.svc.cluster.local` (external hosts are not "
      "supported yet)"]),
    ("destination_must_be_a_service", "shop.yaml", "host: frontend}", "host: frontdoor}",
     ["shop.yaml:10:31: spec.http[0].route[0].destination.host: unknown service `frontdoor` "
      "(did you mean `frontend`?); mesh.yaml defines: frontend, inventory, orders, payments"]),
    ("match_gateways", "shop.yaml", "    - route:\n", "    - match: [{gateways: [shop]}]\n"
     "      route:\n",
     ["shop.yaml:9:16: spec.http[0].match[0].gateways: `gateways` is not supported yet"]),
]


@pytest.mark.parametrize(("file", "old", "new", "expected"),
                         [v[1:] for v in BROKEN], ids=[v[0] for v in BROKEN])
def test_broken_gateway_config_names_file_line_column(
    config: Path, file: str, old: str, new: str, expected: list[str]
) -> None:
    replace_in(config, file, old, new)
    assert _errors(config) == [e.format(dir=config) for e in expected]


def test_a_key_that_is_not_the_certificates_is_refused(config: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    write_self_signed(other, "x", "shop.example.com")
    (config / "shop-cert.key").write_bytes((other / "x.key").read_bytes())
    (err,) = _errors(config)
    assert err.startswith("gateway.yaml:11:43: spec.servers[0].tls.credentialName: "
                          "credentialName `shop-cert`: shop-cert.crt and shop-cert.key do not "
                          "load as a PEM certificate chain and its private key")


def test_a_host_no_server_of_the_gateway_serves_is_named(config: Path) -> None:
    """Istio drops such a host silently (every request for it a 404): we name it."""
    replace_in(config, "shop.yaml", "hosts: [Shop.Example.com]",
               "hosts: [shop.example.co, '*.shop.example.com', '*']")
    assert _errors(config) == [
        "shop.yaml:6:11: spec.hosts[0]: host `shop.example.co` is not served by Gateway "
        "`shop` (its servers' hosts: *.shop.example.com, shop.example.com)"]


def test_two_gateways_on_one_port_with_two_protocols(config: Path) -> None:
    """Each is valid alone; selecting the same proxies, they would clash on the port."""
    other = GATEWAY.replace("name: shop", "name: shop-plain").replace(
        "number: 8443, name: https, protocol: HTTPS", "number: 8443, name: http2, protocol: HTTP"
    ).replace("      tls: {mode: SIMPLE, credentialName: shop-cert}\n", "")
    (config / "gateway2.yaml").write_text(other)
    assert _errors(config) == [
        "gateway2.yaml:4:9: metadata.name: Gateway `shop-plain` serves port 8443 as HTTP, "
        "Gateway `shop` (gateway.yaml:1:1) as HTTPS, on the same gateway proxies (same "
        "selector): one port serves one protocol"]


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70000), st.sampled_from(
        ["HTTP", "HTTPS", "https", "TCP", "SIMPLE", "PASSTHROUGH", "shop-cert", "*",
         "*.example.com", "*/shop.example.com", "prod/x", "a b", "", "mesh"]),
    st.lists(st.sampled_from(["shop.example.com", "*", "x/y", "", "*.*"]), max_size=3),
)
_SERVER = st.fixed_dictionaries({}, optional={
    "port": st.one_of(_VALUES, st.fixed_dictionaries({}, optional={
        "number": _VALUES, "name": _VALUES, "protocol": _VALUES})),
    "hosts": _VALUES,
    "tls": st.one_of(_VALUES, st.fixed_dictionaries({}, optional={
        "mode": _VALUES, "credentialName": _VALUES, "httpsRedirect": _VALUES,
        "minProtocolVersion": _VALUES})),
    "bind": _VALUES,
})


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(selector=st.one_of(_VALUES, st.dictionaries(st.sampled_from(["istio", "app"]),
                                                   st.sampled_from(["x", "ingressgateway"]))),
       servers=st.one_of(_VALUES, st.lists(_SERVER, max_size=3)),
       gateways=st.one_of(_VALUES, st.lists(_VALUES, max_size=3)))
def test_any_gateway_document_loads_or_says_where(
    config: Path, selector: object, servers: object, gateways: object
) -> None:
    """Whatever the fields hold, the loader answers: a snapshot, or errors each with a
    file:line:column in the file we wrote; never an internal error."""
    spec = {"selector": selector, "servers": servers}
    (config / "gateway.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "shop"}, "spec": spec}))
    vs = {"hosts": ["shop.example.com"], "gateways": gateways,
          "http": [{"route": [{"destination": {"host": "frontend"}}]}]}
    (config / "shop.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "shop"}, "spec": vs}))
    result = load_directory(config)
    for e in result.errors:
        assert "internal error" not in e.message, e
        assert e.file in ("gateway.yaml", "shop.yaml") and e.line >= 1 and e.column >= 1, e
    assert result.ok or result.errors
