"""The example shop app (examples/compose/apps/shop.py) and its compose file."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from meshctl.launch.local import free_port
from tests.example import COMPOSE, SHOP


class Shop:
    """A running shop.py on 127.0.0.1."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc, self.port = proc, port

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        c = self.conn()
        try:
            c.request(method, path, body=body, headers=headers or {})
            resp = c.getresponse()
            return resp.status, resp.read(), resp
        finally:
            c.close()

    def json(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        status, body, _ = self.request(method, path, **kw)
        return status, json.loads(body)


def _start(*args: str) -> Shop:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SHOP), "--host", "127.0.0.1", "--port", str(port), *args],
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},  # no http_proxy and friends from the runner
    )
    shop = Shop(proc, port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"shop.py exited: {err}")
        try:
            if shop.request("GET", "/healthz")[0] == 200:
                return shop
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("shop.py did not come up in 10 s")


def _stop(shop: Shop) -> None:
    if shop.proc.poll() is None:
        shop.proc.send_signal(signal.SIGTERM)
        try:
            shop.proc.wait(5)
        except subprocess.TimeoutExpired:
            shop.proc.kill()
            shop.proc.wait(10)
    if shop.proc.stderr:
        shop.proc.stderr.close()


@pytest.fixture
def start_shop() -> Iterator[Callable[..., Shop]]:
    started: list[Shop] = []

    def start(*args: str) -> Shop:
        shop = _start(*args)
        started.append(shop)
        return shop

    yield start
    for shop in started:
        _stop(shop)


def test_root_answers_who_it_is(start_shop: Callable[..., Shop]) -> None:
    shop = start_shop("--service", "payments", "--version", "v3")
    status, body = shop.json("GET", "/")
    assert status == 200
    assert body["service"] == "payments"
    assert body["version"] == "v3"
    assert body["host"] == socket.gethostname()
    assert body["calls"] == {}


def test_healthz(start_shop: Callable[..., Shop]) -> None:
    status, body, resp = start_shop().request("GET", "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert resp.getheader("Content-Length") == "3"


def test_env_vars_are_defaults() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SHOP), "--host", "127.0.0.1"],
        env={"SERVICE": "inventory", "VERSION": "v9", "PORT": str(port), "PATH": "/usr/bin"},
        stderr=subprocess.DEVNULL,
    )
    shop = Shop(proc, port)
    try:
        for _ in range(200):
            try:
                _, body = shop.json("GET", "/")
                break
            except OSError:
                time.sleep(0.05)
        assert (body["service"], body["version"]) == ("inventory", "v9")
    finally:
        _stop(shop)


def test_echo_reports_what_arrived(start_shop: Callable[..., Shop]) -> None:
    shop = start_shop()
    status, body = shop.json(
        "POST",
        "/echo?a=1",
        body=b"x" * 1234,
        headers={"X-Forwarded-Client-Cert": "By=spiffe://mesh.local/ns/default/sa/orders"},
    )
    assert status == 200
    assert body["method"] == "POST"
    assert body["path"] == "/echo?a=1"
    assert body["query"] == {"a": ["1"]}
    assert body["body_length"] == 1234
    assert body["headers"]["x-forwarded-client-cert"].endswith("/sa/orders")
    assert body["client"].startswith("127.0.0.1:")

    status, body = shop.json("GET", "/echo")
    assert (status, body["method"], body["body_length"]) == (200, "GET", 0)


def test_echo_reads_a_chunked_body(start_shop: Callable[..., Shop]) -> None:
    shop = start_shop()
    c = shop.conn()
    c.request("POST", "/echo", body=iter([b"abc", b"defg"]), encode_chunked=True)
    resp = c.getresponse()
    assert json.loads(resp.read())["body_length"] == 7
    c.close()


def test_status_and_bytes(start_shop: Callable[..., Shop]) -> None:
    shop = start_shop()
    status, body = shop.json("GET", "/status/503")
    assert (status, body["status"]) == (503, 503)
    status, body, resp = shop.request("GET", "/bytes/100000")
    assert (status, len(body), resp.getheader("Content-Length")) == (200, 100000, "100000")
    assert shop.request("GET", "/status/204")[:2] == (204, b"")
    assert shop.request("GET", "/status/99")[0] == 400
    assert shop.request("GET", "/bytes/nope")[0] == 400
    assert shop.request("GET", "/nowhere")[0] == 404


def test_fail_control_counts_down(start_shop: Callable[..., Shop]) -> None:
    shop = start_shop("--service", "payments")
    assert shop.request("POST", "/admin/fail?status=503&count=2")[0] == 200
    assert [shop.request("GET", "/")[0] for _ in range(3)] == [503, 503, 200]
    _, body = shop.json("GET", "/admin/state")
    assert body["fail_count"] == 0


