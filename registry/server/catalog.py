"""The catalog: every service's endpoints, fed by launchers and proxies, expired by TTL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from common.state import atomic_write

# A proxy heartbeats every HEARTBEAT_S; an endpoint unseen for ENDPOINT_TTL_S leaves the
# catalog (three missed heartbeats, as Consul's TTL checks are usually set).
HEARTBEAT_S = 10.0
ENDPOINT_TTL_S = 30.0
HEALTH_STATES = ("healthy", "unhealthy", "draining")
REASON_MAX = 500  # characters of a health reason kept


def clean_reason(text: str) -> str:
    """A proxy's words, bounded and printable: `meshctl status` shows them on an operator's
    terminal, where a control character (an ANSI escape) must not arrive."""
    return "".join(c if c.isprintable() else "?" for c in text[:REASON_MAX])


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance of a service: where its proxy listens for mTLS and what it is labelled."""

    id: str
    service: str
    address: str
    inbound_port: int
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    identity: str = ""
    health: str = "healthy"
    last_seen: float = 0.0
    reason: str = ""  # why it is not healthy, e.g. "app: connect refused on 127.0.0.1:8080"
    registered_at: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "address": self.address,
            "inbound_port": self.inbound_port,
            "labels": dict(self.labels),
            "identity": self.identity,
            "health": self.health,
            "reason": self.reason,
            "last_seen": self.last_seen,
            "registered_at": self.registered_at,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Endpoint:
        return cls(
            id=str(d["id"]),
            service=str(d["service"]),
            address=str(d["address"]),
            inbound_port=int(d["inbound_port"]),
            labels=MappingProxyType({str(k): str(v) for k, v in dict(d.get("labels", {})).items()}),
            identity=str(d.get("identity", "")),
            health=str(d.get("health", "healthy")),
            reason=clean_reason(str(d.get("reason", ""))),
            last_seen=float(d.get("last_seen", 0.0)),
            registered_at=float(d.get("registered_at", 0.0)),
        )


class Catalog:
    """Endpoints by id, with a version that moves on every change a proxy must see."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._endpoints: dict[str, Endpoint] = {}
        self.version = 0
        self._wire: bytes | None = None
        self._listeners: list[Callable[[], None]] = []
        if path is not None and path.exists():
            self._load(path)

    def on_change(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def _load(self, path: Path) -> None:
        raw = json.loads(path.read_text())
        now = self._clock()
        for d in raw.get("endpoints", []):
            # After a registry restart every endpoint gets a fresh TTL: its proxy has one
            # heartbeat period to show it is still there before it expires.
            ep = replace(Endpoint.from_wire(d), last_seen=now)
            self._endpoints[ep.id] = ep
        self.version = int(raw.get("version", 0))

    def _changed(self) -> None:
        self.version += 1
        self._wire = None
        if self._path is not None:
            body = {
                "version": self.version,
                "endpoints": [e.to_wire() for e in self._endpoints.values()],
            }
            atomic_write(self._path, json.dumps(body, indent=1, sort_keys=True), mode=0o600)
        for fn in self._listeners:
            fn()

    def endpoints(self, service: str | None = None) -> list[Endpoint]:
        eps = sorted(self._endpoints.values(), key=lambda e: (e.service, e.id))
        return [e for e in eps if service is None or e.service == service]

    def get(self, endpoint_id: str) -> Endpoint | None:
        return self._endpoints.get(endpoint_id)

    def register(self, ep: Endpoint) -> Endpoint:
        """Add or replace an endpoint; re-registering unchanged does not bump the version."""
        now = self._clock()
        old = self._endpoints.get(ep.id)
        ep = replace(ep, last_seen=now, registered_at=old.registered_at if old else now)
        self._endpoints[ep.id] = ep
        if old is None or replace(old, last_seen=0.0) != replace(ep, last_seen=0.0):
            self._changed()
        return ep

    def heartbeat(
        self, endpoint_id: str, health: str | None = None, reason: str | None = None
    ) -> Endpoint | None:
        """Keep an endpoint alive; a `health` given replaces the health and its reason."""
        old = self._endpoints.get(endpoint_id)
        if old is None:
            return None
        ep = replace(old, last_seen=self._clock())
        if health:
            why = "" if health == "healthy" else clean_reason(reason or "")
            ep = replace(ep, health=health, reason=why)
        self._endpoints[endpoint_id] = ep
        if (ep.health, ep.reason) != (old.health, old.reason):
            self._changed()
        return ep

    def deregister(self, endpoint_id: str) -> bool:
        if self._endpoints.pop(endpoint_id, None) is None:
            return False
        self._changed()
        return True

    def expire(self, ttl_s: float = ENDPOINT_TTL_S) -> list[str]:
        """Drop endpoints not seen for `ttl_s`; returns their ids."""
        cutoff = self._clock() - ttl_s
        gone = [i for i, e in self._endpoints.items() if e.last_seen < cutoff]
        for i in gone:
            del self._endpoints[i]
        if gone:
            self._changed()
        return gone

    def wire(self) -> bytes:
        """The endpoints as proxies receive them, rendered once per catalog version."""
        if self._wire is None:
            self._wire = json.dumps(
                [e.to_wire() for e in self.endpoints()], separators=(",", ":"), sort_keys=True
            ).encode()
        return self._wire
