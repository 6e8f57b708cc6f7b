"""A tiny Prometheus text-format writer (exposition format 0.0.4) shared by every process."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels_text(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items()) + "}"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class MetricWriter:
    """Collects families in order and renders them once: HELP, TYPE, then samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[str, Mapping[str, str], float]],
    ) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            self._lines.append(f"{name}{suffix}{labels_text(labels)} {_num(value)}")

    def gauge(
        self, name: str, help_text: str, value: float, labels: Mapping[str, str] | None = None
    ) -> None:
        self.family(name, "gauge", help_text, [("", labels or {}, value)])

    def counter(
        self, name: str, help_text: str, value: float, labels: Mapping[str, str] | None = None
    ) -> None:
        self.family(name, "counter", help_text, [("", labels or {}, value)])

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
