"""Benchmark: config file saved -> every subscribed proxy has ACKed the new version, in ms.

    python -m bench.push_latency [--clients 100] [--rounds 20] [--also 10]

Starts a real registry (subprocess, MESH_HOME and a copy of the example config in a temporary
directory, ports chosen at run time) and N lightweight clients in this one asyncio process.
Each client joins with its own token and key (so holds its own SVID), keeps GET /v1/stream
open over mTLS and, as the proxy's ControlClient does, parses every `view` line and POSTs
/v1/ack over a kept-alive session. Each round rewrites the orders VirtualService's weights
in place (an editor's save) and waits until all N clients have ACKed the new version.

The clock is this process's perf_counter, read just after the save returns and in each
client when its ACK has been answered, so no clock crosses a process. Per round it splits:

    save -> first view     the registry's debounce (100 ms of quiet, istiod's
                           PILOT_DEBOUNCE_AFTER), the load of the directory and the publish
    first view -> all ACK  fan-out: the view written to N streams, N ACKs served

and `load_ms` is load_directory() on the same files, timed here, so the debounce share is
`save -> first view` minus it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from meshctl.aio import spawn
from registry.ca.csr import build_csr, generate_key, key_pem
from registry.ca.spiffe import SpiffeId
from registry.config import load_directory

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "compose" / "mesh"
SERVICES = ("frontend", "orders", "payments", "inventory")
PENDING = SpiffeId.parse("spiffe://join.invalid/pending")
V1_WEIGHT = re.compile(r"(subset: v1\n\s+weight: )\d+")
V2_WEIGHT = re.compile(r"(subset: v2\n\s+weight: )\d+")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RegistryProc:
    """A `meshctl registry` over a copy of the example config, in its own MESH_HOME."""

    tmp: Path
    port: int = field(default_factory=_free_port)
    monitor: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.tmp / "config"

    @property
    def home(self) -> Path:
        return self.tmp / "home"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        shutil.copytree(EXAMPLE, self.config)
        env = {**os.environ, "MESH_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "meshctl", "registry", "--config", str(self.config),
                "--port", str(self.port), "--monitor-port", str(self.monitor)]
        with (self.tmp / "registry.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"registry exited: see {self.tmp / 'registry.log'}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with s.get(f"http://127.0.0.1:{self.monitor}/healthz/ready") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise TimeoutError("registry not ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def ssl_ctx(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.home / "registry" / "ca" / "ca.crt"))
        if cert is not None:
            ctx.load_cert_chain(*cert)
        return ctx

    def operator_token(self) -> str:
        return (self.home / "registry" / "operator.token").read_text().strip()


class Client:
    """One subscribed proxy, reduced to its control-plane side: stream, parse, ACK."""

    def __init__(self, reg: RegistryProc, proxy_id: str, files: tuple[Path, Path]) -> None:
        self.reg, self.proxy_id = reg, proxy_id
        # One session per client: the stream holds one connection, ACKs reuse another.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=reg.ssl_ctx(files), limit=2),
            timeout=aiohttp.ClientTimeout(total=None, connect=10))
        self.acked: dict[int, float] = {}
        self.seen: dict[int, float] = {}
        self.waiters: dict[int, asyncio.Future[None]] = {}
        self.task: asyncio.Task[Any] | None = None

    async def follow(self) -> None:
        params = {"proxy_id": self.proxy_id, "config": "0", "catalog": "-1", "epoch": ""}
        async with self.session.get(self.reg.url + "/v1/stream", params=params,
                                    timeout=aiohttp.ClientTimeout(total=None)) as r:
            r.raise_for_status()
            async for raw in r.content:
                msg = json.loads(raw)
                if msg.get("type") != "view":
                    continue
                version = int(msg["config_version"])
                self.seen.setdefault(version, time.perf_counter())
                body = {"proxy_id": self.proxy_id, "config_version": version, "ok": True,
                        "error": ""}
                async with self.session.post(self.reg.url + "/v1/ack", json=body) as a:
                    await a.read()
                    a.raise_for_status()
                self.acked.setdefault(version, time.perf_counter())
                fut = self.waiters.pop(version, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    async def wait_acked(self, version: int) -> float:
        if version not in self.acked:
            fut = self.waiters.setdefault(version, asyncio.get_running_loop().create_future())
            await fut
        return self.acked[version]

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await self.task
        await self.session.close()


async def join_clients(reg: RegistryProc, n: int) -> list[Client]:
    """Mint N tokens as the operator, join each with its own key, open N streams."""
    op = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=reg.ssl_ctx()),
        headers={"Authorization": f"Bearer {reg.operator_token()}"})
    clients = []
    try:
        for i in range(n):
            service = SERVICES[i % len(SERVICES)]
            async with op.post(reg.url + "/v1/tokens", json={"service": service}) as r:
                token = (await r.json())["token"]
            key = generate_key()
            async with op.post(reg.url + "/v1/join", json={
                    "token": token, "csr": build_csr(key, PENDING).decode()}) as r:
                data = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"join refused: {data}")
            d = reg.tmp / "clients" / f"{i}"
            d.mkdir(parents=True)
            files = (d / "svid.crt", d / "svid.key")
            files[0].write_text(data["certificate"])
            files[1].write_bytes(key_pem(key))
            clients.append(Client(reg, f"bench-{service}-{i}", files))
    finally:
        await op.close()
    for c in clients:
        c.task = spawn(c.follow(), name=c.proxy_id)
    return clients


def set_weight(config: Path, v1: int) -> None:
    """The save being measured: orders.yaml rewritten in place with a v1/v2 split."""
    path = config / "orders.yaml"
    text = V1_WEIGHT.sub(rf"\g<1>{v1}", path.read_text())
    path.write_text(V2_WEIGHT.sub(rf"\g<1>{100 - v1}", text))


def summary(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max by nearest rank (with 20 rounds, p99 is the worst round)."""
    s = sorted(values)

    def rank(p: int) -> float:
        return s[max(0, min(len(s) - 1, -(-len(s) * p // 100) - 1))]

    return {"p50": round(rank(50), 1), "p90": round(rank(90), 1), "p99": round(rank(99), 1),
            "max": round(s[-1], 1)}


def load_ms(config: Path, repeat: int = 20) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        load_directory(config)
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


@contextlib.contextmanager
def registry_in_tmp() -> Iterator[RegistryProc]:
    with tempfile.TemporaryDirectory(prefix="meshctl-push-") as tmp:
        reg = RegistryProc(Path(tmp))
        reg.start()
        try:
            yield reg
        finally:
            reg.stop()


async def measure(n: int, rounds: int, settle_s: float = 0.3) -> dict[str, Any]:
    """One registry, N clients, `rounds` saves; the figures in ms."""
    with registry_in_tmp() as reg:
        await reg.wait_ready()
        if os.environ.get("BENCH_SHOW_PID"):
            print(f"registry pid {reg.proc.pid if reg.proc else 0}", file=sys.stderr)
        clients = await join_clients(reg, n)
        try:
            await asyncio.wait_for(asyncio.gather(*(c.wait_acked(1) for c in clients)), 60)
            total, first_view, fan_out = [], [], []
            for r in range(rounds):
                version = r + 2
                await asyncio.sleep(settle_s)
                set_weight(reg.config, 80 if r % 2 == 0 else 90)
                saved = time.perf_counter()
                acks = await asyncio.wait_for(
                    asyncio.gather(*(c.wait_acked(version) for c in clients)), 30)
                first = min(c.seen[version] for c in clients)
                total.append((max(acks) - saved) * 1000)
                first_view.append((first - saved) * 1000)
                fan_out.append((max(acks) - first) * 1000)
            return {
                "clients": n, "rounds": rounds,
                "save_to_all_acked_ms": summary(total),
                "save_to_first_view_ms": summary(first_view),
                "first_view_to_all_acked_ms": summary(fan_out),
                "load_ms": load_ms(reg.config),
                "debounce_quiet_ms": 100,
            }
        finally:
            for c in clients:
                await c.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=100, help="subscribed clients (100)")
    parser.add_argument("--rounds", type=int, default=20, help="config saves measured (20)")
    parser.add_argument("--also", type=int, default=10,
                        help="a second run with this many clients (10; 0 to skip)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.rounds < 1:
        parser.error("--clients and --rounds must be at least 1")
    runs = [args.clients] + ([args.also] if args.also and args.also != args.clients else [])
    results = [asyncio.run(measure(n, args.rounds)) for n in runs]
    print(json.dumps({"goal": {"clients": 100, "p99_ms": 150}, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
