"""What every resource is checked against: the mesh's namespace and services, and the
references (host subsets) that can only be checked once every file has been read."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from yaml.nodes import Node

from registry.config.model import Service
from registry.config.reader import Cx, as_str

__all__ = ["Scope", "SubsetRef"]


@dataclass(frozen=True, slots=True)
class SubsetRef:
    cx: Cx
    node: Node
    path: str
    service: str
    subset: str


@dataclass(slots=True)
class Scope:
    namespace: str
    # None when mesh.yaml could not be read: host references are then not checked.
    services: dict[str, Service] | None
    subset_refs: list[SubsetRef] = field(default_factory=list)

    def host(self, cx: Cx, node: Node, path: str) -> str | None:
        """A host as Istio writes it (`orders`, `orders.<ns>`, `orders.<ns>.svc.cluster.local`)
        normalised to the service name; an error when it names no service of the mesh."""
        host = as_str(cx, node, path)
        if host is None:
            return None
        if "*" in host:
            cx.error(node, path, f"wildcard host `{host}` is not supported yet: name a service")
            return None
        name, _, rest = host.lower().partition(".")
        ns = self.namespace
        if rest and rest not in (ns, f"{ns}.svc", f"{ns}.svc.cluster.local"):
            other = rest.split(".")[0]
            if rest.endswith(("svc.cluster.local", ".svc")) or "." not in rest:
                msg = (f"host `{host}` is in namespace `{other}`; every service of this mesh "
                       f"is in namespace `{ns}`")
            else:
                msg = (f"host `{host}` is not a mesh service: write `{name}`, `{name}.{ns}` or "
                       f"`{name}.{ns}.svc.cluster.local` (external hosts are not supported yet)")
            cx.error(node, path, msg)
            return None
        if self.services is not None and name not in self.services:
            close = difflib.get_close_matches(name, list(self.services), n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            known = ", ".join(sorted(self.services)) or "none"
            cx.error(node, path, f"unknown service `{host}`{hint}; mesh.yaml defines: {known}")
            return None
        return name

    def port_of(self, cx: Cx, node: Node, path: str, service: str, port: int) -> None:
        svc = (self.services or {}).get(service)
        if svc is not None and svc.port(port) is None:
            ports = ", ".join(str(p.port) for p in svc.ports)
            cx.error(node, path, f"service `{service}` has no port {port} (its ports: {ports})")
