"""Diagnostics (`file:line:column: field.path: message`) and source positions of resources."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Diagnostic", "Source"]


@dataclass(frozen=True, slots=True, order=True)
class Diagnostic:
    """One thing wrong with the config, where it is and what to do.

    `file` is relative to the config directory; `line` and `column` are 1-based and point at
    the offending key or value; `path` is the field path inside the document
    (`services.orders.ports[0].protocol`, `spec.http[0].route[1].weight`), or "" when the
    problem is the file itself.
    """

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a resource was defined, kept for error messages and `meshctl why`."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"
