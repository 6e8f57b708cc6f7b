"""Where the proxies of this host are: their admin and metrics listeners.

Each proxy writes MESH_HOME/proxies/<id>/admin.json when it is ready and removes it when it
stops (`proxy/main.py`). A file whose process is gone is skipped. A proxy on another host
has a `relay` instead: its pages and its tap are read through the registry
(meshctl.observe.remote, registry/server/relay.py; docs/multi-host.md).
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

TIMEOUT_S = 5.0
REPLY_GRACE_S = 11.0  # the registry waits up to 10 s for a relayed page


class Relay(Protocol):
    """Reads a page of a proxy on another host, through the registry (meshctl's
    RegistryRelay: the operator's registry client); raises ObserveError when it cannot."""

    def page(self, proxy_id: str, path: str, timeout: float) -> str: ...

    def stream(self, proxy_id: str, path: str, timeout: float
               ) -> AbstractContextManager[IO[bytes]]: ...


class ObserveError(Exception):
    """Something the user can fix (nothing running, no such service); the message says what."""


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    proxy_id: str
    service: str
    version: str | None
    admin: str  # host:port
    metrics: str  # host:port
    pid: int | None = None
    netns: str | None = None  # transparent mode: the admin listener is this namespace's own
    # A proxy on another host: its pages are read through the registry (relay.py), with
    # the operator credential of this client.
    relay: Relay | None = None

    def admin_json(self, path: str, timeout: float = TIMEOUT_S) -> Any:
        if self.relay is not None:
            return json.loads(self._relayed(path, timeout))
        return get_json(self.admin_url + path, timeout, self.netns)

    def _relayed(self, path: str, timeout: float) -> str:
        assert self.relay is not None
        return self.relay.page(self.proxy_id, path, timeout + REPLY_GRACE_S)

    def admin_stream(self, path: str, timeout: float = 30.0) -> Any:
        if self.relay is not None:
            return self.relay.stream(self.proxy_id, path, timeout)
        return stream(self.admin_url + path, timeout, self.netns)

    def metrics_text(self, timeout: float = TIMEOUT_S) -> str:
        # Metrics listen on the workload's address too (0.0.0.0 in transparent mode), so
        # `stat` needs no namespace entry and no root.
        if self.relay is not None:
            return self._relayed("/metrics", timeout)
        return get_text(self.metrics_url, timeout)

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics}/metrics"

    @property
    def workload(self) -> str:
        return f"{self.service}-{self.version}" if self.version else self.service


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True  # cannot tell: try it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_proxies(home: Path) -> list[ProxyInfo]:
    """Every live proxy that wrote its admin.json under `home`, sorted by id."""
    found = []
    for f in sorted((home / "proxies").glob("*/admin.json")):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not _alive(d.get("pid")):
            continue
        found.append(
            ProxyInfo(
                proxy_id=str(d["proxy_id"]),
                service=str(d["service"]),
                version=d.get("version"),
                admin=str(d["admin"]),
                metrics=str(d["metrics"]),
                pid=d.get("pid"),
                netns=d.get("netns") or None,
            )
        )
    return found


def select(home: Path, service: str | None = None, admin: str | None = None,
           remote: list[ProxyInfo] | None = None) -> list[ProxyInfo]:
    """The proxies to look at: `admin` (HOST:PORT) overrides discovery; `remote`: every
    proxy of the mesh, on any host, as its registry listed them (meshctl's
    remote_proxies); else this host's. Of `service` (all when None). Raises ObserveError
    with what to do when there are none."""
    if admin:
        return [ProxyInfo(admin, service or "?", None, admin, admin)]
    proxies = remote if remote is not None else local_proxies(home)
    if not proxies:
        raise ObserveError(
            f"no running proxy found under MESH_HOME={home} (proxies/*/admin.json): start the "
            "mesh with `meshctl up`, or point at one proxy with --admin HOST:PORT"
        )
    if service is None:
        return proxies
    mine = [p for p in proxies if p.service == service or p.proxy_id == service]
    if not mine:
        known = ", ".join(sorted({p.service for p in proxies}))
        raise ObserveError(f"no running proxy for service `{service}` (running: {known})")
    return mine


def _split(url: str) -> tuple[str, int, str]:
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return parts.hostname or "127.0.0.1", parts.port or 80, path or "/"


def _socket_in_netns(netns: str, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection made from inside network namespace `netns` (as `ip netns exec` would).

    setns(2) moves only the calling thread, so a short-lived thread enters the namespace,
    connects and leaves; the socket stays in the namespace it was made in. Needs root."""
    got: dict[str, Any] = {}

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            with open(f"/run/netns/{netns}") as target:
                if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {netns}: {os.strerror(err)} (needs root)")
                got["sock"] = socket.create_connection((host, port), timeout)
        except OSError as exc:
            got["error"] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join()
    if "error" in got:
        raise got["error"]
    sock: socket.socket = got["sock"]
    return sock


_CLONE_NEWNET = 0x40000000


def _open(url: str, timeout: float, netns: str | None = None) -> Any:
    """GET `url`; from inside `netns` when the listener is a namespace's own localhost."""
    if netns is None or _in_netns(netns):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return opener.open(url, timeout=timeout)
    host, port, path = _split(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.sock = _socket_in_netns(netns, host, port, timeout)
    conn.request("GET", path)
    resp = conn.getresponse()
    if resp.status >= 400:
        raise urllib.error.HTTPError(url, resp.status, resp.reason, resp.headers, resp)
    return resp


def _in_netns(netns: str) -> bool:
    try:
        a, b = os.stat("/proc/thread-self/ns/net"), os.stat(f"/run/netns/{netns}")
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def get_text(url: str, timeout: float = TIMEOUT_S, netns: str | None = None) -> str:
    try:
        with _open(url, timeout, netns) as r:
            return str(r.read().decode())
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise ObserveError(f"{url} does not answer ({exc}): is the proxy running?") from None


def get_json(url: str, timeout: float = TIMEOUT_S, netns: str | None = None) -> Any:
    try:
        with _open(url, timeout, netns) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"null")
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        where = f" in network namespace {netns}" if netns else ""
        raise ObserveError(f"{url}{where} does not answer ({exc}): is the proxy running?") from None


@contextmanager
def stream(url: str, timeout: float = 30.0, netns: str | None = None) -> Iterator[IO[bytes]]:
    """An open streaming response (NDJSON lines); closed on exit."""
    try:
        r = _open(url, timeout, netns)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        where = f" in network namespace {netns}" if netns else ""
        raise ObserveError(f"{url}{where} does not answer ({exc}): is the proxy running?") from None
    try:
        yield r
    finally:
        r.close()
