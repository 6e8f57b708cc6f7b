"""Where the proxies of this host are: their admin and metrics listeners.

Each proxy writes MESH_HOME/proxies/<id>/admin.json when it is ready and removes it when it
stops (`proxy/main.py`). A file whose process is gone is skipped. The registry's endpoint
record has no field for these listeners yet; once it has, remote proxies can be found the
same way (see docs/observability.md).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

TIMEOUT_S = 5.0


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
            )
        )
    return found


def select(home: Path, service: str | None = None, admin: str | None = None) -> list[ProxyInfo]:
    """The proxies to look at: `admin` (HOST:PORT) overrides discovery; else those of
    `service` (all when None). Raises ObserveError with what to do when there are none."""
    if admin:
        return [ProxyInfo(admin, service or "?", None, admin, admin)]
    proxies = local_proxies(home)
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


def _open(url: str, timeout: float) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(url, timeout=timeout)


def get_text(url: str, timeout: float = TIMEOUT_S) -> str:
    try:
        with _open(url, timeout) as r:
            return str(r.read().decode())
    except (urllib.error.URLError, OSError) as exc:
        raise ObserveError(f"{url} does not answer ({exc}): is the proxy running?") from None


def get_json(url: str, timeout: float = TIMEOUT_S) -> Any:
    try:
        with _open(url, timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"null")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ObserveError(f"{url} does not answer ({exc}): is the proxy running?") from None


@contextmanager
def stream(url: str, timeout: float = 30.0) -> Iterator[IO[bytes]]:
    """An open streaming response (NDJSON lines); closed on exit."""
    try:
        r = _open(url, timeout)
    except (urllib.error.URLError, OSError) as exc:
        raise ObserveError(f"{url} does not answer ({exc}): is the proxy running?") from None
    try:
        yield r
    finally:
        r.close()
