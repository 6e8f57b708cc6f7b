"""The operator's client for the registry API (used by the CLI and the launchers)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.paths import RegistryPaths, read_operator_token


class RegistryUnavailable(Exception):
    """The registry is not running or does not answer; the message says what to do."""


class RegistryError(Exception):
    """The registry answered with an error status; the message is its explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class RegistryClient:
    url: str
    token: str
    ssl_context: ssl.SSLContext
    monitor: str

    @classmethod
    def from_home(cls, home: Path) -> RegistryClient:
        paths = RegistryPaths(home / "registry")
        try:
            ep = json.loads(paths.endpoint.read_text())
        except FileNotFoundError:
            raise RegistryUnavailable(
                f"no registry is running for MESH_HOME={home} (no {paths.endpoint}): start one "
                f"with `meshctl up` or `meshctl registry --config DIR`"
            ) from None
        ctx = ssl.create_default_context(cafile=str(paths.bundle))
        return cls(
            url=ep["url"],
            token=read_operator_token(paths),
            ssl_context=ctx,
            monitor=ep.get("monitor", ""),
        )

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode(errors="replace")
            try:
                msg = json.loads(raw).get("error", raw)
            except ValueError:
                msg = raw.strip()
            raise RegistryError(exc.code, msg) from None
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryUnavailable(
                f"registry at {self.url} does not answer ({exc}); "
                f"is it running? `meshctl status` tells"
            ) from None
