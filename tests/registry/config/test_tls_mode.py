"""DestinationRule trafficPolicy.tls.mode: ISTIO_MUTUAL (the default) and DISABLE (plaintext
to the peer proxies); DISABLE is refused, with its place, where a plaintext hop could not
tell the ports of a multi-port service apart."""

from __future__ import annotations

from pathlib import Path

from proxy.snapshot import build_snapshot
from registry.config import load_directory

MESH = """\
trustDomain: tls.test
namespace: default
services:
  one:
    ports:
      - {port: 8080, protocol: http, name: http}
  two:
    ports:
      - {port: 8080, protocol: http, name: http}
      - {port: 9090, protocol: tcp, name: raw}
"""

RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {host}
spec:
  host: {host}
  trafficPolicy:
    tls:
      mode: {mode}
  subsets:
    - name: v1
      labels: {{version: v1}}
    - name: v2
      labels: {{version: v2}}
      trafficPolicy:
        tls:
          mode: ISTIO_MUTUAL
"""


def _dir(tmp_path: Path, host: str, mode: str) -> Path:
    (tmp_path / "mesh.yaml").write_text(MESH)
    (tmp_path / "rule.yaml").write_text(RULE.format(host=host, mode=mode))
    return tmp_path


def test_disable_turns_mtls_off_for_the_clusters_it_covers(tmp_path: Path) -> None:
    result = load_directory(_dir(tmp_path, "one", "DISABLE"))
    assert result.ok, [str(e) for e in result.errors]
    assert result.config is not None
    snap = build_snapshot(1, 1, result.config, [], None, {})
    clusters = snap.services["one"].clusters
    assert clusters[None].mtls is False
    assert clusters["v1"].mtls is False  # inherits the top-level policy
    assert clusters["v2"].mtls is True  # its own policy says ISTIO_MUTUAL
    assert snap.services["two"].clusters[None].mtls is True  # no rule: mTLS


def test_istio_mutual_is_the_default(tmp_path: Path) -> None:
    result = load_directory(_dir(tmp_path, "one", "ISTIO_MUTUAL"))
    assert result.ok and result.config is not None
    snap = build_snapshot(1, 1, result.config, [], None, {})
    assert all(c.mtls for c in snap.services["one"].clusters.values())


def test_disable_on_a_multi_port_service_is_refused_with_its_place(tmp_path: Path) -> None:
    result = load_directory(_dir(tmp_path, "two", "DISABLE"))
    assert not result.ok
    assert [str(e) for e in result.errors] == [
        "rule.yaml:8:5: spec.trafficPolicy: tls.mode DISABLE for `two`, a service with 2 "
        "ports, is not supported yet: a plaintext hop does not carry the port; use "
        "ISTIO_MUTUAL (the default)"
    ]


def test_simple_and_mutual_are_still_refused(tmp_path: Path) -> None:
    for mode in ("SIMPLE", "MUTUAL"):
        result = load_directory(_dir(tmp_path, "one", mode))
        assert [str(e) for e in result.errors] == [
            f"rule.yaml:9:13: spec.trafficPolicy.tls.mode: `{mode}` is not supported yet"
        ]
