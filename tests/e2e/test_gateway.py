"""The gateway proxy end to end on 127.0.0.1 (explicit mode, no Docker): curl with SNI and
the Gateway's certificate -> gateway (TLS terminated) -> mTLS -> frontend -> orders;
weights, httpsRedirect, forwarding headers, Istio metrics, a bad Gateway file that leaves
the last good config serving, and an AuthorizationPolicy naming the gateway's identity.

One mesh for the module: starting a registry, five proxies and four apps is most of the
cost, so the assertions share it, in order."""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.certs import write_self_signed
from tests.example import CONFIG, IN_REPO
from tests.integration.harness import REPO, Mesh, free_port, http_get, wait_until

pytestmark = pytest.mark.slow

HOST = "shop.example.com"

DOC = REPO / "docs" / "gateway.md"


def documented_example(https: int, http: int) -> tuple[str, str]:
    """The Gateway and the VirtualService of docs/gateway.md's example, as written there,
    on the ports this test picked instead of 8443 and 8080."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    gateway, routes = blocks[0], blocks[1]
    assert "kind: Gateway" in gateway and "kind: VirtualService" in routes, blocks
    assert gateway.count("number: 8443") == 1 and gateway.count("number: 8080") == 1
    return (gateway.replace("number: 8443", f"number: {https}")
            .replace("number: 8080", f"number: {http}"), routes)


def documented_commands() -> list[list[str]]:
    """The shell block of docs/gateway.md's example, one argv per command."""
    (block,) = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines()]


def documented_curl(cacert: Path, port: int, address: str, url: str) -> list[str]:
    """The documented curl with this test's certificate, port, address and URL."""
    argv = documented_commands()[-1]
    assert argv == ["curl", "--cacert", f"{IN_REPO}/mesh/shop-cert.crt", "--resolve",
                    "shop.example.com:8443:127.0.0.1", "https://shop.example.com:8443/"], argv
    return ["curl", "--cacert", str(cacert), "--resolve", f"{HOST}:{port}:{address}", url]


POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: frontend-from-gateway
spec:
  selector:
    matchLabels: {app: frontend}
  action: ALLOW
  rules:
    - from:
        - source:
            principals: ["shop.local/ns/default/sa/ingressgateway"]
