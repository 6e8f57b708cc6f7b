"""`route set-weight` as one call: plan, edit the VirtualService's file in place, check, write.

Used by the CLI on the registry's host and by the registry's API (`POST /v1/routes/...`)
for an operator on another host: the file lives where the registry watches it, so the edit
happens there, comments and layout kept (registry.config.edit), and the watcher publishes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshctl.state import atomic_write
from registry.config import MeshConfig, load_directory
from registry.config.edit import (
    EditError,
    WeightPlan,
    check_in_copy,
    plan_weights,
    set_weights,
    unified_diff,
    verify_weights,
)


@dataclass(frozen=True, slots=True)
class WeightChange:
    plan: WeightPlan
    path: Path
    old: str
    new: str

    @property
    def changed(self) -> bool:
        return self.new != self.old

    def to_wire(self, *, dry_run: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "service": self.plan.service, "file": str(self.path),
            "virtual_service": self.plan.virtual_service.name, "route": self.plan.label,
            "old": dict(self.plan.old), "new": dict(self.plan.new),
            "changed": self.changed, "dry_run": dry_run}  # fmt: skip
        if dry_run:
            data["diff"] = unified_diff(self.plan.file, self.old, self.new)
        return data


def apply_weights(directory: Path, service: str, wanted: dict[str, int], route: str | None,
                  *, dry_run: bool) -> WeightChange:
    """Set `service`'s split to `wanted` in its VirtualService's file (unless `dry_run`).
    EditError says what is wrong; nothing is written then."""
    try:
        plan = plan_weights(load_valid(directory), service, wanted, route)
        path = directory / plan.file
        raw = read_file(path)
        old = raw.decode("utf-8")
        new = set_weights(old, plan)
        if new != old:
            verify_weights(check_in_copy(directory, plan.file, new), plan)
            if not dry_run:
                _write(path, raw, new)
    except (OSError, UnicodeDecodeError) as exc:
        raise EditError(f"{exc}; nothing was written") from None
    return WeightChange(plan, path, old, new)


def load_valid(directory: Path) -> MeshConfig:
    result = load_directory(directory)
    if result.config is None or result.errors:
        first = str(result.errors[0]) if result.errors else "no snapshot"
        raise EditError(f"the config in {directory} is invalid ({len(result.errors)} "
                        f"error(s), first: {first}): fix it first (meshctl validate {directory})")
    return result.config


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EditError(f"cannot read {path}: {exc.strerror or exc}") from None


def _write(path: Path, raw: bytes, text: str) -> None:
    """Replace the file (its target, if a symlink) atomically, keeping mode and owner."""
    real = path.resolve()
    st = real.stat()
    if real.read_bytes() != raw:
        raise EditError(f"{path} changed while it was being edited: run the command again")
    try:
        atomic_write(real, text.encode("utf-8"), mode=stat.S_IMODE(st.st_mode))
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
            os.chown(real, st.st_uid, st.st_gid)
    except PermissionError:
        raise EditError(f"cannot write {path}: permission denied (run as the file's owner, "
                        "or with sudo); nothing was written") from None
