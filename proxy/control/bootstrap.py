"""Before the first join: which registry, which CA to trust for it, which address to advertise.

Runs once, synchronously, before the event loop starts (the standard library's blocking
sockets are enough for three short calls). Each failure is a BootstrapError whose message
names the file or address and says what to do; the proxy prints it and exits 1, and
systemd's Restart= tries again.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from common.state import atomic_write
from registry.ca.joinstring import JoinString, pinned

CONNECT_TIMEOUT_S = 5.0


class BootstrapError(Exception):
    """The proxy cannot find or trust its registry; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Bootstrap:
    registry_url: str
    ca_file: Path
    advertise: str


def registry_url(value: str) -> str:
    """`HOST:PORT` (meaning https, as the rendered units pass it) or an http(s) URL, as a URL.

    ValueError with what was expected otherwise."""
    text = value.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise ValueError(
            f"`{value}` is not a registry address: expected HOST:PORT (https) or "
            "https://HOST:PORT, e.g. 10.0.0.5:15012"
        )
    return text.rstrip("/")


def route_source(url: str) -> str:
    """The local address of the route towards the registry: the one peers can reach us at
    when they reach the registry the same way (`ip route get`'s `src`). A connected UDP
    socket asks the kernel for it without sending a packet."""
    host = urlsplit(url).hostname or "127.0.0.1"
    try:
        infos = socket.getaddrinfo(host, 9, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise BootstrapError(f"cannot resolve the registry's host {host}: {exc}") from None
    for family, kind, proto, _, addr in infos:
        with contextlib.suppress(OSError), socket.socket(family, kind, proto) as s:
            s.connect(addr)
            return str(s.getsockname()[0])
    raise BootstrapError(
        f"no route towards the registry at {host}: give the address peers reach this host "
        "at with --advertise"
    )


def _https_get(url: str, path: str, ctx: ssl.SSLContext) -> bytes:
    import http.client  # only for the first join (its email parser costs the sidecar RSS)

    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(
        parts.hostname or "", parts.port or 443, context=ctx, timeout=CONNECT_TIMEOUT_S
    )
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read(64 * 1024)
    except http.client.HTTPException as exc:  # not an HTTP answer: as a network failure
        raise OSError(f"bad answer to GET {path}: {exc!r}") from None
    finally:
        conn.close()
    if r.status != 200:
        raise OSError(f"HTTP {r.status} for {path}")
    return body


def fetch_pinned_ca(urls: tuple[str, ...], pin: str, dest: Path) -> str:
    """Fetch the registry's CA certificate, check it against `pin`, write it to `dest`
    (0644), and return the URL that answered. The fetch is not verified (there is nothing
    to verify it with yet): the pin is what makes it trusted."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    problems = []
    for url in urls:
        try:
            bundle = _https_get(url, "/v1/ca", ctx).decode("ascii", "replace")
        except OSError as exc:  # ssl.SSLError included
            problems.append(f"{url}: {exc}")
            continue
        cert = pinned(bundle, pin)
        if cert is None:
            raise BootstrapError(
                f"the registry at {url} presented a CA certificate that does not match the "
                f"pin in the join string (sha256 {pin[:16]}...): it is not the registry the "
                "token was made by (another mesh, or someone in between). Create a new "
                "token on the registry host with `meshctl token create`"
            )
        atomic_write(dest, cert, mode=0o644)
        return url
    raise BootstrapError(
        "cannot reach the registry to fetch its CA certificate: " + "; ".join(problems)
    )


def first_reachable(urls: tuple[str, ...]) -> str:
    """The first URL whose host:port accepts a TCP connection, else the first."""
    for url in urls:
        parts = urlsplit(url)
        with contextlib.suppress(OSError, ValueError):
            socket.create_connection(
                (parts.hostname or "", parts.port or 443), timeout=CONNECT_TIMEOUT_S
            ).close()
            return url
    return urls[0]


def bootstrap(
    join: JoinString,
    *,
    registry: str | None,
    ca_file: Path | None,
    default_ca: Path,
    state_dir: Path,
    advertise: str,
) -> Bootstrap:
    """Decide the registry URL, the CA file to trust it with and the advertised address.

    A join string's pin fetches the CA once into `state_dir`; a restart finds it there
    (checked against the pin again) and does not fetch it again."""
    if registry is not None:
        urls: tuple[str, ...] = (registry_url(registry),)
    elif join.registry:
        urls = tuple(registry_url(u) for u in join.registry)
    else:
        raise BootstrapError(
            "no registry address: the join token is a bare `mtok...` token, which does not "
            "carry one. Pass --registry HOST:PORT, or create a join string with "
            "`meshctl token create SERVICE` on the registry host (it carries the address)"
        )
    url = urls[0] if len(urls) == 1 else first_reachable(urls)
    if ca_file is not None:
        if not ca_file.is_file():
            raise BootstrapError(
                f"--ca-file {ca_file} does not exist: copy the registry host's "
                "MESH_HOME/registry/ca/ca.crt there, or leave --ca-file out and join with a "
                "join string from `meshctl token create` (it pins the CA)"
            )
        ca = ca_file
    elif join.ca_sha256 is not None:
        ca = state_dir / "registry-ca.crt"
        if not (ca.is_file() and pinned(ca.read_text(), join.ca_sha256)):
            url = fetch_pinned_ca((url, *(u for u in urls if u != url)), join.ca_sha256, ca)
    else:
        ca = default_ca
        if not ca.is_file():
            raise BootstrapError(
                f"no CA certificate at {ca} to trust the registry with: create a join string "
                "with `meshctl token create SERVICE` on the registry host (it pins the CA, "
                "nothing else to copy), or copy the registry host's "
                "MESH_HOME/registry/ca/ca.crt here and pass --ca-file"
            )
    if advertise == "auto":
        advertise = route_source(url)
    return Bootstrap(registry_url=url, ca_file=ca, advertise=advertise)

