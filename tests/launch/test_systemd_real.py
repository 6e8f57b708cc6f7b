"""docs/systemd.md's step by step under a real systemd: two containers that boot systemd as
PID 1 (a registry host and a VM), the docs' commands run in them as written.

What tests/launch/test_systemd_vm.py cannot show: that systemd itself (252, Debian
bookworm) accepts the units, their users, credentials and sandboxing, and starts the app
once the proxy said READY=1. The image is built locally with debootstrap (first run
~1 min; then cached); the checkout is bind-mounted at its own path, read-only.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.launch.test_systemd_vm import MESH_YAML, ORDERS_UNIT, REPO, doc_blocks

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]

TAG = "meshctl-test-systemd:bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "iptables", "iproute2")
BOOT = "mount --make-rshared / && exec /lib/systemd/systemd"  # LoadCredential needs rshared


def _docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def sh(container: str, script: str, timeout: float = 120) -> str:
    """Run a shell line in the container, from /root (the docs' commands as written)."""
    done = subprocess.run(["docker", "exec", "-w", "/root", container, "sh", "-c", script],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"{container}: {script}: {done.stdout}{done.stderr}")
    return done.stdout


@pytest.fixture
def containers() -> Iterator[tuple[str, str]]:
    from meshctl.launch.image import ImageError, ensure_image

    try:
        ensure_image(TAG, packages=PACKAGES)
    except ImageError as exc:
        pytest.skip(f"no systemd image: {exc}")
    prefix = f"mtsd{secrets.token_hex(3)}"
    network = prefix + "net"
    made: list[str] = []
    _docker("network", "create", network)
    try:
        for role in ("reg", "vm"):
            name = f"{prefix}{role}"
            _docker("run", "-d", "--name", name, "--hostname", role, "--network", network,
                    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
                    "--security-opt", "seccomp=unconfined", "--tmpfs", "/run",
                    "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                    "--stop-signal", "SIGRTMIN+3", "-v", f"{REPO}:{REPO}:ro",
                    TAG, "/bin/sh", "-c", BOOT)  # fmt: skip
            made.append(name)
        for name in made:
            state = subprocess.run(
                ["docker", "exec", name, "systemctl", "is-system-running", "--wait"],
                capture_output=True, text=True, timeout=120,
            ).stdout.strip()  # fmt: skip
            assert state in ("running", "degraded"), f"{name}: systemd is {state!r}"
            # meshctl on PATH, as an installed one would be: this checkout's.
            sh(name, f"ln -sf {REPO}/.venv/bin/meshctl /usr/local/bin/meshctl")
        yield made[0], made[1]
    finally:
        for name in made:
            _docker("rm", "-f", name, check=False)
        _docker("network", "rm", network, check=False)


def _until(pred: Any, what: str, timeout: float = 60.0) -> Any:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            if got := pred():
                return got
        except AssertionError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def _get(container: str, url: str) -> dict[str, Any]:
    code = ("import urllib.request; o = urllib.request.build_opener("
            "urllib.request.ProxyHandler({})); "
            f"print(o.open({url!r}, timeout=5).read().decode())")  # fmt: skip
    return dict(json.loads(sh(container, f"python3 -c {json.dumps(code)}")))


def _show(container: str, unit: str, prop: str) -> str:
    return sh(container, f"systemctl show -P {prop} {unit}").strip()


def test_docs_step_by_step_under_real_systemd(containers: tuple[str, str]) -> None:
    reg, vm = containers
    registry_block, vm_block = doc_blocks()
    sh(reg, f"mkdir -p /etc/meshctl && printf '%s' '{MESH_YAML}' > /etc/meshctl/mesh.yaml")
    for argv in registry_block:
        sh(reg, " ".join(argv) if ">" not in argv else
           " ".join(argv[: argv.index(">")]) + " > " + argv[argv.index(">") + 1])  # fmt: skip
    token = sh(reg, "cat orders.token")
    sh(vm, f"printf '%s' '{token.strip()}' > orders.token")  # "copy it to the VM"
    sh(vm, f"cat > /etc/systemd/system/orders.service <<'EOF'\n{ORDERS_UNIT}EOF\n"
           "systemctl daemon-reload")  # fmt: skip
    for argv in vm_block:
        sh(vm, " ".join(argv))

    proxy = "meshctl-proxy-orders.service"
    for unit in (proxy, "orders.service"):
        assert _show(vm, unit, "ActiveState") == "active", sh(vm, f"journalctl -u {unit}")
    assert _show(vm, proxy, "Type") == "notify"  # and it was started: READY=1 came
    # What the app sees: not the proxy's key, SVID or token, even as root in its mount
    # namespace (the drop-in's InaccessiblePaths=; the proxy itself reads them fine).
    app_pid = _show(vm, "orders.service", "MainPID")
    home = _show(vm, proxy, "Environment").split("MESH_HOME=", 1)[1].split()[0]
    assert sh(vm, f"find {home} -name svid.key | wc -l").strip() == "1"
    assert sh(vm, f"nsenter -t {app_pid} -m find {home} -mindepth 1 | wc -l").strip() == "0"
    vm_ip = sh(vm, "hostname -I").split()[0]

    sh(reg, "meshctl token create frontend > frontend.token")
    sh(reg, "MESH_HOME=/root/caller nohup meshctl proxy --service frontend "
            "--token-file /root/frontend.token --upstream orders:8080=127.0.0.1:18080 "
            "--inbound 127.0.0.1:15106 --admin 127.0.0.1:15100 --metrics 127.0.0.1:15190 "
            "> /root/caller.log 2>&1 &")  # fmt: skip
    answer = _until(lambda: _get(reg, "http://127.0.0.1:18080/echo"), "orders through mesh")
    assert "sa/frontend" in answer["headers"].get("x-forwarded-client-cert", "")
    status = json.loads(sh(reg, "meshctl status -o json"))
    [ep] = [e for e in status["endpoints"] if e["service"] == "orders"]
    assert ep["address"] == vm_ip

    # A crash: systemd restarts the proxy (Restart=always) with the same, spent, token.
    sh(vm, f"systemctl kill -s KILL {proxy}")
    _until(lambda: _show(vm, proxy, "NRestarts") == "1" and
           _show(vm, proxy, "ActiveState") == "active", "the proxy restarted")  # fmt: skip
    answer = _until(lambda: _get(reg, "http://127.0.0.1:18080/echo"), "orders after restart")
    assert answer["service"] == "orders"
    journal = sh(vm, f"journalctl -u {proxy} --no-pager")
    assert journal.count("joined as") == 1 and "renewed certificate" in journal, journal

    # The registry stops on SIGTERM with proxies connected, well within TimeoutStopSec.
    sh(reg, "systemctl stop meshctl-registry.service")
    assert _show(reg, "meshctl-registry.service", "Result") == "success"
