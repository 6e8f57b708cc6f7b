"""The app-health loop against real sockets on 127.0.0.1: what a probe says, what is reported."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from common.aio import spawn
from proxy.control.apphealth import app_health_loop, probe, probe_params
from proxy.policy.probe import ProbeParams
from registry.config.diagnostics import Source
from registry.config.model import Port, ReadinessProbe, Service, Workload


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _http_server(status: int) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok".encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


@pytest.fixture
async def silent() -> AsyncIterator[int]:
    """A port that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for w in held:
        w.close()
    server.close()


async def test_tcp_probe_refused_and_open() -> None:
    port = _closed_port()
    assert await probe(ProbeParams("tcp", "127.0.0.1", port)) == (
        f"connect refused on 127.0.0.1:{port}")
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    try:
        assert await probe(ProbeParams("tcp", "127.0.0.1", server.sockets[0].getsockname()[1])) \
            is None
    finally:
        server.close()


@pytest.mark.parametrize(("status", "ok"), [(200, True), (302, True), (404, False), (503, False)])
async def test_http_probe_status(status: int, ok: bool) -> None:
    server = await _http_server(status)
    port = server.sockets[0].getsockname()[1]
    try:
        got = await probe(ProbeParams("http", "127.0.0.1", port, "/ready"))
    finally:
        server.close()
    assert got == (None if ok else f"HTTP {status} from GET http://127.0.0.1:{port}/ready")


async def test_http_probe_times_out_on_a_silent_app(silent: int) -> None:
    got = await probe(ProbeParams("http", "127.0.0.1", silent, "/", timeout_s=0.2))
    assert got == f"no answer within 0.2s from GET http://127.0.0.1:{silent}/"


async def test_loop_reports_down_then_up() -> None:
    port = _closed_port()
    p = ProbeParams("tcp", "127.0.0.1", port, period_s=0.05, timeout_s=0.5, failure_threshold=2)
    reports: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def report(health: str, reason: str) -> None:
        await reports.put((health, reason))

    task = spawn(app_health_loop(lambda: p, report))
    try:
        got = await asyncio.wait_for(reports.get(), 10)
        assert got == ("unhealthy", f"app: connect refused on 127.0.0.1:{port} (2 failures)")
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
        try:
            assert await asyncio.wait_for(reports.get(), 10) == ("healthy", "")
        finally:
            server.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _service(*workloads: Workload) -> Service:
    ports = (Port(8080, "http", "http"), Port(9090, "tcp", "admin"))
    return Service("orders", ports, None, "off", workloads, Source("mesh.yaml", 1, 1))


def _workload(version: str, readiness: ReadinessProbe | None) -> Workload:
    return Workload(version, ("app",), None, (), 1, (("app", "orders"), ("version", version)),
                    readiness=readiness)


def test_probe_params_default_is_tcp_to_the_first_ports_app() -> None:
    apps = {8080: ("127.0.0.1", 18080)}

    def app(port: int) -> tuple[str, int]:
        return apps.get(port, ("127.0.0.1", port))

    assert probe_params(_service(), {"version": "v1"}, app) == ProbeParams(
        "tcp", "127.0.0.1", 18080)
    ready = ReadinessProbe("http", 9090, "/ready", 0.0, 0.5, 0.2, 2, 1)
    svc = _service(_workload("v1", None), _workload("v2", ready))
    assert probe_params(svc, {"version": "v1"}, app) == ProbeParams("tcp", "127.0.0.1", 18080)
    assert probe_params(svc, {"version": "v2"}, app) == ProbeParams(
        "http", "127.0.0.1", 9090, "/ready", 0.0, 0.5, 0.2, 2, 1)
    assert probe_params(None, {}, app) is None


async def test_ipv6_app_is_named_in_brackets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    with socket.socket(socket.AF_INET6) as s:
        try:
            s.bind(("::1", 0))
        except OSError:
            pytest.skip("no ::1 on this host")
        port = s.getsockname()[1]
    assert await probe(ProbeParams("http", "::1", port, "/r")) == f"connect refused on [::1]:{port}"
