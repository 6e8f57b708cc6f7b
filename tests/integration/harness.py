"""Builders for integration tests: a real registry, real proxies and shop apps on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The product's own: below the ephemeral range, so no outgoing connection takes it first.
from meshctl.launch.local import free_port
from tests.example import REPO, SHOP  # noqa: F401 - tests import REPO from here


def wait_until(pred: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exited:
            raise
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Exited(AssertionError):
    """A process a wait depends on has exited: the wait fails at once, with its log."""


def http_get(
    url: str, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


class DidNotStop(AssertionError):
    """A process that must stop on SIGTERM did not within the stop timeout (it was killed)."""


@dataclass
class Proc:
    """A child process in its own session, its output in `log`.

    `must_stop`: SIGTERM must end it within the stop timeout, else stop() kills it and fails
    the test (a registry that ignores SIGTERM is a bug `meshctl down` and systemd would meet).
    """

    argv: list[str]
    env: dict[str, str]
    log: Path
    p: subprocess.Popen[bytes] | None = None
    must_stop: bool = False

    def start(self) -> Proc:
        self.p = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        if self.p and self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
                if self.must_stop and sig != signal.SIGKILL:
                    raise DidNotStop(
                        f"{' '.join(self.argv[1:4])!r} (pid {self.p.pid}) did not stop "
                        f"within {timeout:g} s of {signal.Signals(sig).name}: killed; {self.log}"
                    ) from None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def running(self) -> bool:
        """True while it runs; once it has exited, an AssertionError with its log's end, so
        a wait on it fails at once with the cause instead of at the deadline."""
        if self.p is None or self.p.poll() is None:
            return True
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise Exited(f"{' '.join(self.argv[1:4])!r} exited {self.p.returncode}:\n{tail}")


@dataclass
class Mesh:
    """A registry over a config directory copied into tmp, with helpers to add workloads."""

    tmp: Path
    config_src: Path
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.home = self.tmp / "home"
        self.config = self.tmp / "config"
        if not self.config.exists():
            shutil.copytree(self.config_src, self.config)
        self.port = free_port()
        self.monitor = free_port()
        self.env = {**os.environ, "MESH_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        self.registry: Proc | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def meshctl(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "meshctl", *args]

    def registry_argv(self, *extra: str) -> list[str]:
        return self.meshctl(
            "registry",
            "--config",
            str(self.config),
            "--port",
            str(self.port),
            "--monitor-port",
            str(self.monitor),
            *extra,
        )

    def start_registry(self, *extra: str) -> Proc:
        """Start the registry (extra CLI options appended) and wait until it is ready."""
        self.registry = Proc(
            self.registry_argv(*extra), self.env, self.tmp / "registry.log", must_stop=True
        ).start()
        self.procs.append(self.registry)
        wait_until(
            lambda: self.registry.running()
            and http_get(f"http://127.0.0.1:{self.monitor}/healthz/ready")[0] == 200,
            what="registry ready",
        )
        return self.registry

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        ctx = ssl.create_default_context(cafile=str(self.home / "registry" / "ca" / "ca.crt"))
        token = (self.home / "registry" / "operator.token").read_text().strip()
        req = urllib.request.Request(
            self.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return json.loads(r.read())

    def token(self, service: str) -> Path:
        tok = self.api("POST", "/v1/tokens", {"service": service})["token"]
        path = self.tmp / f"token-{service}-{free_port()}"
        path.write_text(tok)
        return path

    def app(self, service: str, version: str = "v1", *extra: str) -> tuple[Proc, int]:
        port = free_port()
        p = Proc(
            [
                sys.executable,
                str(SHOP),
                "--service",
                service,
                "--version",
                version,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *extra,
            ],
            self.env,
            self.tmp / f"app-{service}-{version}-{port}.log",
        ).start()
        self.procs.append(p)
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, what=f"app {service}"
        )
        return p, port

    def proxy(
        self,
        service: str,
        version: str | None = "v1",
        *,
        app_port: int | None = None,
        service_port: int = 8080,
        upstreams: dict[str, int] | None = None,
        wait: bool = True,
        extra: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        inbound, admin, metrics = free_port(), free_port(), free_port()
        pid = f"{service}-{version}-{inbound}"
        argv = self.meshctl(
            "proxy",
            "--service",
            service,
            "--registry",
            self.url,
            "--token-file",
            str(self.token(service)),
            "--inbound",
            f"127.0.0.1:{inbound}",
            "--admin",
            f"127.0.0.1:{admin}",
            "--metrics",
            f"127.0.0.1:{metrics}",
            "--proxy-id",
            pid,
        )
        if version:
            argv += ["--version", version]
        if app_port:
            argv += ["--app", f"{service_port}=127.0.0.1:{app_port}"]
        for target, local in (upstreams or {}).items():
            argv += ["--upstream", f"{target}={local}"]
        argv += list(extra)
        p = Proc(argv, self.env, self.tmp / f"proxy-{pid}.log").start()
        self.procs.append(p)
        info = {"proc": p, "inbound": inbound, "admin": admin, "metrics": metrics, "id": pid}
        if wait:
            wait_until(
                lambda: p.running() and http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200,
                what=f"proxy {pid} ready",
            )
        return info

    def close(self) -> None:
        """Stop every process, last started first; then fail if one ignored SIGTERM."""
        failed: list[AssertionError] = []
        for p in reversed(self.procs):
            try:
                p.stop()
            except AssertionError as exc:
                failed.append(exc)
        if failed:
            raise failed[0]
