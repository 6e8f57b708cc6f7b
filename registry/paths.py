"""Where the registry keeps its state, importable without the server (the CLI reads it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# istiod serves proxies on 15012 and its monitoring on 15014: we keep the numbers.
DEFAULT_PORT = 15012
DEFAULT_MONITOR_PORT = 15014


@dataclass(frozen=True, slots=True)
class RegistryPaths:
    """Where the registry keeps its state under MESH_HOME/registry (0700, files 0600)."""

    root: Path

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens.json"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.json"

    @property
    def snapshot(self) -> Path:
        return self.root / "snapshot.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def operator_token(self) -> Path:
        return self.root / "operator.token"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def endpoint(self) -> Path:
        """Where a running registry says how to reach it (read by the CLI and launchers)."""
        return self.root / "endpoint.json"

    @property
    def bundle(self) -> Path:
        return self.ca_dir / "ca.crt"


def read_operator_token(paths: RegistryPaths) -> str:
    return paths.operator_token.read_text().strip()
