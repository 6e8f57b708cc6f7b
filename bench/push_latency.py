"""Benchmark: config file saved -> every subscribed proxy has ACKed the new version, in ms.

    python -m bench.push_latency [--clients 100] [--rounds 20] [--also 10] [--procs 4]

Starts a real registry (subprocess, MESH_HOME and a copy of the example config in a temporary
directory, ports chosen at run time) and N proxies' control-plane side, spread over `--procs`
worker processes (real proxies are N processes; one process for all N would put the
benchmark's own CPU on the measured path and serialise what N proxies do in parallel). Each
proxy is the proxy's own ControlClient, on the proxy's event loop (uvloop when installed):
it joins with its own token and key (its own SVID), keeps one stream open over mTLS
(POST /v1/stream), parses every `view` line, applies it and ACKs it on the stream. Each
round rewrites the orders VirtualService's weights in place (an editor's save) and waits
until all N proxies have had their ACK of the new version answered by the registry.

Times are CLOCK_MONOTONIC, one clock for every process of the machine: read here just after
the save returns, and in the workers when a view arrives and when its ACK is answered.
Per round it splits:

    save -> first view     the registry's debounce (100 ms of quiet, istiod's
                           PILOT_DEBOUNCE_AFTER), the load of the directory and the publish
    first view -> all ACK  fan-out: the view written to N streams, N ACKs served

and `load_ms` is load_directory() on the same files, timed here: after the bench's save
(one file changed, the others' nodes cached, as in the registry) and cold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
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
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from common.aio import spawn
from proxy.control.client import ApplyView, ControlClient, View
from registry.config import load_directory, yamlsource

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "compose" / "mesh"
SERVICES = ("frontend", "orders", "payments", "inventory")
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
        ctx = ssl.create_default_context(cafile=str(self.bundle))
        if cert is not None:
            ctx.load_cert_chain(*cert)
        return ctx

    @property
    def bundle(self) -> Path:
        return self.home / "registry" / "ca" / "ca.crt"

    def operator_token(self) -> str:
        return (self.home / "registry" / "operator.token").read_text().strip()


def now() -> float:
    """CLOCK_MONOTONIC: one clock for this process and its workers (system-wide on Linux)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# -- the worker processes: the proxies' control-plane side ---------------------------------

async def worker(spec: dict[str, Any]) -> None:
    """Join K proxies and follow their streams with the proxy's own ControlClient.

    Prints one JSON line per config version once all K have had their ACK answered:
    `{"version", "seen": [...], "acked": [...]}`, times on now()'s clock. Runs until stdin
    closes (the parent is done, or gone).
    """
    k = len(spec["clients"])
    seen: dict[int, dict[str, float]] = defaultdict(dict)
    answered: dict[int, dict[str, float]] = defaultdict(dict)

    def follow(c: ControlClient) -> tuple[ApplyView, Callable[[int, bool], None]]:
        def apply(view: View) -> str | None:
            seen[view.config_version].setdefault(c.proxy_id, now())
            return None  # accepted: ACK

        def on_ack(version: int, ok: bool) -> None:
            answered[version].setdefault(c.proxy_id, now())
            if len(answered[version]) == k:
                print(json.dumps({"version": version, "seen": list(seen[version].values()),
                                  "acked": list(answered[version].values())}), flush=True)
        return apply, on_ack

    clients, tasks = [], []
    for proxy_id, token in spec["clients"]:
        files = Path(spec["dir"]) / proxy_id
        files.mkdir(parents=True)
        c = ControlClient(spec["url"], Path(spec["bundle"]), files, proxy_id)
        await c.join(token)  # its own key, CSR and SVID, as a proxy's first call
        clients.append(c)
    for c in clients:
        apply, on_ack = follow(c)
        c.on_ack(on_ack)
        tasks.append(spawn(c.stream_loop(apply), name=c.proxy_id))
    try:
        await asyncio.to_thread(sys.stdin.buffer.read)  # until the parent closes our stdin
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in clients:
            await c.close()


def run_worker(loop: str) -> None:
    spec = json.loads(sys.stdin.buffer.readline())
    if loop == "uvloop":
        import uvloop

        uvloop.run(worker(spec))
    else:
        asyncio.run(worker(spec))


def default_loop() -> str:
    """What `meshctl proxy` runs on: uvloop when installed, else asyncio's own loop."""
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


# -- this process: the registry, the workers, the saves --------------------------------------

