"""Registries on a real etcd: the store, versions that never go back or repeat, failover."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from registry.ca.csr import generate_key
from registry.store.sealed_ca import SEAL_FILE
from tests.example import CONFIG
from tests.integration.harness import Mesh, wait_until
from tests.registry.server.support import StreamFollower, call, csr_for, join, mint, op
from tests.registry.server.test_config_push import canary_weights, set_orders_weights
from tests.registry.store.etcd_support import EtcdCluster, Tls

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


def replicas(tmp: Path, n: int) -> list[Mesh]:
    """`n` registries, each with its own MESH_HOME and ports, over one config directory;
    if several, each holds the same seal key for the mesh's CA in etcd (docs/etcd.md)."""
    first = Mesh(tmp / "r0", CONFIG)
    out = [first]
    for i in range(1, n):
        m = Mesh(tmp / f"r{i}", first.config)
        m.config = first.config
        out.append(m)
    seal = base64.b64encode(os.urandom(32)) + b"\n"
    for m in out if n > 1 else ():
        ca = m.home / "registry" / "ca"
        ca.mkdir(parents=True, mode=0o700)
        (ca / SEAL_FILE).write_bytes(seal)
        (ca / SEAL_FILE).chmod(0o600)
    return out


def status(m: Mesh) -> dict[str, Any]:
    return dict(m.api("GET", "/v1/status"))


def version_of(m: Mesh) -> int:
    return int(status(m)["config_version"])


def close_all(meshes: list[Mesh]) -> None:
    for m in meshes:
        m.close()


def test_versions_live_in_etcd_and_go_on_after_a_restart(tmp_path: Path,
                                                         etcd1: EtcdCluster) -> None:
    (m,) = replicas(tmp_path, 1)
    try:
        m.start_registry("--store", etcd1.store)
        first = status(m)
        assert first["config_version"] == 1
        assert first["replicas"]["store"] == etcd1.store + "/meshctl"
        assert first["replicas"]["publisher"] == first["replicas"]["replica"]
        # The store, not MESH_HOME, holds the snapshot and the version sequence.
        assert not (m.home / "registry" / "snapshot.json").exists()
        assert not (m.home / "registry" / "state.json").exists()
        set_orders_weights(m.config, 70)
        wait_until(lambda: version_of(m) == 2, what="version 2 after an edit")
        assert m.registry is not None
        m.registry.stop()
        m.start_registry("--store", etcd1.store)
        again = status(m)
        assert (again["config_version"], again["epoch"]) == (2, first["epoch"])
        set_orders_weights(m.config, 60)
        wait_until(lambda: version_of(m) == 3, what="version 3 after a restart and an edit")
    finally:
        m.close()


