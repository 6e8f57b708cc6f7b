"""ACKs over the stream: POST /v1/stream carries ACK lines in, views and answers out."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from common.aio import spawn
from proxy.control.client import ControlClient, View
from registry.ca import CertificateAuthority
from tests.integration.harness import Mesh, wait_until
from tests.registry.server.support import DuplexStream, bundle, join, mint, op
from tests.registry.server.test_config_push import set_orders_weights

pytestmark = pytest.mark.slow


def proxy_status(mesh: Mesh, proxy_id: str) -> dict[str, Any]:
    proxies = op(mesh, "GET", "/v1/status")[1]["proxies"]
    return next(p for p in proxies if p["proxy_id"] == proxy_id)


async def until(pred: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_ack_lines_on_the_stream_are_recorded_and_answered(mesh: Mesh, tmp_path: Path) -> None:
    w = join(mesh, "orders", tmp_path / "orders")
    s = DuplexStream(mesh, w.ctx(), "orders-3")
    assert s.status == 200
    view = s.next_line()
    assert view["type"] == "view" and view["config_version"] == 1
    s.send(b"\n")  # what a proxy opens its body with: skipped
    s.ack({"config_version": 1, "ok": True, "cert_not_after": 1.5e9})  # proxy_id: the stream's
    assert s.next_line() == {"type": "ack", "config_version": 1, "ok": True}
    st = proxy_status(mesh, "orders-3")
    assert st["acked_version"] == 1 and st["connected"] is True
    assert st["cert_not_after"] == 1.5e9 and st["identity"] == w.spiffe_id

    # A bad line is answered with an error; the stream goes on.
    s.send(b"not json\n")
    assert s.next_line()["type"] == "error"
    s.ack({"proxy_id": "orders-4", "config_version": 1})
    assert "orders-4" in s.next_line()["error"]
    s.ack({"config_version": "1"})
    assert "config_version" in s.next_line()["error"]

    # The same connection carries the next view and its NACK.
    set_orders_weights(mesh.config, 40)
    view = s.next_line()
    assert view["type"] == "view" and view["config_version"] == 2
    s.ack({"config_version": 2, "ok": False, "error": "subset v3 unknown"})
    assert s.next_line() == {"type": "ack", "config_version": 2, "ok": False}
    st = proxy_status(mesh, "orders-3")
    assert (st["acked_version"], st["nacked_version"]) == (1, 2)
    assert st["nack_error"] == "subset v3 unknown"

    s.close()
    wait_until(lambda: not proxy_status(mesh, "orders-3")["connected"], what="stream closed")


def test_duplex_stream_refusals(mesh: Mesh, tmp_path: Path) -> None:
    w = join(mesh, "orders", tmp_path / "orders")
    assert DuplexStream(mesh, w.ctx(), "").status == 400  # whose ACKs would they be?
    s = DuplexStream(mesh, w.ctx(), "orders-5")
    assert s.next_line()["type"] == "view"
    s.send(b"x" * 20_000)  # no newline in sight: not ACK lines; the registry hangs up
    with pytest.raises((EOFError, OSError)):
        while True:
            s.next_line()
    s.close()
    wait_until(lambda: not proxy_status(mesh, "orders-5")["connected"], what="stream closed")


async def test_control_client_acks_on_its_stream(mesh: Mesh, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    token = await asyncio.to_thread(mint, mesh, "orders")
    (tmp_path / "proxy").mkdir()
    c = ControlClient(mesh.url, bundle(mesh), tmp_path / "proxy", "orders-9")
    await c.join(token)
    posted: list[str] = []
    real_post = c._post

    async def post(path: str, body: dict[str, Any], method: str = "POST",
                   timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
        posted.append(path)
        return await real_post(path, body, method, timeout)

    monkeypatch.setattr(c, "_post", post)
    answered: list[tuple[int, bool]] = []
    c.on_ack(lambda version, ok: answered.append((version, ok)))

    def apply(view: View) -> str | None:
        return "refused by the test" if view.config_version == 3 else None

    task = spawn(c.stream_loop(apply))
    try:
        await until(lambda: c.acked_version == 1, "ACK of version 1")
        assert c.connected
        await asyncio.to_thread(set_orders_weights, mesh.config, 70)
        await until(lambda: c.acked_version == 2, "ACK of version 2")
        await asyncio.to_thread(set_orders_weights, mesh.config, 60)
        await until(lambda: (3, False) in answered, "NACK of version 3")
        assert answered == [(1, True), (2, True), (3, False)]
        assert (c.config_version, c.acked_version) == (2, 2)
        st = await asyncio.to_thread(proxy_status, mesh, "orders-9")
        assert (st["acked_version"], st["nacked_version"]) == (2, 3)
        assert st["nack_error"] == "refused by the test"
        assert st["cert_not_after"] == c.identity.not_after.timestamp()  # type: ignore[union-attr]
        assert "/v1/ack" not in posted  # every ACK went over the stream
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await c.close()


async def test_control_client_falls_back_to_post_ack(tmp_path: Path) -> None:
    """A registry from before POST /v1/stream (405): GET the stream, POST each ACK."""
    CertificateAuthority.load_or_create(tmp_path / "ca", "shop.local")  # a bundle to trust
    acks: list[dict[str, Any]] = []
    view = {"type": "view", "epoch": "e1", "config_version": 4, "catalog_version": 1,
            "config": {}, "endpoints": []}

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(json.dumps(view).encode() + b"\n")
        await asyncio.sleep(60)
        return resp

    async def ack(request: web.Request) -> web.Response:
        acks.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.add_routes([web.get("/v1/stream", stream), web.post("/v1/ack", ack)])
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    c = ControlClient(f"http://127.0.0.1:{port}", tmp_path / "ca" / "ca.crt", tmp_path,
                      "orders-1")
    task = spawn(c.stream_loop(lambda v: None))
    try:
        await until(lambda: c.acked_version == 4, "ACK of version 4 over POST /v1/ack")
        assert acks[0]["proxy_id"] == "orders-1" and acks[0]["config_version"] == 4
        assert c.config_version == 4 and c.connected
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await c.close()
        await runner.cleanup()


def _stream_sockets(port: int, side: str) -> list[str]:
    """`ss` lines of the established TCP connections with `side` (sport/dport) = port."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", f"( {side} = :{port} )"],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    return [line for line in out.splitlines() if line.strip()]


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
async def test_both_ends_of_the_stream_keep_it_alive(mesh: Mesh, tmp_path: Path) -> None:
    """Issue 18: a push into a dead stream was counted as sent. Both ends arm TCP keepalive
    on the stream's connection (the kernel shows its timer), so a vanished peer is noticed."""
    token = await asyncio.to_thread(mint, mesh, "orders")
    (tmp_path / "proxy").mkdir()
    c = ControlClient(mesh.url, bundle(mesh), tmp_path / "proxy", "orders-7")
    await c.join(token)
    task = spawn(c.stream_loop(lambda v: None))
    try:
        await until(lambda: c.acked_version == 1, "ACK of version 1")
        await c.close()  # the short-call session: only the stream stays open
        # While a line is in flight the kernel shows the retransmit timer instead: wait for
        # the connection to be idle, then its timer must be keepalive's on both ends.
        ends: dict[str, list[str]] = {}

        def idle_and_kept_alive() -> bool:
            ends.update(registry=_stream_sockets(mesh.port, "sport"),
                        proxy=_stream_sockets(mesh.port, "dport"))
            return all(len(v) == 1 and "timer:(keepalive" in v[0] for v in ends.values())

        await until(idle_and_kept_alive, "keepalive on the stream's connection, both ends", 15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await c.close()