def test_fail_until_reset_spares_healthz(start_shop: Callable[..., Shop]) -> None:
    shop = start_shop()
    shop.request("POST", "/admin/fail?status=500&count=-1")
    assert [shop.request("GET", "/echo")[0] for _ in range(4)] == [500] * 4
    assert shop.request("GET", "/healthz")[0] == 200
    assert shop.request("POST", "/admin/reset")[0] == 200
    assert shop.request("GET", "/echo")[0] == 200


def test_slow_control(start_shop: Callable[..., Shop]) -> None:
    shop = start_shop()
    shop.request("POST", "/admin/slow?ms=300&count=1")
    t0 = time.monotonic()
    assert shop.request("GET", "/")[0] == 200
    assert time.monotonic() - t0 >= 0.3
    # count=1: the slow answer is spent (the state says so, rather than a second timing)
    state = json.loads(shop.request("GET", "/admin/state")[1])
    assert state["slow_count"] == 0, state


def test_admin_needs_post(start_shop: Callable[..., Shop]) -> None:
    shop = start_shop()
    assert shop.request("GET", "/admin/fail")[0] == 405
    assert shop.request("POST", "/admin/fail?count=x")[0] == 400


def test_keep_alive_two_requests_one_connection(start_shop: Callable[..., Shop]) -> None:
    shop = start_shop()
    c = shop.conn()
    try:
        c.request("GET", "/")
        r1 = c.getresponse()
        r1.read()
        sock = c.sock
        assert sock is not None
        c.request("POST", "/echo", body=b"hello")
        r2 = c.getresponse()
        body = json.loads(r2.read())
        assert c.sock is sock, "the connection was not reused"
        assert (r1.status, r2.status, body["body_length"]) == (200, 200, 5)
        assert not r1.will_close and not r2.will_close
    finally:
        c.close()


def test_calls_downstreams_and_reports_errors(start_shop: Callable[..., Shop]) -> None:
    payments = start_shop("--service", "payments", "--version", "v1")
    orders = start_shop(
        "--service",
        "orders",
        "--version",
        "v2",
        "--calls",
        "payments,inventory",
        "--upstream",
        f"payments=127.0.0.1:{payments.port}",
        "--upstream",
        f"inventory=127.0.0.1:{free_port()}",  # nobody listens there
        "--call-timeout",
        "2",
    )
    frontend = start_shop(
        "--service",
        "frontend",
        "--calls",
        "orders",
        "--upstream",
        f"orders=127.0.0.1:{orders.port}",
    )
    status, body = frontend.json("GET", "/", headers={"X-Request-Id": "abc"})
    assert status == 200
    calls = body["calls"]["orders"]["calls"]
    assert body["calls"]["orders"]["version"] == "v2"
    assert calls["payments"]["service"] == "payments"
    assert "error" in calls["inventory"]

    payments.request("POST", "/admin/fail?status=503&count=1")
    _, body = orders.json("GET", "/")
    assert body["calls"]["payments"]["status"] == 503


def test_sigterm_exits_cleanly(start_shop: Callable[..., Shop]) -> None:
    shop = start_shop()
    c = shop.conn()  # an idle keep-alive connection must not hold up the exit
    c.request("GET", "/healthz")
    c.getresponse().read()
    shop.proc.send_signal(signal.SIGTERM)
    assert shop.proc.wait(5) == 0
    c.close()
    assert shop.proc.stderr is not None
    log = shop.proc.stderr.read().decode()
    assert '"GET /healthz" 200 3' in log
    assert "stopped" in log


def test_bad_upstream_flag_is_an_error() -> None:
    out = subprocess.run(
        [sys.executable, str(SHOP), "--upstream", "orders"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "NAME=HOST:PORT" in out.stderr


# -- docker-compose.yml ------------------------------------------------------------------

SHOP_SERVICES = {
    "frontend": ("frontend", "v1"),
    "orders-v1": ("orders", "v1"),
    "orders-v2": ("orders", "v2"),
    "payments": ("payments", "v1"),
    "inventory": ("inventory", "v1"),
}


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_services_labels_and_commands() -> None:
    data = _compose()
    assert data["version"] == "3.8"
    assert set(data["services"]) == set(SHOP_SERVICES)
    for name, (service, version) in SHOP_SERVICES.items():
        svc = data["services"][name]
        assert svc["image"] == "meshctl-example:latest"
        assert svc["labels"] == {"mesh.service": service, "mesh.version": version}
        cmd = svc["command"]
        assert cmd[:2] == ["python3", "/apps/shop.py"]
        assert cmd[cmd.index("--service") + 1] == service
        assert cmd[cmd.index("--version") + 1] == version
        assert "./apps:/apps:ro" in svc["volumes"]


def test_compose_orders_alias_and_frontend_port() -> None:
    services = _compose()["services"]
    for name in ("orders-v1", "orders-v2"):
        assert "orders" in services[name]["networks"]["shop"]["aliases"]
    assert services["frontend"]["ports"] == ["127.0.0.1:18080:8080"]
    assert all("ports" not in s for n, s in services.items() if n != "frontend")


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_passes_docker_compose_config() -> None:
    # `config` only parses and validates: no Docker engine is needed.
    out = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