def test_a_follower_pushes_what_the_publisher_published(tmp_path: Path,
                                                        etcd1: EtcdCluster) -> None:
    meshes = replicas(tmp_path, 2)
    follower = None
    try:
        for m in meshes:
            m.start_registry("--store", etcd1.store)
        pub, fol = meshes
        wait_until(lambda: status(fol)["replicas"]["publisher"]
                   == status(pub)["replicas"]["replica"], what="the first replica publishes")
        wait_until(lambda: len(status(pub)["replicas"]["replicas"]) == 2,
                   what="the publisher lists both replicas")
        w = join(fol, "frontend", tmp_path / "frontend")
        follower = StreamFollower(fol, w.ctx(), "frontend-1")
        assert follower.next_view()["config_version"] == 1
        set_orders_weights(pub.config, 70)
        view = follower.view_where(lambda v: v["config_version"] == 2, what="version 2")
        assert 70 in canary_weights(view)
        assert view["epoch"] == status(pub)["epoch"] == status(fol)["epoch"]
        assert status(fol)["config_digest"] == status(pub)["config_digest"]
        fol_id = status(fol)["replicas"]["replica"]
        # Canaries edit the config directory: only the publisher runs them.
        code, body = op(fol, "POST", "/v1/canaries", {"service": "orders", "to": "v2"})
        assert code == 409, body
        assert (f"replica that publishes config, {pub.url}" in body["error"]), body
        aborted = op(pub, "POST", "/v1/canaries/orders/abort")  # none runs: refused, not sent on
        assert aborted[0] == 409 and "replica that publishes" not in aborted[1]["error"], aborted
        # A rejected edit is reported by every replica, and cleared by the next good one.
        orders = pub.config / "orders.yaml"
        good = orders.read_text()
        orders.write_text(good.replace("weight: 30", "weight: thirty"))
        err = wait_until(lambda: status(fol)["last_config_error"],
                         what="the publisher's rejection on the follower")  # fmt: skip
        assert any("orders.yaml" in e and "weight" in e for e in err["errors"]), err
        assert status(fol)["config_version"] == 2  # the last good one stays in force
        orders.write_text(good)
        wait_until(lambda: status(fol)["last_config_error"] is None,
                   what="the rejection cleared on the follower")  # fmt: skip
        # The publisher lists the proxy connected to the follower, and where it is.
        row = wait_until(lambda: [p for p in status(pub)["proxies"]
                                  if p["proxy_id"] == "frontend-1" and p.get("replica")],
                         what="the follower's proxy in the publisher's status")  # fmt: skip
        assert row[0]["replica"] == fol_id and row[0]["connected"], row
        on_pub = subprocess.run(pub.meshctl("status"), env=pub.env, capture_output=True,
                                text=True, timeout=60)  # fmt: skip
        assert any("frontend-1" in line and f"yes (to {fol_id})" in line
                   for line in on_pub.stdout.splitlines()), on_pub.stdout
        follower.close()
        wait_until(lambda: [p["connected"] for p in status(pub)["proxies"]
                            if p["proxy_id"] == "frontend-1"] == [False],
                   what="the publisher sees the follower's proxy disconnect")  # fmt: skip
        shown = subprocess.run(fol.meshctl("status"), env=fol.env, capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        pub_id = status(pub)["replicas"]["replica"]
        lines = shown.stdout.splitlines()
        assert any(pub_id in line and "publisher" in line for line in lines), shown.stdout
        assert any(fol_id in line and "follower (this replica)" in line
                   for line in lines), shown.stdout
        assert any(line.startswith(f"etcd member {etcd1.members[0].client_url}: ok")
                   and "leader" in line for line in lines), shown.stdout
        assert status(fol)["replicas"]["etcd"][0]["ok"]
        versions = {r["id"]: r["config_version"] for r in status(fol)["replicas"]["replicas"]}
        assert versions == {pub_id: 2, fol_id: 2}, versions
    finally:
        if follower is not None:
            follower.close()
        close_all(meshes)


def test_a_one_time_token_is_spent_once_across_replicas(tmp_path: Path,
                                                          etcd1: EtcdCluster) -> None:
    meshes = replicas(tmp_path, 2)
    try:
        for m in meshes:
            m.start_registry("--store", etcd1.store)
        a, b = meshes
        tokens = [mint(a, "frontend") for _ in range(6)]
        assert not (a.home / "registry" / "tokens.json").exists()  # in etcd, not in a file

        def redeem(where: Mesh, token: str) -> tuple[int, Any]:
            return call(where, "POST", "/v1/join", {"token": token,
                                                    "csr": csr_for(generate_key())})

        with ThreadPoolExecutor(4) as pool:  # each token redeemed on both replicas at once
            results = [(pool.submit(redeem, a, t), pool.submit(redeem, b, t)) for t in tokens]
            outcomes = [(fa.result(), fb.result()) for fa, fb in results]
        for (sa, da), (sb, db) in outcomes:
            assert sorted([sa, sb]) == [200, 403], (da, db)
            refused = da if sa == 403 else db
            assert "already used" in refused["error"], refused

        listed = {t["token_id"]: t for t in op(b, "GET", "/v1/tokens")[1]["tokens"]}
        assert {t.split(".")[1] for t in tokens} <= set(listed)
        assert all(listed[t.split(".")[1]]["uses"] == 1 for t in tokens)
        spare = mint(b, "frontend")
        assert op(a, "DELETE", f"/v1/tokens/{spare.split('.')[1]}")[0] == 200
        status_code, body = redeem(b, spare)
        assert status_code == 403 and "revoked" in body["error"], body
    finally:
        close_all(meshes)


def test_the_catalog_is_shared_and_its_endpoints_expire_by_lease(tmp_path: Path,
                                                                  etcd1: EtcdCluster) -> None:
    meshes = replicas(tmp_path, 2)
    try:
        for m in meshes:
            m.start_registry("--store", etcd1.store, "--endpoint-ttl", "2")
        a, b = meshes

        def ids(m: Mesh) -> set[str]:
            return {e["id"] for e in op(m, "GET", "/v1/catalog")[1]["endpoints"]}

        ep = {"id": "orders-x", "service": "orders", "address": "127.0.0.1",
              "inbound_port": 15006, "labels": {"version": "v1"}}
        assert op(a, "POST", "/v1/endpoints", ep)[0] == 200
        wait_until(lambda: "orders-x" in ids(b), what="an endpoint registered on A seen on B")
        # Heartbeats on B renew the lease A created: it outlives its 2 s TTL three times.
        until = time.monotonic() + 6
        while time.monotonic() < until:
            assert op(b, "PUT", "/v1/endpoints/orders-x", {"health": "healthy"})[0] == 200
            time.sleep(0.5)
        assert "orders-x" in ids(a)
        # Heartbeats stop: etcd ends the lease and both replicas drop the endpoint.
        wait_until(lambda: "orders-x" not in ids(a) | ids(b), timeout=15,
                   what="the endpoint gone from both once its lease ran out")  # fmt: skip
        assert op(b, "POST", "/v1/endpoints", ep)[0] == 200
        wait_until(lambda: "orders-x" in ids(a), what="registered again on B, seen on A")
        assert op(a, "DELETE", "/v1/endpoints/orders-x")[1] == {"removed": True}
        wait_until(lambda: "orders-x" not in ids(b), what="deregistered on A, gone from B")
        # One numbering on every replica: etcd's revision of the last endpoint change.
        wait_until(lambda: op(a, "GET", "/v1/catalog")[1]["version"]
                   == op(b, "GET", "/v1/catalog")[1]["version"], what="equal catalog versions")
    finally:
        close_all(meshes)


@pytest.mark.timeout(240)
def test_publisher_fails_over_when_it_dies_and_when_an_etcd_member_dies(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    etcd = EtcdCluster(tmp_path, 3).start()
    meshes = replicas(tmp_path, 3)
    follower = None
    try:
        for m in meshes:
            m.start_registry("--store", etcd.store)
        by_id = {status(m)["replicas"]["replica"]: m for m in meshes}
        publisher = by_id[status(meshes[0])["replicas"]["publisher"]]
        rest = [m for m in meshes if m is not publisher]
        w = join(rest[0], "frontend", tmp_path / "frontend")
        follower = StreamFollower(rest[0], w.ctx(), "frontend-1")
        assert follower.next_view()["config_version"] == 1

        assert publisher.registry is not None
        publisher.registry.stop(signal.SIGKILL)  # a crash: its lease must run out
        killed = time.monotonic()
        set_orders_weights(rest[0].config, 70)
        view = follower.view_where(lambda v: 70 in canary_weights(v), timeout=30,
                                   what="the edit made after the publisher died")  # fmt: skip
        took = time.monotonic() - killed
        new_pub = status(rest[0])["replicas"]["publisher"]
        assert new_pub != "" and by_id[new_pub] is not publisher
        assert view["config_version"] == 2  # no version lost, none reused
        with capsys.disabled():
            print(f"\npublisher killed -> edit on a follower's stream: {took:.2f} s")

        # One etcd member down (the one every replica dials first): still publishing.
        etcd.kill(etcd.members[0])
        set_orders_weights(rest[0].config, 60)
        view = follower.view_where(lambda v: 60 in canary_weights(v), timeout=30,
                                   what="an edit with one etcd member down")  # fmt: skip
        assert view["config_version"] == 3
        wait_until(lambda: {version_of(m) for m in rest} == {3},
                   what="both live replicas on version 3")
    finally:
        if follower is not None:
            follower.close()
        close_all(meshes)
        etcd.close()


def test_etcd_over_tls_with_a_client_certificate(tmp_path: Path) -> None:
    tls = Tls.make(tmp_path / "pki")
    etcd = EtcdCluster(tmp_path, 1, tls=tls).start()
    (m,) = replicas(tmp_path, 1)
    try:
        # A CA that did not sign etcd's certificate: refused at once, with the reason.
        other = Tls.make(tmp_path / "other")
        done = subprocess.run(
            m.registry_argv("--store", etcd.store, "--store-ca", str(other.ca),
                            "--store-cert", str(tls.cert), "--store-key", str(tls.key)),
            env=m.env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "certificate verify failed" in done.stderr, done.stderr
        assert "fix --store-ca/--store-cert/--store-key" in done.stderr, done.stderr
        assert not (m.home / "registry").exists()  # nothing written
        m.start_registry("--store", f"{etcd.store}?ca={tls.ca}",
                         "--store-cert", str(tls.cert), "--store-key", str(tls.key))
        assert status(m)["replicas"]["store"].startswith("etcds://127.0.0.1:")
        set_orders_weights(m.config, 70)
        wait_until(lambda: version_of(m) == 2, what="version 2 through etcd over TLS")
    finally:
        m.close()
        etcd.close()


def test_a_bad_store_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for bad in ("consul://127.0.0.1:8500", "etcd://127.0.0.1", "etcds://h:2379?ca=/no/ca.pem"):
        done = subprocess.run(
            [sys.executable, "-m", "meshctl", "registry", "--config", str(CONFIG),
             "--store", bad],
            capture_output=True, text=True, timeout=60, env={**os.environ, "MESH_HOME": str(home)},
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "meshctl registry: --store" in done.stderr, done.stderr
        assert not home.exists()
