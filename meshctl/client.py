"""The operator's client for the registry API (used by the CLI and the launchers).

Which registry, and as whom (`RegistryClient.resolve`), in this order:
- `--registry URL` / `MESH_REGISTRY` with `--operator-token-file FILE` /
  `MESH_OPERATOR_TOKEN_FILE`: any host. FILE is what `meshctl token operator` printed on
  the registry's host: the operator token, the registry's URLs and its CA pin, so the CA is
  fetched and checked against the pin as a joining proxy does (nothing else to copy);
- the registry of this MESH_HOME (`registry/endpoint.json`, `registry/operator.token`);
- a host that `meshctl up --join` joined (`joined.json`): read-only, as one of its
  proxies (its SVID as client certificate): status, check, why; the operator's commands
  say to pass the operator credential.
"""

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
    joined: bool = False  # a joined host's proxy identity, not the operator

    @classmethod
    def resolve(cls, home: Path, registry: str | None = None,
                operator_file: Path | None = None) -> RegistryClient:
        """The registry to talk to and the credential; see the module docstring."""
        if operator_file is not None:
            return cls.remote(home, operator_file, registry)
        if registry is not None:
            raise RegistryUnavailable(
                f"--registry {registry} needs the operator credential: pass "
                "--operator-token-file FILE (or set MESH_OPERATOR_TOKEN_FILE), FILE made "
                "with `meshctl token operator > FILE` on the registry's host"
            )
        try:
            return cls.from_home(home)
        except RegistryUnavailable:
            joined = read_joined(home)
            if joined is None:
                raise
            return cls.as_joined_proxy(home, joined)

    @classmethod
    def remote(cls, home: Path, operator_file: Path, registry: str | None) -> RegistryClient:
        from proxy.control.bootstrap import BootstrapError, fetch_pinned_ca, registry_url
        from registry.ca.joinstring import JoinStringError, parse, pinned

        try:
            if operator_file.stat().st_mode & 0o077:
                raise RegistryUnavailable(
                    f"{operator_file} is readable by others than its owner: it is the mesh's "
                    f"operator credential. `chmod 600 {operator_file}` if nobody else could "
                    "have read it, else make a new one on the registry's host"
                )
            cred = parse(operator_file.read_text())
        except OSError as exc:
            raise RegistryUnavailable(
                f"cannot read the operator credential {operator_file}: {exc.strerror or exc}"
            ) from None
        except JoinStringError as exc:
            raise RegistryUnavailable(f"{operator_file}: {exc}") from None
        if cred.ca_sha256 is None:
            raise RegistryUnavailable(
                f"{operator_file} holds a bare token, without the registry's CA pin: make the "
                "file with `meshctl token operator > FILE` on the registry's host"
            )
        try:
            urls = (registry_url(registry),) if registry else cred.registry
            ca = home / "remote" / f"ca-{cred.ca_sha256[:16]}.crt"
            if not (ca.is_file() and pinned(ca.read_text(), cred.ca_sha256)):
                from common.state import ensure_dir

                ensure_dir(ca.parent)
                urls = (fetch_pinned_ca(urls, cred.ca_sha256, ca),)
        except (ValueError, BootstrapError) as exc:
            raise RegistryUnavailable(str(exc)) from None
        ctx = ssl.create_default_context(cafile=str(ca))
        return cls(url=urls[0], token=cred.token, ssl_context=ctx, monitor="")

    @classmethod
    def as_joined_proxy(cls, home: Path, joined: dict[str, Any]) -> RegistryClient:
        """A joined host's client: one of its proxies' SVIDs (mTLS), the pinned CA."""
        ca = home / "joined" / "ca.crt"
        for tls in sorted((home / "proxies").glob("*/tls")):
            cert, key = tls / "svid.crt", tls / "svid.key"
            if cert.is_file() and key.is_file():
                ctx = ssl.create_default_context(cafile=str(ca))
                ctx.load_cert_chain(str(cert), str(key))
                return cls(url=str(joined["url"]), token="", ssl_context=ctx, monitor="",
                           joined=True)
        raise RegistryUnavailable(
            f"this host joined the mesh of {joined['url']} but none of its proxies has an "
            "identity yet (still joining?): see `meshctl up` output and MESH_HOME/logs"
        )

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
        return json.loads(self._exchange(method, path, body, timeout) or b"null")

    def text(self, path: str, timeout: float = 10.0) -> str:
        """GET `path`, its body as text (a relayed admin or metrics page)."""
        return self._exchange("GET", path, None, timeout).decode("utf-8", "replace")

    def _exchange(
        self, method: str, path: str, body: dict[str, Any] | None, timeout: float
    ) -> bytes:
        with self.open(path, timeout, method, body) as resp:
            try:
                return bytes(resp.read())
            except OSError as exc:
                raise self._unavailable(exc) from None

    def open(self, path: str, timeout: float = 10.0, method: str = "GET",
             body: dict[str, Any] | None = None) -> Any:
        """The response, open: read it as it comes (a relayed tap's NDJSON lines); close it
        when done. Raises RegistryError for an error status, RegistryUnavailable."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {self.token}"} if self.token else {})},
        )
        try:
            return urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context)
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode(errors="replace")
            try:
                msg = json.loads(raw).get("error", raw)
            except ValueError:
                msg = raw.strip()
            if self.joined and exc.code == 403:
                msg = (f"{msg.strip()} (this host is joined to {self.url} as a workload; "
                       "operator commands need --operator-token-file FILE, made with "
                       "`meshctl token operator` on the registry's host)")
            raise RegistryError(exc.code, msg) from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: Exception) -> RegistryUnavailable:
        return RegistryUnavailable(f"registry at {self.url} does not answer ({exc}); "
                                   "is it running? `meshctl status` tells")


def read_joined(home: Path) -> dict[str, Any] | None:
    """What `meshctl up --join` recorded (registry URL, CA pin, when), or None."""
    try:
        data = json.loads((home / "joined.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("url"), str) else None