"""


class Shop:
    def __init__(self, mesh: Mesh, https: int, http: int, cacert: Path, gateway: dict[str, Any]):
        self.mesh, self.https, self.http, self.cacert, self.gateway = (
            mesh, https, http, cacert, gateway)

    def curl(self, path: str, *args: str, https: bool = True,
             address: str = "127.0.0.1") -> tuple[int, dict[str, str], str]:
        """curl as docs/gateway.md runs it: the name resolved to the gateway's address, SNI
        and Host from the URL, the Gateway's certificate trusted; plus a time limit,
        no proxy from the environment and the response head on stdout."""
        port = self.https if https else self.http
        scheme = "https" if https else "http"
        out = subprocess.run(
            [*documented_curl(self.cacert, port, address, f"{scheme}://{HOST}:{port}{path}"),
             "-sS", "--max-time", "10", "--noproxy", "*", "-D", "-", *args],
            capture_output=True, text=True, timeout=20, check=False)
        assert out.returncode == 0, out.stderr
        head, _, body = out.stdout.partition("\n\n")  # text mode: CRLF read as \n
        lines = head.split("\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        return int(lines[0].split()[1]), headers, body


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    tmp = tmp_path_factory.mktemp("gateway")
    mesh = Mesh(tmp, CONFIG)
    https, http = free_port(), free_port()
    # The example's own Gateway (shop-gateway, fixed ports 18443/18081, served by `up`) is
    # not this test's: the gateway proxy here serves docs/gateway.md's, on ports picked now.
    (mesh.config / "shop-gateway.yaml").unlink()
    cacert = write_self_signed(mesh.config, "shop-cert", HOST)
    gateway_yaml, routes_yaml = documented_example(https, http)
    (mesh.config / "gateway.yaml").write_text(gateway_yaml)
    (mesh.config / "shop-routes.yaml").write_text(routes_yaml)
    (mesh.config / "frontend-policy.yaml").write_text(POLICY)
    try:
        mesh.start_registry()
        for version in ("v1", "v2"):
            _, app = mesh.app("orders", version)
            mesh.proxy("orders", version, app_port=app)
        to_orders = free_port()
        _, front = mesh.app("frontend", "v1", "--calls", "orders", "--upstream",
                            f"orders=127.0.0.1:{to_orders}")
        mesh.proxy("frontend", "v1", app_port=front, upstreams={"orders:8080": to_orders})
        gateway = mesh.proxy("ingressgateway", None, extra=documented_gateway(mesh.config))
        wait_until(lambda: len(mesh.api("GET", "/v1/catalog")["endpoints"]) == 3,
                   what="three endpoints registered (the gateway registers none)")
        yield Shop(mesh, https, http, cacert, gateway)
    finally:
        mesh.close()


def test_https_through_the_gateway_reaches_frontend_then_orders(shop: Shop) -> None:
    _, _, body = wait_until(lambda: (r := shop.curl("/"))[0] == 200 and r,
                                 what="frontend through the gateway")
    page = json.loads(body)
    assert page["service"] == "frontend"
    assert page["calls"]["orders"]["service"] == "orders"  # the frontend's own mesh call


def test_weights_and_forwarding_headers(shop: Shop) -> None:
    for _ in range(8):  # weight 0 for v1, 100 for v2: every request lands on v2
        status, _, body = shop.curl("/echo", "-H", "X-Forwarded-For: 203.0.113.9",
                                    "-H", "X-Forwarded-Client-Cert: URI=spiffe://evil")
        assert status == 200, body
        echo = json.loads(body)
        assert (echo["service"], echo["version"]) == ("orders", "v2")
    headers = echo["headers"]
    # The client's X-Forwarded-For kept, the gateway's peer appended (Envoy's
    # use_remote_address); with no trusted hop the client is the connection's peer.
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-envoy-external-address"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-request-id"]  # made by the gateway: the client sent none
    _, _, body = shop.curl("/echo", "-H", "X-Request-Id: client-chosen-1")
    assert json.loads(body)["headers"]["x-request-id"] == "client-chosen-1"  # kept
    # The gateway's own SPIFFE identity on the mTLS hop; the forged header is gone.
    assert "URI=spiffe://shop.local/ns/default/sa/ingressgateway" in (
        headers["x-forwarded-client-cert"])
    assert "evil" not in headers["x-forwarded-client-cert"]


def test_plain_http_is_redirected_to_https(shop: Shop) -> None:
    status, headers, _ = shop.curl("/orders?x=1", https=False)
    assert status == 301
    assert headers["location"] == f"https://{HOST}:{shop.https}/orders?x=1"


def test_unknown_host_and_unknown_sni(shop: Shop) -> None:
    status, _, _ = shop.curl("/", "-H", "Host: other.example.com")
    assert status == 404  # the server's hosts do not cover it
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--noproxy", "*", "-k", "--resolve",
         f"other.example.com:{shop.https}:127.0.0.1", f"https://other.example.com:{shop.https}/"],
        capture_output=True, text=True, timeout=20, check=False)
    assert out.returncode != 0 and "unrecognized name" in out.stderr, out  # TLS alert 112


def test_tokens_are_minted_for_gateway_workloads_only(shop: Shop) -> None:
    """The gateway joined with a token for `ingressgateway`, the workload its Gateway
    selects; a name neither mesh.yaml nor a Gateway knows is still refused, saying both."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        shop.mesh.api("POST", "/v1/tokens", {"service": "ingresgateway"})
    assert refused.value.code == 400
    message = json.loads(refused.value.read())["error"]
    assert message == ("unknown service `ingresgateway` (mesh.yaml has: frontend, orders, "
                       "payments, inventory; Gateways select: ingressgateway)"), message


