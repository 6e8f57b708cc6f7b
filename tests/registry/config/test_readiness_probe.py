"""mesh.yaml `readinessProbe`: Kubernetes' fields and defaults, errors at file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import load_directory
from registry.config.model import ReadinessProbe
from tests.registry.config.conftest import replace_in

# The inventory workload's line in the example mesh.yaml, and where a probe goes after it.
ANCHOR = (
    '        command: ["python3", "apps/shop.py", "--service", "inventory", "--version", "v1"]\n'
)


def _with_probe(directory: Path, probe: str) -> None:
    block = "".join(f"        {line}\n" for line in probe.strip("\n").splitlines())
    replace_in(directory, "mesh.yaml", ANCHOR, ANCHOR + block)


def _probe(directory: Path) -> ReadinessProbe | None:
    result = load_directory(directory)
    assert result.ok, [str(e) for e in result.errors]
    assert result.config is not None
    svc = next(s for s in result.config.services if s.name == "inventory")
    return svc.workloads[0].readiness


def test_no_probe_is_none(example_copy: Path) -> None:
    assert _probe(example_copy) is None


def test_kubernetes_defaults(example_copy: Path) -> None:
    _with_probe(example_copy, "readinessProbe:\n  tcpSocket: {port: 8080}")
    assert _probe(example_copy) == ReadinessProbe(
        "tcp", 8080, "/", initial_delay_s=0.0, period_s=10.0, timeout_s=1.0,
        failure_threshold=3, success_threshold=1,
    )


def test_http_get_with_named_port_and_fast_period(example_copy: Path) -> None:
    _with_probe(example_copy, """
readinessProbe:
  httpGet: {path: /ready, port: http}
  periodSeconds: 0.2
  timeoutSeconds: 0.5
  failureThreshold: 2
  successThreshold: 2
  initialDelaySeconds: 1
""")
    assert _probe(example_copy) == ReadinessProbe("http", 8080, "/ready", 1.0, 0.2, 0.5, 2, 2)


# (id, probe block, every expected diagnostic). The block starts on mesh.yaml line 38.
BAD: list[tuple[str, str, list[str]]] = [
    ("exec", "readinessProbe:\n  exec: {command: [true]}",
     ["mesh.yaml:39:11: services.inventory.workloads[0].readinessProbe.exec: probe kind `exec` "
      "is not supported: the proxy checks its app with `httpGet` or `tcpSocket`"]),
    ("no_kind", "readinessProbe:\n  periodSeconds: 5",
     ["mesh.yaml:39:11: services.inventory.workloads[0].readinessProbe: a readinessProbe needs "
      "exactly one of `httpGet` or `tcpSocket` (found none)"]),
    ("two_kinds", "readinessProbe:\n  tcpSocket: {port: 8080}\n  httpGet: {port: 8080}",
     ["mesh.yaml:39:11: services.inventory.workloads[0].readinessProbe: a readinessProbe needs "
      "exactly one of `httpGet` or `tcpSocket` (found both `httpGet` and `tcpSocket`)"]),
    ("https", "readinessProbe:\n  httpGet: {port: 8080, scheme: HTTPS}",
     ["mesh.yaml:39:33: services.inventory.workloads[0].readinessProbe.httpGet.scheme: "
      "`scheme` is not supported yet"]),
    ("unknown_port_name", "readinessProbe:\n  tcpSocket: {port: admin}",
     ["mesh.yaml:39:29: services.inventory.workloads[0].readinessProbe.tcpSocket.port: no port "
      "named `admin` in this service (ports: `http`)"]),
    ("missing_port", "readinessProbe:\n  httpGet: {path: /ready}",
     ["mesh.yaml:39:20: services.inventory.workloads[0].readinessProbe.httpGet.port: missing "
      "required field `port`"]),
    ("bad_path", "readinessProbe:\n  httpGet: {path: 'ready now', port: 8080}",
     ["mesh.yaml:39:27: services.inventory.workloads[0].readinessProbe.httpGet.path: path "
      "`ready now` must start with `/` and hold no spaces or control characters"]),
    ("zero_threshold", "readinessProbe:\n  tcpSocket: {port: 8080}\n  failureThreshold: 0",
     ["mesh.yaml:40:29: services.inventory.workloads[0].readinessProbe.failureThreshold: "
      "failureThreshold 0 is outside 1..1000"]),
    ("zero_period", "readinessProbe:\n  tcpSocket: {port: 8080}\n  periodSeconds: 0",
     ["mesh.yaml:40:26: services.inventory.workloads[0].readinessProbe.periodSeconds: 0 s is "
      "outside 0.05..86400 seconds"]),
    ("typo", "readinessProbe:\n  tcpSocket: {port: 8080}\n  periodSecond: 5",
     ["mesh.yaml:40:11: services.inventory.workloads[0].readinessProbe.periodSecond: unknown "
      "field `periodSecond` (did you mean `periodSeconds`?)"]),
]


@pytest.mark.parametrize(("probe", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_probe(example_copy: Path, probe: str, expected: list[str]) -> None:
    _with_probe(example_copy, probe)
    result = load_directory(example_copy)
    assert result.config is None
    assert [str(e) for e in result.errors] == expected
