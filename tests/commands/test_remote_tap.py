"""`meshctl tap` and `top` from another host: a MESH_HOME with no registry and no proxy, only
the operator credential file, taps the mesh's proxies through the registry (its relay over
each proxy's stream, registry/server/relay.py). The proxies' admin ports are in no state
the CLI reads: it is given the registry's address and the credential, nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.promparse import parse
from tests.example import CONFIG
from tests.integration.harness import Mesh, free_port, http_get, wait_until
from tests.registry.server.support import join

pytestmark = pytest.mark.slow
FRONTEND = "spiffe://shop.local/ns/default/sa/frontend"
REPO = Path(__file__).resolve().parents[2]


class Remote:
    def __init__(self, mesh: Mesh, local: int, orders: dict[str, Any], cred: Path) -> None:
        self.mesh, self.local, self.orders, self.cred = mesh, local, orders, cred
        self.home = mesh.tmp / "laptop"  # another host's MESH_HOME: nothing in it
        self.env = {**os.environ, "MESH_HOME": str(self.home), "PYTHONPATH": str(REPO),
                    "MESH_REGISTRY": mesh.url}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "meshctl", *args, "-o", "json",
                "--operator-token-file", str(self.cred)]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=60,
                              env=self.env, cwd=REPO)

    def traffic(self, stop: threading.Event) -> threading.Thread:
        def loop() -> None:
            while not stop.is_set():
                http_get(f"http://127.0.0.1:{self.local}/echo")

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return t


def tap_clients(metrics_port: int) -> float:
    text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")[1].decode()
    return sum(s.value for s in parse(text) if s.name == "meshctl_proxy_tap_clients")


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    mesh = Mesh(tmp_path_factory.mktemp("remote-tap"), CONFIG)
    mesh.start_registry()
    try:
        _, orders_app = mesh.app("orders", "v1")
        orders = mesh.proxy("orders", "v1", app_port=orders_app)
        local = free_port()
        mesh.proxy("frontend", "v1", upstreams={"orders:8080": local})
        wait_until(lambda: http_get(f"http://127.0.0.1:{local}/echo")[0] == 200, what="route")
        done = subprocess.run([sys.executable, "-m", "meshctl", "token", "operator"],
                              capture_output=True, text=True, timeout=60, env=mesh.env)
        assert done.returncode == 0, done.stderr
        cred = mesh.tmp / "operator.token"
        cred.write_text(done.stdout)
        cred.chmod(0o600)
        yield Remote(mesh, local, orders, cred)
    finally:
        mesh.close()


def test_tap_and_top_from_another_host(remote: Remote) -> None:
    stop = threading.Event()
    t = remote.traffic(stop)
    try:
        tapped = remote.run("tap", "orders", "--max", "3", "--path", "/echo", "--duration", "30")
        topped = remote.run("top", "--duration", "3")
    finally:
        stop.set()
        t.join(15)
        assert not t.is_alive(), "the traffic thread did not stop within 15 s"
    assert tapped.returncode == 0, tapped.stderr
    events = [json.loads(line) for line in tapped.stdout.splitlines()]
    assert len(events) == 3, events
    for e in events:
        assert (e["direction"], e["destination"], e["path"], e["status"]) == \
            ("inbound", "orders", "/echo", 200), e
        assert e["peer"] == FRONTEND and e["proxy"] == remote.orders["id"], e
    assert not (remote.home / "proxies").exists()  # nothing local: all through the registry
    assert topped.returncode == 0, topped.stderr
    rows = json.loads(topped.stdout)["rows"]
    assert rows and (rows[0]["destination"], rows[0]["path"]) == ("orders", "/echo"), rows
    # The operator left: the proxy stops its side of the relayed taps.
    wait_until(lambda: tap_clients(remote.orders["metrics"]) == 0, 15,
               "orders' proxy closing the relayed taps once the operator left")


def test_a_tap_of_a_proxy_that_disconnects_ends_saying_so(remote: Remote) -> None:
    mesh = remote.mesh
    _, app = mesh.app("payments", "v1")
    pay = mesh.proxy("payments", "v1", app_port=app)
    tap = subprocess.Popen(remote.argv("tap", "payments", "--duration", "60"), env=remote.env,
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: tap.poll() is None and tap_clients(pay["metrics"]) == 1, 20,
                   "the relayed tap open on payments' proxy")
        pay["proc"].p.send_signal(signal.SIGKILL)
        _, err = tap.communicate(timeout=30)
    finally:
        if tap.poll() is None:
            tap.kill()
            tap.wait(10)
    assert tap.returncode == 1, err
    assert f"proxy {pay['id']} disconnected" in err and "Traceback" not in err, err


def test_only_the_operator_taps(remote: Remote, tmp_path: Path) -> None:
    w = join(remote.mesh, "frontend", tmp_path / "w")
    status, body = w.call("GET", f"/v1/proxies/{remote.orders['id']}/tap")
    assert status == 403, body
    assert tap_clients(remote.orders["metrics"]) == 0  # nothing was asked of the proxy
