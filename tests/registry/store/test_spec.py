"""`--store` parsing: the forms docs/etcd.md gives, and a clear error for everything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.store import StoreError, parse_store


def test_plain_endpoints_and_default_prefix() -> None:
    spec = parse_store("etcd://10.0.0.1:2379,etcd-b.example:2379")
    assert spec.endpoints == ("http://10.0.0.1:2379", "http://etcd-b.example:2379")
    assert spec.prefix == "/meshctl"
    assert not spec.tls
    assert spec.display() == "etcd://10.0.0.1:2379,etcd-b.example:2379/meshctl"


def test_prefix_ipv6_and_tls_files_in_query(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    spec = parse_store(
        f"etcds://[::1]:2379/meshes/prod/?ca={tmp_path}/ca.pem&cert={tmp_path}/c.pem"
        f"&key={tmp_path}/k.pem"
    )
    assert spec.endpoints == ("https://[::1]:2379",)
    assert spec.prefix == "/meshes/prod"
    assert (spec.ca, spec.cert, spec.key) == (
        tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem")


def test_tls_files_as_options(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    spec = parse_store("etcds://h:2379", ca=tmp_path / "ca.pem")
    assert spec.tls and spec.ca == tmp_path / "ca.pem" and spec.cert is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("consul://h:8500", "unknown store"),
        ("h:2379", "unknown store"),
        ("", "unknown store"),
        ("etcd://", "not HOST:PORT"),
        ("etcd://h", "not HOST:PORT"),
        ("etcd://h:99999", "not HOST:PORT"),
        ("etcd://h:2379,", "an empty endpoint"),
        ("etcd://[1::2::3]:2379", "not an IPv6 address"),
        ("etcd://h:2379/a b", "key prefix"),
        ("etcd://h:2379?tls=1", "unknown parameter 'tls'"),
        ("etcd://h:2379?ca=/etc/hosts", "needs TLS"),
        ("etcds://h:2379?cert=/etc/hosts", "both --store-cert and --store-key"),
        ("etcds://h:2379?ca=/no/such/ca.pem", "no such file"),
    ],
)
def test_bad_values_say_what_is_wrong(value: str, says: str) -> None:
    with pytest.raises(StoreError, match=says):
        parse_store(value)


def test_tls_files_without_a_store_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="give --store too"):
        parse_store("", ca=tmp_path / "ca.pem")


def test_a_file_given_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(StoreError, match="given twice"):
        parse_store(f"etcds://h:2379?ca={tmp_path}/ca.pem", ca=tmp_path / "ca.pem")
