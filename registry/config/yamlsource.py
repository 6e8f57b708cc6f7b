"""Read one config file into YAML nodes with positions, safely.

Nodes, not values: the validators build values themselves so that every error can point at
its line and column and duplicate keys are caught. Limits keep a hostile or broken file from
hurting the registry: files over 1 MiB, nesting deeper than 64 and aliases (the "billion
laughs" YAML bomb multiplies one node through aliases) are refused with a clear error.

Composing (pure-Python PyYAML, for the positions) is most of the time a load takes, and a
change usually touches one file of the directory: the nodes of each file are kept, keyed by
its path and its exact bytes, and reused while the bytes are the same (see _ComposeCache).
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent
from yaml.nodes import Node

from registry.config.diagnostics import Diagnostic

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "ParsedFile", "read_yaml_file"]

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class ParsedFile:
    name: str  # relative to the config directory
    raw: bytes  # for the snapshot digest
    documents: tuple[Node, ...]  # empty documents dropped


class _LimitError(ComposerError):
    """A limit of ours (aliases, depth), reported without the "syntax error" prefix."""


class _Loader(yaml.SafeLoader):
    """SafeLoader's composer with aliases refused and nesting bounded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise _LimitError(
                None,
                None,
                "YAML aliases (*name) are not supported: write the value out in full",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitError(
                    None,
                    None,
                    f"nesting is deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            node: Node | None = super().compose_node(parent, index)  # type: ignore[arg-type]
            return node
        finally:
            self._depth -= 1


def _file_error(name: str, message: str, line: int = 1, column: int = 1) -> Diagnostic:
    return Diagnostic(name, line, column, "", message)


def _read_bytes(path: Path, name: str) -> bytes | Diagnostic:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not _is_regular(st.st_mode):
                return _file_error(name, "not a regular file")
            if st.st_size > MAX_FILE_BYTES:
                return _file_error(name, f"file is larger than 1 MiB ({st.st_size} bytes)")
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return _file_error(name, "file disappeared while being read (or is a broken symlink)")
    except IsADirectoryError:
        return _file_error(name, "is a directory, not a file")
    except PermissionError:
        return _file_error(name, "permission denied: the registry cannot read this file")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return _file_error(name, "symlink loop: the link points back at itself")
        return _file_error(name, f"cannot read file: {exc.strerror or exc}")
    if len(data) > MAX_FILE_BYTES:
        return _file_error(name, "file is larger than 1 MiB")
    return data


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _decode(data: bytes, name: str) -> str | Diagnostic:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return _file_error(name, "not UTF-8 text (is this a binary file?)", line, column)
    if "\x00" in text:
        offset = text.index("\x00")
        line = text.count("\n", 0, offset) + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        return _file_error(name, "contains a NUL byte (is this a binary file?)", line, column)
    return text


def _compose(text: str, name: str) -> tuple[Node, ...] | Diagnostic:
    docs: list[Node] = []
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader checks for unprintable characters right here
        while loader.check_node():
            node = loader.get_node()
            if node is not None and not (
                node.tag == "tag:yaml.org,2002:null" and node.value in ("", "~", "null")
            ):
                docs.append(node)
    except _LimitError as exc:
        mark = exc.problem_mark
        assert mark is not None
        return _file_error(name, str(exc.problem), mark.line + 1, mark.column + 1)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{problem} ({exc.context})"
        if mark is None:
            return _file_error(name, f"YAML syntax error: {problem}")
        return _file_error(name, f"YAML syntax error: {problem}", mark.line + 1, mark.column + 1)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        return _file_error(
            name, f"unacceptable character #x{exc.character:04x} in YAML", line, column
        )
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        return _file_error(name, f"YAML syntax error: {exc}")
    finally:
        if loader is not None:
            loader.dispose()
    return tuple(docs)


class _ComposeCache:
    """The composed documents of recently read files, by path, valid for exact bytes only.

    The file is read in full every time and its bytes compared with the cached ones, so a
    hit can never be stale: no mtime, size or inode shortcut (a save within the same
    second, of the same size, is still seen). The validators only read nodes, never change
    them, so sharing them between loads is safe. Only clean compositions are kept (a broken
    file is composed again, for its diagnostic), and only so many files and bytes: nodes
    take about 60 times the bytes of their source, so 1 MiB of YAML is some 60 MB held.
    """

    MAX_FILES = 256
    MAX_BYTES = 1024 * 1024

    def __init__(self) -> None:
        self._entries: OrderedDict[Path, tuple[bytes, tuple[Node, ...]]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: Path, data: bytes) -> tuple[Node, ...] | None:
        with self._lock:
            hit = self._entries.get(path)
            if hit is None or hit[0] != data:
                return None
            self._entries.move_to_end(path)
            return hit[1]

    def put(self, path: Path, data: bytes, docs: tuple[Node, ...]) -> None:
        with self._lock:
            old = self._entries.pop(path, None)
            if old is not None:
                self._bytes -= len(old[0])
            self._entries[path] = (data, docs)
            self._bytes += len(data)
            while len(self._entries) > self.MAX_FILES or self._bytes > self.MAX_BYTES:
                self._bytes -= len(self._entries.popitem(last=False)[1][0])

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


_COMPOSED = _ComposeCache()


def read_yaml_file(path: Path, name: str) -> ParsedFile | Diagnostic:
    """Read and compose `path`; a Diagnostic (never an exception) when it cannot be used."""
    data = _read_bytes(path, name)
    if isinstance(data, Diagnostic):
        return data
    key = path.absolute()
    docs = _COMPOSED.get(key, data)
    if docs is None:
        text = _decode(data, name)
        if isinstance(text, Diagnostic):
            return text
        composed = _compose(text, name)
        if isinstance(composed, Diagnostic):
            return composed
        docs = composed
        _COMPOSED.put(key, data, docs)
    return ParsedFile(name=name, raw=data, documents=docs)
