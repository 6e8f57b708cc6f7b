"""Installing, replacing and removing the rules in a real namespace; privileges; errors."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from proxy.intercept import iptables
from proxy.intercept.iptables import Backend, InterceptError, PrivilegeError
from proxy.intercept.rules import CHAINS, MESH_DNS, InterceptConfig, parse_nat, render_remove
from tests.proxy.intercept.support import (
    DOCKER_DNS_SAVE,
    SYSTEM_PYTHON,
    normalized,
    python_in,
    unique,
)

CFG = InterceptConfig(proxy_uid=1337, proxy_gid=1337, inbound_ports=(8080, 9090))


def status(cap_eff: int) -> str:
    return f"Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff:016x}\n"


# --- unit: no root needed ---------------------------------------------------------------


def test_effective_capabilities_parses_proc_status() -> None:
    assert iptables.effective_capabilities(status(0x1FFFEFFFFFF)) == 0x1FFFEFFFFFF
    with pytest.raises(InterceptError, match="CapEff"):
        iptables.effective_capabilities("Name:\tx\n")


def test_privileges_missing_net_admin_says_what_to_do() -> None:
    with pytest.raises(PrivilegeError) as info:
        iptables.check_privileges(status=status(0))
    text = str(info.value)
    assert "lacks CAP_NET_ADMIN in its effective capability set" in text
    assert "Run as root" in text and "--cap-add NET_ADMIN" in text


def test_privileges_entering_a_namespace_needs_sys_admin_too() -> None:
    net_admin = 1 << iptables.CAP_NET_ADMIN
    iptables.check_privileges(status=status(net_admin))
    with pytest.raises(PrivilegeError, match="lacks CAP_SYS_ADMIN in"):
        iptables.check_privileges(enter_namespace=True, status=status(net_admin))
    both = net_admin | 1 << iptables.CAP_SYS_ADMIN
    iptables.check_privileges(enter_namespace=True, status=status(both))


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", "", "name with space"])
def test_bad_namespace_names_are_refused(name: str) -> None:
    with pytest.raises(InterceptError, match="not a network namespace name"):
        iptables.namespace_file(name)


def test_missing_namespace_and_pid_are_reported() -> None:
    with pytest.raises(InterceptError, match=r"no network namespace 'mtnothere'.*ip netns list"):
        iptables.namespace_file("mtnothere")
    with pytest.raises(InterceptError, match="no process 2147483647"):
        iptables.namespace_file(2147483647)
    with pytest.raises(TypeError):
        iptables.namespace_file(True)
    assert iptables.namespace_file(None) is None


def test_error_text_numbers_the_rules_and_keeps_stderr() -> None:
    err = InterceptError("iptables-restore failed", rules="*nat\nbad\nCOMMIT\n", stderr="line 2\n")
    assert err.rules == "*nat\nbad\nCOMMIT\n" and err.stderr == "line 2\n"
    assert str(err) == (
        "iptables-restore failed\nline 2\nThe rules were:\n   1 *nat\n   2 bad\n   3 COMMIT"
    )


@pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables")
def test_detect_backend() -> None:
    version = subprocess.run(["iptables", "-V"], capture_output=True, text=True).stdout
    expected = "nft" if "nf_tables" in version else "legacy"
    assert iptables.detect_backend() == expected


# --- root: real namespaces --------------------------------------------------------------


def _usable(backend: Backend | None) -> bool:
    tool = "iptables-save" if backend is None else f"iptables-{backend}-save"
    if shutil.which(tool) is None:
        return False
    name = unique("p")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        probe = subprocess.run(
            ["ip", "netns", "exec", name, tool, "-t", "nat"], capture_output=True
        )
        return probe.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


@pytest.fixture(params=[None, "nft", "legacy"], ids=["default", "nft", "legacy"])
def backend(request: pytest.FixtureRequest) -> Backend | None:
    value: Backend | None = request.param
    if not _usable(value):
        pytest.skip(f"iptables backend {value} not usable here")
    return value


@pytest.fixture
def docker_like(bare_netns: str, backend: Backend | None) -> Iterator[str]:
    """A namespace holding Docker's embedded-DNS rules, as a container's does."""
    tool = "iptables-restore" if backend is None else f"iptables-{backend}-restore"
    subprocess.run(
        ["ip", "netns", "exec", bare_netns, tool, "--noflush"],
        input=DOCKER_DNS_SAVE, text=True, check=True,
    )  # fmt: skip
    yield bare_netns


@pytest.mark.root
def test_install_is_idempotent_and_remove_restores_the_table(
    docker_like: str, backend: Backend | None
) -> None:
    ns = docker_like
    before = iptables.dump(ns, backend=backend)
    assert not iptables.installed(ns, backend=backend)

    iptables.install(CFG, ns, backend=backend)
    first = iptables.dump(ns, backend=backend)
    assert iptables.installed(ns, backend=backend)
    old, new = parse_nat(before), parse_nat(first)
    assert new.others() == old.others()  # Docker's rules untouched, in order
    assert [c for c in new.chains if c not in CHAINS] == list(old.chains)
    assert set(CHAINS) - {MESH_DNS} <= set(new.chains)  # MESH_DNS: only with dns_port
    output = [r for r in new.rules if r.startswith("-A OUTPUT")]
    assert output == ["-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT",
                      "-A OUTPUT -p tcp -j MESH_OUTPUT"]  # fmt: skip
    assert "-A PREROUTING -p tcp -j MESH_INBOUND" in new.rules

    iptables.install(CFG, ns, backend=backend)
    assert normalized(iptables.dump(ns, backend=backend)) == normalized(first)

    iptables.remove(ns, backend=backend)
    assert normalized(iptables.dump(ns, backend=backend)) == normalized(before)
    assert not iptables.installed(ns, backend=backend)
    iptables.remove(ns, backend=backend)  # nothing installed: still fine
    assert normalized(iptables.dump(ns, backend=backend)) == normalized(before)


@pytest.mark.root
def test_ipv6_gets_the_same_rules_and_remove_leaves_none(
    bare_netns: str, backend: Backend | None
) -> None:
    ns = bare_netns
    before = iptables.dump(ns, backend=backend, family=6)
    iptables.install(CFG, ns, backend=backend)
    v4 = parse_nat(iptables.dump(ns, backend=backend, family=4))
    v6 = parse_nat(iptables.dump(ns, backend=backend, family=6))
    assert set(CHAINS) - {MESH_DNS} <= set(v6.chains)  # (CFG captures no DNS)
    # The same rules but loopback: ::1/128 where IPv4 has 127.0.0.0/8.
    assert [r.replace("::1/128", "127.0.0.0/8") for r in v6.ours()] == list(v4.ours())
    assert "-A PREROUTING -p tcp -j MESH_INBOUND" in v6.rules
    assert iptables.installed(ns, backend=backend)
    # IPv6 rules missing (deleted by hand): not installed, so the supervisor re-installs.
    subprocess.run(
        ["ip", "netns", "exec", ns, iptables._tool(backend, "iptables-restore", 6), "--noflush"],
        input=render_remove(iptables.dump(ns, backend=backend, family=6)), text=True, check=True,
    )  # fmt: skip
    assert not iptables.installed(ns, backend=backend)
    iptables.install(CFG, ns, backend=backend)
    iptables.remove(ns, backend=backend)
    after = iptables.dump(ns, backend=backend, family=6)
    assert normalized(after) == normalized(before)
    assert "MESH_" not in after


@pytest.mark.root
def test_a_new_config_replaces_the_old_one(bare_netns: str) -> None:
    iptables.install(CFG, bare_netns)
    iptables.install(InterceptConfig(proxy_uid=1000, inbound_ports=()), bare_netns)
    table = parse_nat(iptables.dump(bare_netns))
    assert not any(r.startswith("-A PREROUTING") for r in table.rules)
    assert [r for r in table.rules if r.startswith("-A OUTPUT")] == [
        "-A OUTPUT -p tcp -j MESH_OUTPUT"
    ]
    assert "-A MESH_OUTPUT -m owner --uid-owner 1000 -j RETURN" in table.rules
    assert not any("1337" in r for r in table.rules)


@pytest.mark.root
def test_install_by_pid_enters_that_process_namespace(bare_netns: str) -> None:
    sleeper = subprocess.Popen(["ip", "netns", "exec", bare_netns, "sleep", "60"])
    try:
        iptables.install(CFG, sleeper.pid)
        assert iptables.installed(bare_netns)
        assert iptables.installed(sleeper.pid)
        iptables.remove(sleeper.pid)
        assert not iptables.installed(bare_netns)
    finally:
        sleeper.kill()
        sleeper.wait(10)


@pytest.mark.root
def test_rejected_rules_raise_with_the_rules_and_stderr(
    bare_netns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = iptables.dump(bare_netns)
    broken = "*nat\n:MESH_OUTPUT - [0:0]\n-A MESH_OUTPUT -j NO_SUCH_CHAIN\nCOMMIT\n"
    monkeypatch.setattr(iptables, "render_restore", lambda cfg, replacing, family: broken)
    with pytest.raises(InterceptError) as info:
        iptables.install(CFG, bare_netns)
    err = info.value
    assert err.rules == broken
    assert err.stderr.strip()
    assert f"failed in network namespace {bare_netns!r}" in str(err)
    assert "   3 -A MESH_OUTPUT -j NO_SUCH_CHAIN" in str(err)
    assert normalized(iptables.dump(bare_netns)) == normalized(before)  # all or nothing


@pytest.mark.root
def test_missing_namespace_is_an_intercept_error() -> None:
    with pytest.raises(InterceptError, match="no network namespace"):
        iptables.install(CFG, unique("gone"))


UNPRIVILEGED = """
import sys
from proxy.intercept import iptables
from proxy.intercept.rules import InterceptConfig
for target in (sys.argv[1], None):
    try:
        iptables.install(InterceptConfig(proxy_uid=1337), target)
    except iptables.InterceptError as exc:
        print(type(exc).__name__, exc)
"""


@pytest.mark.root
def test_install_without_privileges_is_refused_clearly(bare_netns: str) -> None:
    if not shutil.which("setpriv") or not shutil.which(SYSTEM_PYTHON):
        pytest.skip("needs setpriv and /usr/bin/python3")
    before = iptables.dump(bare_netns)
    proc = python_in(bare_netns, UNPRIVILEGED, args=[bare_netns], uid=65534)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert lines[0].startswith("PrivilegeError cannot read or change interception rules")
    assert "(uid 65534) lacks CAP_NET_ADMIN and CAP_SYS_ADMIN" in lines[0]
    assert "lacks CAP_NET_ADMIN in" in lines[1]  # its own namespace: no setns needed
    assert "Run as root" in lines[1]
    assert normalized(iptables.dump(bare_netns)) == normalized(before)
