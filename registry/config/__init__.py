"""Config: the files are the source of truth.

    config dir/ mesh.yaml + *.yaml  ->  yamlsource (nodes with positions, bounded)
        -> mesh_file (services)  -> virtual_service / destination_rule / security
        -> loader (cross-references, duplicates)  ->  MeshConfig (frozen snapshot)

`load_directory(dir)` reads the whole directory and returns a `LoadResult`: a `MeshConfig`
when everything is valid, else every error as `file:line:column: field.path: message`.
It never raises for bad input. The snapshot travels to proxies as `to_wire()` JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.config.diagnostics import Diagnostic, Source
from registry.config.duration import parse_duration
from registry.config.model import (
    AuthorizationPolicy,
    DestinationRule,
    MeshConfig,
    PeerAuthentication,
    Port,
    RateLimit,
    Service,
    VirtualService,
    Workload,
)
from registry.lazy import lazy_attributes

if TYPE_CHECKING:
    from registry.config.loader import LoadResult, load_directory
    from registry.config.summary import summary_lines

# The loader (and PyYAML under it) is imported on first use: a proxy only needs the model,
# and a sidecar would otherwise carry the YAML parser in its RSS for nothing.
_LAZY = {
    "LoadResult": "registry.config.loader",
    "load_directory": "registry.config.loader",
    "summary_lines": "registry.config.summary",
}


__getattr__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "AuthorizationPolicy",
    "DestinationRule",
    "Diagnostic",
    "LoadResult",
    "MeshConfig",
    "PeerAuthentication",
    "Port",
    "RateLimit",
    "Service",
    "Source",
    "VirtualService",
    "Workload",
    "load_directory",
    "parse_duration",
    "summary_lines",
]