class Workers:
    """P worker processes sharing N proxies; collects their per-version reports."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.reports: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.changed = asyncio.Event()
        self.readers: list[asyncio.Task[Any]] = []

    async def start(self, reg: RegistryProc, n: int, procs: int, loop: str) -> None:
        tokens = await mint_tokens(reg, n)
        groups = [tokens[i::procs] for i in range(procs)]
        for i, group in enumerate(groups):
            spec = {"url": reg.url, "bundle": str(reg.bundle), "dir": str(reg.tmp / "clients"),
                    "clients": group}
            with (reg.tmp / f"worker-{i}.log").open("ab") as err:
                p = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.push_latency", "--worker", "--loop", loop,
                    cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
            assert p.stdin is not None
            p.stdin.write(json.dumps(spec).encode() + b"\n")
            await p.stdin.drain()
            self.procs.append(p)
            self.readers.append(spawn(self._read(i, p), name=f"worker-{i}"))

    async def _read(self, i: int, p: asyncio.subprocess.Process) -> None:
        assert p.stdout is not None
        async for line in p.stdout:
            msg = json.loads(line)
            self.reports[int(msg["version"])].append(msg)
            self.changed.set()
        self.reports[-1].append({"worker": i, "rc": await p.wait()})  # exited: a failure
        self.changed.set()

    async def all_acked(self, version: int, timeout: float) -> tuple[list[float], list[float]]:
        """When every proxy of every worker has had `version` ACKed: (seen, acked) times."""
        async with asyncio.timeout(timeout):
            while len(self.reports[version]) < len(self.procs):
                if self.reports[-1]:
                    raise RuntimeError(f"a worker exited: {self.reports[-1]} (see worker-*.log)")
                self.changed.clear()
                await self.changed.wait()
        got = self.reports[version]
        return [t for m in got for t in m["seen"]], [t for m in got for t in m["acked"]]

    async def stop(self) -> None:
        for p in self.procs:
            if p.stdin is not None:
                p.stdin.close()
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                p.kill()
                await p.wait()
        for t in self.readers:
            t.cancel()


async def mint_tokens(reg: RegistryProc, n: int) -> list[tuple[str, str]]:
    """N (proxy_id, one-time join token) pairs, services in turn, minted as the operator."""
    out = []
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=reg.ssl_ctx()),
            headers={"Authorization": f"Bearer {reg.operator_token()}"}) as op:
        for i in range(n):
            service = SERVICES[i % len(SERVICES)]
            async with op.post(reg.url + "/v1/tokens", json={"service": service}) as r:
                data = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"token refused: {data}")
            out.append((f"bench-{service}-{i}", str(data["token"])))
    return out


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


def load_ms(config: Path, repeat: int = 20) -> dict[str, float]:
    """load_directory() here, median ms: after the bench's save (orders.yaml changed, the
    other files' nodes cached, as in the registry), and cold (nothing cached)."""
    changed, cold = [], []
    for i in range(repeat):
        set_weight(config, 80 if i % 2 == 0 else 90)
        t0 = time.perf_counter()
        load_directory(config)
        changed.append((time.perf_counter() - t0) * 1000)
        yamlsource._COMPOSED.clear()
        t0 = time.perf_counter()
        load_directory(config)
        cold.append((time.perf_counter() - t0) * 1000)
    return {"one_file_changed": round(statistics.median(changed), 2),
            "cold": round(statistics.median(cold), 2)}


@contextlib.contextmanager
def registry_in_tmp() -> Iterator[RegistryProc]:
    with tempfile.TemporaryDirectory(prefix="meshctl-push-") as tmp:
        reg = RegistryProc(Path(tmp))
        reg.start()
        try:
            yield reg
        finally:
            reg.stop()


async def measure(n: int, rounds: int, procs: int, loop: str,
                  settle_s: float = 0.3) -> dict[str, Any]:
    """One registry, N proxies in `procs` worker processes, `rounds` saves; figures in ms."""
    with registry_in_tmp() as reg:
        await reg.wait_ready()
        if os.environ.get("BENCH_SHOW_PID"):
            print(f"registry pid {reg.proc.pid if reg.proc else 0}", file=sys.stderr)
        workers = Workers()
        try:
            await workers.start(reg, n, procs, loop)
            await workers.all_acked(1, 120)
            total, first_view, fan_out = [], [], []
            for r in range(rounds):
                version = r + 2
                await asyncio.sleep(settle_s)
                set_weight(reg.config, 80 if r % 2 == 0 else 90)
                saved = now()
                seen, acked = await workers.all_acked(version, 30)
                total.append((max(acked) - saved) * 1000)
                first_view.append((min(seen) - saved) * 1000)
                fan_out.append((max(acked) - min(seen)) * 1000)
            return {
                "clients": n, "rounds": rounds, "procs": procs, "loop": loop,
                "save_to_all_acked_ms": summary(total),
                "save_to_first_view_ms": summary(first_view),
                "first_view_to_all_acked_ms": summary(fan_out),
                "load_ms": load_ms(reg.config),
                "debounce_quiet_ms": 100,
            }
        finally:
            await workers.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=100, help="subscribed clients (100)")
    parser.add_argument("--rounds", type=int, default=20, help="config saves measured (20)")
    parser.add_argument("--also", type=int, default=10,
                        help="a second run with this many clients (10; 0 to skip)")
    parser.add_argument("--procs", type=int, default=4,
                        help="worker processes the clients are spread over (4)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default=default_loop(),
                        help="the workers' event loop (uvloop when installed, as the proxy)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.loop)
        return
    if args.clients < 1 or args.rounds < 1 or args.procs < 1:
        parser.error("--clients, --rounds and --procs must be at least 1")
    runs = [args.clients] + ([args.also] if args.also and args.also != args.clients else [])
    results = [asyncio.run(measure(n, args.rounds, min(args.procs, n), args.loop))
               for n in runs]
    print(json.dumps({"goal": {"clients": 100, "p99_ms": 150}, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
