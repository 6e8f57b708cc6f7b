"""Names of a package imported on first use (PEP 562 module __getattr__)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, table: dict[str, str], namespace: dict[str, Any]
                    ) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `table[name]` (a module path) on first use and
    keeps the value in `namespace` (the package's globals), so it is looked up once."""

    def getattr_(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return getattr_
