"""A flood of the inbound port (15006) must not take the workload's outbound down.

Issue 19, item 6: 10,000 plain TCP connections to a proxy's inbound port used up a
connection ceiling that inbound and outbound shared (the workload's own calls were
refused), held their slots for the whole 10 s handshake timeout, and left 515 MB of RSS
behind. Here, through real proxies on 127.0.0.1, with 2,000 connections: a few thousand
idle sockets from one test process on 2 shared cores; what is measured (who is refused,
what is closed, what memory comes back) scales linearly with the count, and 10,000 would
only take longer and need the fd limits raised.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.support import rss_mb
from tests.integration.harness import Mesh, free_port, http_get, wait_until
from tests.integration.test_overload_and_tcp import MESH_YAML  # client, web (and db)

pytestmark = pytest.mark.slow

FLOOD = 2000
RSS_SLACK_MB = 25.0  # over the baseline once the flood is gone (measured: about 8 MB)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "mesh.yaml").write_text(MESH_YAML)
    m = Mesh(tmp_path, tmp_path / "src")
    m.start_registry()
    yield m
    m.close()


def start(mesh: Mesh, *extra: str) -> tuple[dict[str, Any], int, int]:
    """web behind its proxy; the client's proxy (the flooded one, `extra` options) with its
    outbound listener for web; web's proxy with an outbound listener for the client.
    Returns (client's proxy, client's outbound port to web, web's outbound port to client)."""
    _, web_app = mesh.app("web", "v1")
    _, client_app = mesh.app("client", "v1")
    to_client = free_port()
    mesh.proxy("web", "v1", app_port=web_app, upstreams={"client:8080": to_client})
    to_web = free_port()
    client = mesh.proxy("client", "v1", app_port=client_app, upstreams={"web:8080": to_web},
                        extra=extra)
    wait_until(lambda: http_get(f"http://127.0.0.1:{to_web}/")[0] == 200, what="client -> web")
    wait_until(lambda: http_get(f"http://127.0.0.1:{to_client}/")[0] == 200,
               what="web -> client")
    return client, to_web, to_client


def flood(port: int, n: int, sources: list[str], send: bytes = b"") -> list[socket.socket]:
    """`n` connections to 127.0.0.1:`port`, from the source addresses in turn (any
    127.x.y.z is this host's), each sending `send` (nothing: idle) and nothing more."""
    socks = []
    for i in range(n):
        s = socket.socket()
        s.bind((sources[i % len(sources)], 0))
        s.setblocking(False)
        if s.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS):
            socks.append(s)
        else:
            s.close()
    for s in socks:
        if send:
            try:
                s.send(send)
            except BlockingIOError:
                pass  # still connecting: it then sends nothing at all, idle too
            except OSError:
                pass  # refused already
    return socks


def closed_by_proxy(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except OSError:
        return True  # reset


def get_status(url: str) -> int:
    try:
        return http_get(url, timeout=5)[0]
    except OSError:
        return 0


def counter(proxy: dict[str, Any], name: str) -> float:
    _, body, _ = http_get(f"http://127.0.0.1:{proxy['metrics']}/metrics")
    for line in body.decode().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return float(parts[1])
    return 0.0


def test_inbound_flood_leaves_the_outbound_budget_alone(mesh: Mesh,
                                                        record_property: Any) -> None:
    """--max-connections 300 (each outbound listener's own ceiling now, the only one before)
    and 2,000 idle connections to inbound from 8 sources: the client's outbound calls all
    succeed while the flood is held, and the proxy closes every flood connection."""
    client, to_web, _ = start(mesh, "--max-connections", "300")
    socks = flood(client["inbound"], FLOOD, [f"127.0.0.{2 + k}" for k in range(8)])
    try:
        during = [get_status(f"http://127.0.0.1:{to_web}/") for _ in range(20)]
        still_held = sum(not closed_by_proxy(s) for s in socks)
        wait_until(lambda: all(closed_by_proxy(s) for s in socks), timeout=60,
                   what="every flood connection closed by the proxy")
    finally:
        for s in socks:
            s.close()
    record_property("held_while_calling", still_held)
    assert len(socks) == FLOOD
    assert still_held > 300  # the flood did hold more than the outbound ceiling meanwhile
    assert during == [200] * 20


def test_idle_and_stalled_tls_connections_are_cut_and_memory_comes_back(
        mesh: Mesh, record_property: Any) -> None:
    """2,000 connections from one source (no per-source ceiling here): half send nothing,
    half send the first byte of a TLS record and stall (the costly kind: TLS state is
    allocated). With --inbound-handshake-timeout 1 every one is closed by the proxy and
    counted as a handshake timeout; the outbound works meanwhile; once they are gone the
    proxy's RSS comes back near its baseline."""
    client, to_web, _ = start(mesh, "--inbound-handshake-timeout", "1",
                              "--max-connections-per-source", "0")
    pid = int(client["proc"].p.pid)
    for _ in range(50):  # warm: pools, label sets, TLS sessions
        assert get_status(f"http://127.0.0.1:{to_web}/") == 200
    base = rss_mb(pid)
    socks = flood(client["inbound"], FLOOD // 2, ["127.0.0.2"])
    socks += flood(client["inbound"], FLOOD // 2, ["127.0.0.2"], send=b"\x16")
    peak = rss_mb(pid)

    def all_closed() -> bool:
        nonlocal peak
        peak = max(peak, rss_mb(pid))
        return all(closed_by_proxy(s) for s in socks)

    try:
        during = [get_status(f"http://127.0.0.1:{to_web}/") for _ in range(10)]
        wait_until(all_closed, timeout=60, what="every flood connection closed by the proxy")
        timeouts = counter(client, "meshctl_proxy_inbound_handshake_timeouts_total")
    finally:
        for s in socks:
            s.close()
    name = "meshctl_proxy_memory_trims_total"
    wait_until(lambda: counter(client, name) >= 1, timeout=30, what="memory trimmed")
    after = rss_mb(pid)
    record_property("rss_mb", {"baseline": round(base, 1), "peak": round(peak, 1),
                               "after": round(after, 1)})
    assert len(socks) == FLOOD
    assert during == [200] * 10
    assert timeouts == FLOOD  # each one cut by the handshake timeout, none served
    assert after < base + RSS_SLACK_MB, (base, peak, after)


def test_per_source_ceiling_refuses_one_source_not_the_others(mesh: Mesh) -> None:
    """--max-connections-per-source 5: the 6th connection from 127.0.0.2 is closed at once
    (the handshake timeout is 60 s, so nothing else closes it), the 5 stay open, and
    another source (web's proxy, from 127.0.0.1) still gets its mTLS call through."""
    client, _, to_client = start(mesh, "--max-connections-per-source", "5",
                                 "--inbound-handshake-timeout", "60")
    held = flood(client["inbound"], 5, ["127.0.0.2"])
    sixth = socket.create_connection(("127.0.0.1", client["inbound"]), timeout=10,
                                     source_address=("127.0.0.2", 0))
    try:
        try:
            refused = sixth.recv(1) == b""
        except ConnectionResetError:
            refused = True
        assert refused
        assert counter(client, "meshctl_proxy_connections_source_refused_total") == 1
        assert not any(closed_by_proxy(s) for s in held)
        assert get_status(f"http://127.0.0.1:{to_client}/") == 200
    finally:
        sixth.close()
        for s in held:
            s.close()
