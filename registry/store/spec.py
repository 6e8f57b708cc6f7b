"""`--store`: which state store the registry uses, parsed and checked before anything runs."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PREFIX = "/meshctl"
_HOST_PORT = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})")
_PREFIX = re.compile(r"(/[A-Za-z0-9._-]+)+")
_FORMS = (
    "etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (plain HTTP) or etcds://... (TLS, with "
    "--store-ca, --store-cert/--store-key or ?ca=&cert=&key=)"
)


class StoreError(ValueError):
    """`--store` (or its TLS options) is wrong; the message says what and how to write it."""


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """An etcd cluster to keep the registry's shared state in."""

    endpoints: tuple[str, ...]  # base URLs, http://host:port or https://host:port
    prefix: str  # every key the registry writes starts with it (several meshes, one etcd)
    ca: Path | None = None  # trust these CAs for etcd's server certificates (else the system's)
    cert: Path | None = None  # client certificate and key, for etcd's --client-cert-auth
    key: Path | None = None

    @property
    def tls(self) -> bool:
        return self.endpoints[0].startswith("https://")

    def display(self) -> str:
        """The store as `status` shows it: scheme, endpoints, prefix (no file paths)."""
        scheme = "etcds" if self.tls else "etcd"
        hosts = ",".join(e.split("://", 1)[1] for e in self.endpoints)
        return f"{scheme}://{hosts}{self.prefix}"


def parse_store(
    value: str,
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> StoreSpec:
    """Check `--store VALUE` and its TLS files; raise StoreError saying what is wrong."""
    if not value and (ca or cert or key):
        raise StoreError("--store-ca, --store-cert and --store-key are for --store etcds://...: "
                         "give --store too")
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("etcd", "etcds"):
        raise StoreError(f"--store {value!r}: unknown store; expected {_FORMS}")
    rest, _, query = rest.partition("?")
    hosts, slash, path = rest.partition("/")
    prefix = "/" + path.rstrip("/") if slash and path.strip("/") else DEFAULT_PREFIX
    if not _PREFIX.fullmatch(prefix):
        raise StoreError(
            f"--store {value!r}: key prefix {prefix!r} may hold only letters, digits, "
            "'.', '_', '-' and '/' separators"
        )
    endpoints = []
    for item in hosts.split(","):
        m = _HOST_PORT.fullmatch(item.strip())
        if m is None or not 0 < int(m.group(2)) < 65536:
            raise StoreError(
                f"--store {value!r}: {item.strip() or 'an empty endpoint'!r} is not HOST:PORT "
                f"(etcd's client port is usually 2379); expected {_FORMS}"
            )
        host = m.group(1)
        if host.startswith("["):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise StoreError(f"--store {value!r}: {host} is not an IPv6 address") from None
        endpoints.append(f"{'https' if scheme == 'etcds' else 'http'}://{host}:{int(m.group(2))}")
    params = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(params) - {"ca", "cert", "key"})
    if unknown:
        raise StoreError(
            f"--store {value!r}: unknown parameter {unknown[0]!r} (known: ca, cert, key)"
        )
    files: dict[str, Path | None] = {"ca": ca, "cert": cert, "key": key}
    for name in ("ca", "cert", "key"):
        if name in params:
            if files[name] is not None:
                raise StoreError(
                    f"--store {value!r}: {name} given twice (in the URL and as --store-{name})"
                )
            files[name] = Path(params[name][-1])
    if scheme == "etcd" and any(files.values()):
        raise StoreError(
            f"--store {value!r}: a CA or client certificate needs TLS: write etcds://..."
        )
    if (files["cert"] is None) != (files["key"] is None):
        raise StoreError(
            "--store: a client certificate needs both --store-cert and --store-key "
            "(or ?cert= and ?key=)"
        )
    for name, file in files.items():
        if file is not None and not file.is_file():
            raise StoreError(f"--store-{name} {file}: no such file")
    return StoreSpec(tuple(endpoints), prefix, files["ca"], files["cert"], files["key"])