def test_status_and_stat_list_the_gateway(shop: Shop) -> None:
    """`meshctl status` lists the gateway among the proxies (it registers no endpoint), and
    `meshctl stat` shows its edge to frontend from the gateway's source metrics."""
    shop.curl("/")
    for command, shown in ((("status",), "ingressgateway"), (("stat",), "ingressgateway")):
        out = subprocess.run(shop.mesh.meshctl(*command), env={**shop.mesh.env, "COLUMNS": "200"},
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        assert shown in out.stdout, out.stdout
    assert "ingressgateway -> frontend" in out.stdout, out.stdout


def test_gateway_metrics_carry_istio_labels(shop: Shop) -> None:
    shop.curl("/")
    _, metrics, _ = http_get(f"http://127.0.0.1:{shop.gateway['metrics']}/metrics")
    lines = [x for x in metrics.decode().splitlines()
             if x.startswith("istio_requests_total{") and 'destination_service_name="frontend"'
             in x and 'response_code="200"' in x]
    assert lines, metrics.decode()[:2000]
    assert 'reporter="source"' in lines[0]
    assert 'source_workload="ingressgateway"' in lines[0]
    assert 'source_principal="spiffe://shop.local/ns/default/sa/ingressgateway"' in lines[0]


def test_bad_gateway_file_keeps_the_last_good_config(shop: Shop) -> None:
    path = shop.mesh.config / "gateway.yaml"
    good = path.read_text()
    version = shop.mesh.api("GET", "/v1/status")["config_version"]
    try:
        path.write_text(good.replace("mode: SIMPLE", "mode: PASSTHROUGH"))
        errors = wait_until(lambda: _errors(shop.mesh.api("GET", "/v1/status")),
                            what="the registry reports the bad file")
        assert errors == ["gateway.yaml:11:19: spec.servers[0].tls.mode: `PASSTHROUGH` is not "
                          "supported yet"], errors
        assert shop.curl("/")[0] == 200  # still served on the last good snapshot
        assert shop.mesh.api("GET", "/v1/status")["config_version"] == version
    finally:
        path.write_text(good)
    wait_until(lambda: not _errors(shop.mesh.api("GET", "/v1/status")),
               what="the good file accepted again")
    assert shop.curl("/")[0] == 200


def test_authorization_policy_names_the_gateway(shop: Shop) -> None:
    """frontend allows only the gateway's principal: the gateway gets through (above);
    naming someone else shuts the gateway out with Istio's 403."""
    path = shop.mesh.config / "frontend-policy.yaml"
    good = path.read_text()
    try:
        path.write_text(good.replace("sa/ingressgateway", "sa/orders"))
        _, _, body = wait_until(lambda: (r := shop.curl("/"))[0] == 403 and r,
                                     what="frontend refusing the gateway")
        assert "RBAC: access denied" in body
    finally:
        path.write_text(good)
    wait_until(lambda: shop.curl("/")[0] == 200, what="the gateway allowed again")


def test_ports_follow_the_config_and_a_port_in_use_is_refused(shop: Shop) -> None:
    """A server added opens its port without a restart; one whose port cannot be opened is
    NACKed by the gateway with the reason, and the previous config keeps serving."""
    path = shop.mesh.config / "gateway.yaml"
    good = path.read_text()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy, fresh = taken.getsockname()[1], free_port()
    extra = ("    - port: {{number: {port}, name: plain, protocol: HTTP}}\n"
             '      hosts: ["shop.example.com"]\n')
    gateway_id = shop.gateway["id"]

    def nack() -> str:
        for p in shop.mesh.api("GET", "/v1/status")["proxies"]:
            if p["proxy_id"] == gateway_id and p["nack_error"]:
                return str(p["nack_error"])
        return ""

    try:
        path.write_text(good + extra.format(port=busy))
        assert f"gateway port {busy}: cannot listen on 127.0.0.1:{busy}" in wait_until(
            nack, what="the gateway refusing a port in use")
        assert shop.curl("/")[0] == 200
        path.write_text(good + extra.format(port=fresh))
        _, body, _ = wait_until(lambda: (r := _plain(fresh, "/echo"))[0] == 200 and r,
                                     what="the new port served")
        assert json.loads(body)["version"] == "v2"  # the same bound routes
    finally:
        taken.close()
        path.write_text(good)
    wait_until(lambda: _refused(fresh), what="the removed port closed")
    assert shop.curl("/")[0] == 200


def _plain(port: int, path: str) -> tuple[int, bytes, dict[str, str]]:
    return http_get(f"http://127.0.0.1:{port}{path}", headers={"Host": HOST})


def _closed_at_once(where: tuple[str, int]) -> bool:
    with socket.create_connection(where, timeout=5) as s:
        s.sendall(b"\x16")  # a byte of a ClientHello: a served connection waits for more
        s.settimeout(2)
        try:
            return s.recv(1) == b""
        except ConnectionResetError:  # closed with our byte unread: refused all the same
            return True
        except TimeoutError:  # served: the handshake waits for the rest of the hello
            return False


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_rate_limit_and_request_size_on_a_second_gateway(shop: Shop) -> None:
    """A second gateway proxy for the same Gateway (another address: each opens the
    servers' ports on its own) with the edge limits: a token bucket and a body size."""
    mesh = shop.mesh
    mesh.proxy("ingressgateway", None, extra=(
        "--gateway", "--gateway-address", "127.0.0.2", "--credentials", str(mesh.config),
        "--rate-limit", "1/m:3", "--max-request-bytes", "16", "--access-log", "stdout",
        "--max-connections-per-source", "2"))
    status, _, body = shop.curl("/echo", "--data-binary", "x" * 17, address="127.0.0.2")
    assert status == 413, body  # refused before any upstream: it spends no token either
    assert [shop.curl("/echo", address="127.0.0.2")[0] for _ in range(3)] == [200] * 3
    status, headers, body = shop.curl("/echo", address="127.0.0.2")
    assert (status, body) == (429, "local_rate_limited")
    assert int(headers["retry-after"]) >= 1
    assert shop.curl("/echo")[0] == 200  # the first gateway has no limit
    # Its access log (Envoy's default fields), the local replies included.
    log = next(p for p in mesh.procs[::-1] if "127.0.0.2" in p.argv).log
    lines = wait_until(lambda: [json.loads(x) for x in log.read_text().splitlines()
                                if x.startswith("{")][-5:] or None, what="access log lines")
    assert [(x["response_code"], x["response_flags"]) for x in lines] == [
        (413, "-"), (200, "-"), (200, "-"), (200, "-"), (429, "RL")], lines
    assert lines[1]["reporter"] == "source" and lines[1]["x_forwarded_for"] is None
    # Two connections held from one address: a third is accepted and closed at once.
    held = [socket.create_connection(("127.0.0.2", shop.https), timeout=5) for _ in range(2)]
    try:
        wait_until(lambda: _closed_at_once(("127.0.0.2", shop.https)),
                   what="a third connection from the same address refused")
    finally:
        for s in held:
            s.close()
    wait_until(lambda: shop.curl("/healthz", address="127.0.0.2")[0] == 429,
               what="the address served again once its connections closed")


def documented_gateway(config: Path) -> tuple[str, ...]:
    """The gateway-mode options of the documented `meshctl proxy` (the harness gives the
    registry, token, admin and metrics ports), with this test's config directory."""
    token, proxy = documented_commands()[:2]
    assert token == ["meshctl", "token", "create", "ingressgateway", ">", "gateway.token"]
    assert proxy[:6] == ["meshctl", "proxy", "--service", "ingressgateway", "--gateway",
                         "--token-file"], proxy
    extra = proxy[7:]
    assert extra == ["--gateway-address", "127.0.0.1", "--credentials",
                     f"{IN_REPO}/mesh"], extra  # the docs' text; never read here
    return ("--gateway", *extra[:3], str(config))


def _errors(status: dict[str, Any]) -> list[str]:
    last = status.get("last_config_error")
    return list(last["errors"]) if last else []
