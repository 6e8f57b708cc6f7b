"""As root: the observability commands against a transparent-mode mesh (`meshctl up` in
network namespaces). Admin listeners are each namespace's own 127.0.0.1: tap,
proxy-config and check reach them from inside the namespace; stat scrapes the workloads'
addresses; check verifies every namespace's iptables rules."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.commands.support import EXAMPLE, Cli, free_port, mesh_home
from tests.commands.test_observe import app

pytestmark = [pytest.mark.root, pytest.mark.slow]
LOOP = """
import sys, time, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    with opener.open("http://orders:8080/echo", timeout=5) as r:
        r.read()
"""


@pytest.fixture(scope="module")
def shop() -> Iterator[tuple[Cli, Any]]:
    with mesh_home() as cli:
        up = cli.json("up", str(EXAMPLE / "mesh"), "--runtime", "local", "--timeout", "30",
                      "--monitor-port", str(free_port()))  # fmt: skip
        if up["mode"] != "transparent":
            pytest.skip(f"transparent mode unavailable here: {up['note']}")
        yield cli, up


def _run(cli: Cli, *args: str) -> Any:
    res = CliRunner().invoke(app, [*args, "--output", "json"], env={"MESH_HOME": str(cli.home)})
    assert res.exit_code == 0, (res.output, res.exception)
    return res.stdout


def _traffic(up: Any, seconds: float) -> threading.Thread:
    ns = next(w["netns"] for w in up["workloads"] if w["name"].endswith("frontend-v1"))
    argv = ["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", LOOP, str(seconds)]
    t = threading.Thread(target=subprocess.run, args=(argv,), kwargs={"timeout": 60})
    t.start()
    return t


def test_tap_and_proxy_config_reach_into_the_namespaces(shop: tuple[Cli, Any]) -> None:
    cli, up = shop
    t = _traffic(up, 6)
    try:
        lines = _run(cli, "tap", "orders", "--max", "3", "--path", "/echo", "--duration", "20")
    finally:
        t.join()
    events = [json.loads(x) for x in lines.splitlines()]
    assert len(events) == 3 and {e["direction"] for e in events} == {"inbound"}
    assert {e["peer"] for e in events} == {"spiffe://shop.local/ns/default/sa/frontend"}
    certs = json.loads(_run(cli, "proxy-config", "payments", "certs"))["certs"]
    assert certs["spiffe_id"] == "spiffe://shop.local/ns/default/sa/payments"


def test_stat_and_check_in_transparent_mode(shop: tuple[Cli, Any]) -> None:
    cli, up = shop
    t = _traffic(up, 4)
    try:
        out = json.loads(_run(cli, "stat", "--interval", "1.5"))
    finally:
        t.join()
    edge = next(r for r in out["edges"] if r["name"] == "frontend-v1 -> orders")
    assert edge["rps"] > 0 and edge["success_rate"] == 1.0
    check = json.loads(_run(cli, "check"))
    rules = [c for c in check["checks"] if c["check"] == "iptables"]
    assert len(rules) == len(up["workloads"]) and {c["status"] for c in rules} == {"ok"}
    certs = [c for c in check["checks"] if c["check"] == "certificate"]
    assert all("% of" in c["detail"] for c in certs)  # lifetimes read from inside each netns
