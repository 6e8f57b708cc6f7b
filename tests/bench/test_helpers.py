"""The bench's pure parts: summaries, ratios, --compare's noise rule, py-spy own time, configs."""

from __future__ import annotations

from typing import Any

from bench.compare import moved
from bench.profile import own_time
from bench.suite import ratios, summarise
from bench.systems import haproxy_configs


def _raw(p50: float, rps: float, cpu_a: float | None = None) -> dict[str, Any]:
    lat = {"p50": p50, "p90": p50 * 2, "p99": p50 * 4, "p99.9": p50 * 8}
    proxies = {} if cpu_a is None else {"A": {"cpu_s_per_1k": cpu_a, "rss_mib": 30.0},
                                        "B": {"cpu_s_per_1k": cpu_a / 2, "rss_mib": 20.0}}
    return {"fixed": {"corrected_us": lat, "rps": 1000.0, "proxies": proxies},
            "saturate": {"rps": rps, "proxies": proxies}}


def test_summary_takes_median_and_spread_and_subtracts_direct_per_repetition() -> None:
    runs = {"direct": [_raw(100, 9000), _raw(200, 9000), _raw(100, 9000)],
            "meshctl-mtls-http": [_raw(600, 1000, 0.2), _raw(900, 3000, 0.3),
                                  _raw(500, 2000, 0.1)]}
    s = summarise(runs)["meshctl-mtls-http"]
    assert s["max_rps"] == {"median": 2000.0, "min": 1000.0, "max": 3000.0, "n": 3}
    assert s["added_p50_ms"]["median"] == 0.5  # 0.5, 0.7, 0.4
    assert s["cpu_ms_per_1k"]["median"] == 300.0  # A + B
    assert s["cpu_ms_per_1k_sidecar"]["median"] == 200.0  # the larger of A, B
    assert "added_p50_ms" not in summarise(runs)["direct"]


def test_ratios_are_meshctl_over_haproxy_on_medians() -> None:
    runs = {"meshctl-mtls-http": [_raw(600, 1000, 0.2)],
            "haproxy-tls-http": [_raw(300, 4000, 0.1)]}
    r = ratios(summarise(runs))["meshctl-mtls-http / haproxy-tls-http"]
    assert r["max_rps"] == 0.25 and r["cpu_ms_per_1k"] == 2.0


def test_plain_and_floor_ratios() -> None:
    runs = {"meshctl-plain-http": [_raw(400, 2000, 0.2)],
            "meshctl-mtls-http": [_raw(600, 1000, 0.2)],
            "haproxy-plain-http": [_raw(200, 8000, 0.1)],
            "haproxy-tls-http": [_raw(300, 4000, 0.1)],
            "pyrelay-tls-http": [_raw(240, 5000, 0.1)],
            "meshctl-interpreted-http": [_raw(750, 800, 0.2)]}
    r = ratios(summarise(runs))
    assert r["meshctl-plain-http / haproxy-plain-http"]["cpu_ms_per_1k"] == 2.0
    assert "meshctl-plain-http / haproxy-tls-http" not in r  # plain is compared with plain
    assert r["meshctl-mtls-http / pyrelay-tls-http"]["max_rps"] == 0.2
    assert r["pyrelay-tls-http / haproxy-tls-http"]["max_rps"] == 1.25
    # The compiled core against the same path on the interpreted modules.
    assert r["meshctl-mtls-http / meshctl-interpreted-http"]["max_rps"] == 1.25


def _summary(median: float, lo: float, hi: float) -> dict[str, Any]:
    return {"meta": {"date": "d"},
            "summary": {"x": {"max_rps": {"median": median, "min": lo, "max": hi, "n": 3}}}}


def test_compare_reports_only_moves_beyond_the_spread() -> None:
    old = _summary(1000, 900, 1100)
    assert moved(old, _summary(1150, 1100, 1200)) == []  # 150 < spread 200
    rows = moved(old, _summary(1300, 1250, 1350))
    assert [(r["metric"], r["verdict"]) for r in rows] == [("max_rps", "better")]
    assert moved(old, _summary(700, 650, 750))[0]["verdict"] == "worse"
    # Zero spread (one repetition): a 2% floor still hides jitter.
    assert moved(_summary(1000, 1000, 1000), _summary(1010, 1010, 1010)) == []


def test_own_time_counts_the_innermost_frame() -> None:
    collapsed = ("main (a.py:1);serve (b.py:2);parse (c.py:3) 5\n"
                 "main (a.py:1);serve (b.py:2) 3\n"
                 "main (a.py:1);write (d.py:4);parse (c.py:3) 2\n")
    total, rows = own_time(collapsed)
    assert total == 10
    assert rows[0] == {"function": "parse (c.py)", "samples": 7, "share": 0.7}
    assert rows[1]["function"] == "serve (b.py)"


def test_own_time_python_only_charges_native_frames_to_their_python_caller() -> None:
    collapsed = ("run (loop.py:1);serve (b.py:2);SSL_write (libssl.so) 6\n"
                 "run (loop.py:1);serve (b.py:9) 2\n"
                 "epoll_wait (libc.so.6) 2\n")
    assert own_time(collapsed)[1][0]["function"] == "SSL_write (libssl.so)"
    total, rows = own_time(collapsed, python_only=True)
    assert total == 10 and rows[0] == {"function": "serve (b.py)", "samples": 8, "share": 0.8}
    assert rows[1]["function"] == "(native only)"


def test_haproxy_tls_hop_requires_client_certificates_both_ways() -> None:
    from pathlib import Path
    certs = {"ca": Path("/c/ca.crt"), "server": Path("/c/s.pem"), "client": Path("/c/c.pem")}
    a, b = haproxy_configs("http", True, 1, 2, 3, certs)
    assert "nbthread 1" in a and "mode http" in a
    assert "server b 127.0.0.1:2 ssl crt /c/c.pem ca-file /c/ca.crt verify required" in a
    assert "bind 127.0.0.1:2 ssl crt /c/s.pem ca-file /c/ca.crt verify required" in b
    a, b = haproxy_configs("tcp", False, 1, 2, 3, None)
    assert "mode tcp" in a and "ssl" not in a + b and "server up 127.0.0.1:3" in b


def test_every_loopback_meshctl_system_has_an_upstream_service_of_its_own() -> None:
    """Two systems on one service would share their B proxies: the balancer would send part
    of one system's requests to the other's B, whose CPU then counts as noise."""
    from bench.systems import MESH_YAML, system_names, upstream_service

    mesh = [n for n in system_names() if n.startswith("meshctl-")]
    services = [upstream_service(n) for n in mesh]
    assert len(set(services)) == len(mesh) == 5
    assert all(f"  {s}:\n" in MESH_YAML for s in services)


def test_netns_systems_are_named_apart_and_measured_against_their_own_direct() -> None:
    from bench.systems import direct_of, system_names

    assert system_names(("http",), ("netns",)) == [
        "netns-direct", "netns-meshctl-mtls-http", "netns-haproxy-tls-http"]
    both = system_names(("http", "tcp"), ("loopback", "netns"))
    assert both[0] == "direct" and "netns-haproxy-tls-tcp" in both and len(both) == 16
    assert "meshctl-interpreted-http" in both  # loopback HTTP only
    assert system_names() == system_names(("http", "tcp"), ("loopback",))
    assert direct_of("netns-meshctl-mtls-http") == "netns-direct"
    assert direct_of("meshctl-mtls-http") == "direct"
    runs = {"direct": [_raw(100, 9000)], "netns-direct": [_raw(300, 9000)],
            "netns-meshctl-mtls-http": [_raw(800, 1000, 0.2)],
            "netns-haproxy-tls-http": [_raw(500, 4000, 0.1)]}
    s = summarise(runs)
    assert s["netns-meshctl-mtls-http"]["added_p50_ms"]["median"] == 0.5  # 800 - 300 us
    r = ratios(s)
    assert list(r) == ["netns-meshctl-mtls-http / netns-haproxy-tls-http"]
    assert r["netns-meshctl-mtls-http / netns-haproxy-tls-http"]["max_rps"] == 0.25


def test_haproxy_b_listens_on_the_other_namespace_address() -> None:
    from pathlib import Path
    certs = {"ca": Path("/c/ca.crt"), "server": Path("/c/s.pem"), "client": Path("/c/c.pem")}
    a, b = haproxy_configs("http", True, 10001, 10002, 8080, certs, b_host="10.250.3.252")
    assert "bind 127.0.0.1:10001\n" in a and "server b 10.250.3.252:10002 ssl" in a
    assert "bind 10.250.3.252:10002 ssl" in b and "server up 127.0.0.1:8080" in b


def test_netns_mesh_config_is_valid_for_the_registry(tmp_path: Any) -> None:
    from bench.netns import mesh_config
    from registry.config import load_directory

    confs = {"upstream": tmp_path / "n1" / "nginx.conf",
             "upstream-tcp": tmp_path / "n2" / "nginx.conf"}
    (tmp_path / "mesh.yaml").write_text(mesh_config(("http", "tcp"), confs))
    loaded = load_directory(tmp_path)
    assert not loaded.errors and loaded.config is not None
    services = {s.name: s for s in loaded.config.services}
    assert set(services) == {"client", "upstream", "upstream-tcp"}
    assert services["upstream-tcp"].ports[0].protocol == "tcp"
    assert services["upstream"].workloads[0].command[:2] == ("nginx", "-p")


def test_topology_defaults_and_the_note_without_root(monkeypatch: Any) -> None:
    from bench import netns
    from bench.__main__ import _topologies

    monkeypatch.setattr(netns, "reason_unavailable", lambda: "it needs root")
    assert _topologies(None, quick=False) == (("loopback",), "it needs root")
    assert _topologies("netns", quick=False) == (None, "it needs root")
    assert _topologies("loopback", quick=False)[0] == ("loopback",)
    monkeypatch.setattr(netns, "reason_unavailable", lambda: None)
    assert _topologies(None, quick=False) == (("loopback", "netns"), None)
    assert _topologies(None, quick=True)[0] == ("loopback",)
    assert _topologies("both", quick=True) == (("loopback", "netns"), None)


def test_netns_table_has_no_plain_column_when_plain_was_not_run() -> None:
    from bench.report import _table

    runs = {"netns-direct": [_raw(300, 9000)], "netns-meshctl-mtls-http": [_raw(800, 1000, 0.2)],
            "netns-haproxy-tls-http": [_raw(500, 4000, 0.1)]}
    s = summarise(runs)
    lines = _table({"summary": s, "ratios": ratios(s)}, "http", "netns-")
    assert lines[0] == ("| metric | unit | meshctl mTLS | HAProxy TLS | direct | "
                        "meshctl / HAProxy TLS |")
    assert all(line.count("|") == 7 for line in lines)


def test_method_says_why_the_netns_topology_did_not_run() -> None:
    from bench.report import _netns_method

    skipped = {"meta": {"netns": {"skipped": "it needs root (network namespaces, iptables, "
                                              "proxies as uid 1337)"}},
               "settings": {"topologies": ["loopback"]}}
    line = _netns_method(skipped)
    assert "not run: it needs root" in line and "--topology netns" in line
    ran = {"meta": {"netns": {"prefix": "bn12ab-", "network": {"bridge": "bn12ab-br0",
                                                              "subnet": "10.250.9.0/24"}}},
           "settings": {"topologies": ["loopback", "netns"]}}
    line = _netns_method(ran)
    assert "meshctl up" in line and "bn12ab-br0" in line and "SO_ORIGINAL_DST" in line


def test_sigterm_in_a_fork_of_the_bench_exits_without_unwinding_its_stack() -> None:
    """pyroute2 forks the bench (no exec) and SIGTERMs the child: the child must not run the
    lab's clean-up (meshctl down, namespaces deleted) from its copy of the stack."""
    import os

    import pytest

    from bench.__main__ import _on_sigterm

    handler = _on_sigterm(os.getpid())
    with pytest.raises(SystemExit):
        handler(15, None)
    pid = os.fork()
    if pid == 0:
        try:
            handler(15, None)
        finally:
            os._exit(99)  # only reached if the handler unwound
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 143


def test_a_netns_topology_that_fails_to_build_is_dropped_when_optional(monkeypatch: Any) -> None:
    import pytest

    from bench import netns
    from bench.systems import Lab, system_names

    def fail(self: Any, config: Any) -> None:
        raise RuntimeError("meshctl up failed (rc 1): boom")

    monkeypatch.setattr(netns.NetnsMesh, "up", fail)
    names = system_names(("http",), ("netns",))
    with Lab(names, netns_optional=True) as lab:
        assert lab.start() == {}
        assert lab.netns_error is not None and "boom" in lab.netns_error
        assert lab.netns is None
    with Lab(names) as lab, pytest.raises(RuntimeError, match="boom"):
        lab.start()
