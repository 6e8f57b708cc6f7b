"""End to end with a real dockerd, as root: `meshctl up` on the example's docker-compose.yml
(the image built locally with debootstrap), calls by name from inside the frontend container
through both proxies, the 90/10 split and `route set-weight` to 0/100, a container started
later meshed (and unmeshed when it stops), and `meshctl down` leaving nothing behind."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshctl.launch.compose import PROJECT_LABEL, compose_command
from meshctl.launch.image import ensure_image
from tests.commands.support import (
    EXAMPLE,
    REPO,
    Cli,
    copy_example,
    free_port,
    mesh_home,
    wait_until,
)
from tests.example import repoint_gateway

# Longer than the default per-test timeout (pyproject.toml): the module's first test builds
# the example image (debootstrap) and starts the compose project.
pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]

# Inside the frontend container (stdlib only: the image has python3 and nothing else).
CALL = """
import collections, json, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
url, count = sys.argv[1], int(sys.argv[2])
if count == 0:
    print(opener.open(url, timeout=5).read().decode())
else:
    seen = collections.Counter()
    for _ in range(count):
        with opener.open(url, timeout=5) as r:
            seen[json.loads(r.read())["version"]] += 1
    print(json.dumps(seen))
"""


@dataclass
class Mesh:
    cli: Cli
    up: dict[str, Any]
    project: str
    compose_file: Path

    def container(self, compose_service: str) -> str:
        return next(w["name"] for w in self.up["workloads"]
                    if w["name"].startswith(f"{self.project}_{compose_service}_")
                    or w["name"].startswith(f"{self.project}-{compose_service}-"))  # fmt: skip

    def call(self, url: str, count: int = 0, timeout: float = 60) -> str:
        done = subprocess.run(
            ["docker", "exec", self.container("frontend"), "python3", "-c", CALL, url, str(count)],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def status(self) -> dict[str, Any]:
        return dict(self.cli.json("status"))

    def compose(self, *args: str) -> None:
        argv = [*compose_command(), "-p", self.project, "-f", str(self.compose_file), *args]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)


def _docker(*args: str) -> list[str]:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


def _example_copy(dest: Path) -> Path:
    """The example in a directory of its own, so `route set-weight` edits a copy.

    The compose file is the example's, byte for byte, except the one host port it
    publishes (127.0.0.1:18080): here an ephemeral one, so two runs cannot collide.
    """
    repoint_gateway(copy_example(dest), free_port(), free_port())  # the same reason
    text = (EXAMPLE / "docker-compose.yml").read_text()
    assert '"127.0.0.1:18080:8080"' in text
    compose = dest / "docker-compose.yml"
    compose.write_text(text.replace('"127.0.0.1:18080:8080"', '"127.0.0.1::8080"'))
    return compose


@pytest.fixture(scope="session")
def example_image() -> str:
    """meshctl-example:latest, built once (debootstrap ~60 s, then cached in /var/cache)."""
    return ensure_image().tag


@pytest.fixture(scope="module")
def mesh(example_image: str) -> Iterator[Mesh]:
    project = f"mt{secrets.token_hex(3)}"
    workdir = Path(tempfile.mkdtemp(prefix="meshctl-docker-", dir="/tmp"))
    compose = _example_copy(workdir / "shop")
    try:
        with mesh_home() as cli:
            up = cli.json("up", str(compose), "--runtime", "docker", "--project", project,
                          "--timeout", "60", "--monitor-port", str(free_port()))  # fmt: skip
            yield Mesh(cli, up, project, compose)
    finally:
        # Whatever a failed test left: the project's containers and networks.
        for cid in _docker("ps", "-aq", "--filter", f"label={PROJECT_LABEL}={project}"):
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        for nid in _docker("network", "ls", "-q", "--filter", f"label={PROJECT_LABEL}={project}"):
            subprocess.run(["docker", "network", "rm", nid], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


def test_up_meshes_every_container_of_the_project(mesh: Mesh) -> None:
    assert mesh.up["runtime"] == "docker" and mesh.up["project"] == mesh.project
    services = sorted((w["service"], w["version"]) for w in mesh.up["workloads"])
    assert services == [("frontend", "v1"), ("inventory", "v1"), ("orders", "v1"),
                        ("orders", "v2"), ("payments", "v1")]  # fmt: skip
    running = _docker("ps", "--format", "{{.Names}}", "--filter",
                      f"label={PROJECT_LABEL}={mesh.project}")  # fmt: skip
    assert sorted(running) == sorted(w["name"] for w in mesh.up["workloads"])
    print(f"up: {mesh.up['elapsed_s']:.2f}s (compose up included)")


def test_calls_by_name_go_through_both_proxies(mesh: Mesh) -> None:
    answer = json.loads(mesh.call("http://orders:8080/"))
    assert answer["service"] == "orders"
    assert answer["calls"]["payments"]["service"] == "payments"  # orders -> payments, meshed
    echo = json.loads(mesh.call("http://orders:8080/echo"))
    xfcc = echo["headers"]["x-forwarded-client-cert"]
    assert "URI=spiffe://shop.local/ns/default/sa/frontend" in xfcc  # frontend's proxy, mTLS
    assert "By=spiffe://shop.local/ns/default/sa/orders" in xfcc  # orders' proxy verified it
    assert echo["client"].startswith("127.0.0.1:")  # the app was reached by its own proxy


def test_the_service_vip_works_too(mesh: Mesh) -> None:
    from common.vip import service_vip

    answer = json.loads(mesh.call(f"http://{service_vip('inventory')}:8080/"))
    assert answer["service"] == "inventory"


def test_authorization_policy_denies_frontend_to_payments(mesh: Mesh) -> None:
    code = "import urllib.request as u, urllib.error as e\ntry:\n u.urlopen('http://payments:8080/'"
    code += ", timeout=5)\nexcept e.HTTPError as x:\n print(x.code)"
    done = subprocess.run(["docker", "exec", mesh.container("frontend"), "python3", "-c", code],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.stdout.strip() == "403", done.stderr


def test_status_lists_every_container(mesh: Mesh) -> None:
    st = mesh.status()
    assert st["runtime"] == "docker" and st["compose_project"] == mesh.project
    names = sorted(w["name"] for w in mesh.up["workloads"])
    assert sorted(e["id"] for e in st["endpoints"]) == names
    assert all(e["health"] == "healthy" for e in st["endpoints"])
    assert all(p["current"] and p["connected"] for p in st["proxies"])


def test_weights_90_10_then_set_weight_moves_everything_to_v2(mesh: Mesh) -> None:
    assert Counter(json.loads(mesh.call("http://orders:8080/", 100))) == Counter(v1=90, v2=10)
    done = subprocess.run(
        [sys.executable, "-m", "meshctl", "route", "set-weight", "orders", "v1=0", "v2=100"],
        env=mesh.cli.env, cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The outcome, not its speed (bench/push_latency.py measures how fast a change lands).
    wait_until(lambda: json.loads(mesh.call("http://orders:8080/", 20)) == {"v2": 20}, 30,
               "every request on v2")  # fmt: skip


def test_a_killed_proxy_is_restarted_and_its_rules_stay(mesh: Mesh) -> None:
    from proxy.intercept import iptables

    name = mesh.container("frontend")
    state = json.loads((mesh.cli.home / "state.json").read_text())["workloads"][name]
    old = state["proxy_pid"]
    os.kill(old, signal.SIGKILL)
    assert iptables.installed(state["app_pid"])  # fail closed meanwhile, never around the mesh

    def new_pid() -> int | None:
        pid = json.loads((mesh.cli.home / "state.json").read_text())["workloads"][name]["proxy_pid"]
        return pid if pid and pid != old else None

    wait_until(new_pid, 3, "a new proxy")
    wait_until(lambda: json.loads(mesh.call("http://orders:8080/"))["service"] == "orders", 15,
               "traffic again")  # fmt: skip


def test_a_container_started_later_is_meshed_and_leaves_when_stopped(mesh: Mesh) -> None:
    mesh.compose("up", "-d", "--no-recreate", "--scale", "orders-v2=2")
    new = next(n for n in _docker("ps", "--format", "{{.Names}}", "--filter",
                                  f"label={PROJECT_LABEL}={mesh.project}")
               if n not in {w["name"] for w in mesh.up["workloads"]})  # fmt: skip

    def endpoint() -> bool:
        eps = {e["id"]: e for e in mesh.status()["endpoints"]}
        return new in eps and eps[new]["labels"]["version"] == "v2"

    wait_until(endpoint, 15, f"{new} in the catalog")
    state = json.loads((mesh.cli.home / "state.json").read_text())
    proxy_pid = state["workloads"][new]["proxy_pid"]
    assert proxy_pid and Path(f"/proc/{proxy_pid}").exists()
    subprocess.run(["docker", "rm", "-f", new], check=True, capture_output=True)
    wait_until(lambda: new not in {e["id"] for e in mesh.status()["endpoints"]}, 10,
               f"{new} gone from the catalog")  # fmt: skip
    wait_until(lambda: not Path(f"/proc/{proxy_pid}").exists(), 5, "its proxy stopped")


# Inside a container: GET a URL, print [status, body] (["refused", why] when nothing answers).
GET = """
import json, sys, urllib.request, urllib.error
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=5) as r:
        print(json.dumps([r.status, r.read().decode()]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, e.read().decode()]))
except Exception as e:
    print(json.dumps(["refused", type(e).__name__]))
"""

REQUIRE_PRINCIPAL = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: frontend-mesh-only}
spec:
  selector: {matchLabels: {app: frontend}}
  action: ALLOW
  rules:
    - from:
        - source: {principals: ["*"]}
"""


def _host_get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _in(mesh: Mesh, compose_service: str, url: str, user: str = "") -> tuple[Any, str]:
    argv = ["docker", "exec", *(["-u", user] if user else []), mesh.container(compose_service),
            "python3", "-c", GET, url]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    status, body = json.loads(done.stdout)
    return status, body


def _published_url(mesh: Mesh) -> str:
    front = next(w for w in mesh.up["workloads"] if w["name"] == mesh.container("frontend"))
    assert [p["port"] for p in front["published"]] == [8080], front
    return f"http://{front['published'][0]['host']}"


def test_the_published_port_answers_as_without_the_mesh(mesh: Mesh) -> None:
    url = _published_url(mesh)
    # The app's own answer, asked on its loopback inside the container (never captured).
    direct = _in(mesh, "frontend", "http://127.0.0.1:8080/healthz")
    assert direct == (200, "ok\n")
    assert _host_get(url + "/healthz") == direct
    status, body = _host_get(url + "/")
    assert status == 200 and json.loads(body)["service"] == "frontend"
    # Counted as ingress by frontend's proxy: from "unknown", without mTLS.
    front = next(w for w in mesh.up["workloads"] if w["name"] == mesh.container("frontend"))
    metrics = _host_get(f"http://{front['address']}:15090/metrics")[1]
    ingress = [ln for ln in metrics.splitlines() if ln.startswith("istio_requests_total{")
               and 'source_workload="unknown"' in ln and 'response_code="200"' in ln]
    assert ingress and all('connection_security_policy="none"' in ln for ln in ingress), ingress


def test_the_gateway_on_the_host_reaches_the_containers(mesh: Mesh) -> None:
    """The example's Gateway, served by a gateway proxy `up` runs on the host: curl with SNI
    and the example's certificate -> gateway -> mTLS -> frontend's container -> orders."""
    (gw,) = mesh.up["gateways"]
    https = next(u for u in gw["urls"] if u.startswith("https://"))
    port = https.rsplit(":", 1)[1].strip("/")
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--noproxy", "*", "--cacert",
         str(mesh.compose_file.parent / "mesh" / "shop-cert.crt"), "--resolve",
         f"shop.example.com:{port}:127.0.0.1", https],
        capture_output=True, text=True, timeout=20)  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    assert (page["service"], page["calls"]["orders"]["service"]) == ("frontend", "orders")


def test_up_says_the_published_port_is_served_as_ingress(mesh: Mesh) -> None:
    done = mesh.cli.run("up", str(mesh.compose_file), "--runtime", "docker", "--project",
                        mesh.project, "--timeout", "60")  # fmt: skip
    host = _published_url(mesh).removeprefix("http://")
    line = (f"{mesh.container('frontend')}: published {host} -> 8080 served as ingress "
            "(unauthenticated; AuthorizationPolicy applies)")  # fmt: skip
    assert line in " ".join(done.stdout.split()), done.stdout  # rich wraps at 80 columns
    assert "nothing changed" in done.stdout


def test_mesh_plaintext_to_the_published_service_port_is_still_refused(mesh: Mesh) -> None:
    # orders' proxy uid is not captured outbound: its plaintext reaches frontend as is.
    assert _in(mesh, "orders-v1", "http://frontend:8080/", user="1337")[0] == "refused"
    assert _in(mesh, "orders-v1", "http://frontend:15007/", user="1337")[0] == "refused"
    # The same call through orders' proxy (mTLS) is served.
    assert _in(mesh, "orders-v1", "http://frontend:8080/healthz") == (200, "ok\n")


def test_authorization_policy_applies_to_the_published_port(mesh: Mesh) -> None:
    url = _published_url(mesh) + "/healthz"
    policy = mesh.compose_file.parent / "mesh" / "frontend-authz.yaml"
    policy.write_text(REQUIRE_PRINCIPAL)
    try:
        wait_until(lambda: _host_get(url)[0] == 403, 15, "the published request refused (RBAC)")
        assert _in(mesh, "orders-v1", "http://frontend:8080/healthz") == (200, "ok\n")
    finally:
        policy.unlink()
    wait_until(lambda: _host_get(url)[0] == 200, 15, "the published request served again")


def test_the_published_rule_is_in_frontend_namespace(mesh: Mesh) -> None:
    from proxy.intercept import iptables

    name = mesh.container("frontend")
    pid = json.loads((mesh.cli.home / "state.json").read_text())["workloads"][name]["app_pid"]
    gateway = _docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}",
                      name)[0]  # fmt: skip
    rule = f"-A MESH_INBOUND -s {gateway}/32 -p tcp -m tcp --dport 8080 -j REDIRECT"
    assert rule in iptables.dump(pid), iptables.dump(pid)


# In a container with Docker's default CAP_NET_RAW: ARP replies telling TARGET that GW is
# at this container's MAC, a few times over 2 s (Linux ignores updates within 1 s of the last).
SPOOF = """
import socket, struct, sys, time
gw, target_ip, target_mac = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3].replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
mine = s.getsockname()[4]
frame = (target_mac + mine + b"\\x08\\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mine
         + socket.inet_aton(gw) + target_mac + socket.inet_aton(target_ip))
for _ in range(8):
    s.send(frame)
    time.sleep(0.25)
print(mine.hex(":"))
"""


def _neigh(pid: int, ip: str) -> str:
    return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "neigh", "show", ip],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def _spoof(mesh: Mesh, victim: str, gateway: str) -> str:
    net = json.loads(_docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", victim)[0])
    v = next(iter(net.values()))
    done = subprocess.run(["docker", "exec", mesh.container("orders-v1"), "python3", "-c", SPOOF,
                           gateway, v["IPAddress"], v["MacAddress"]],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_sibling_cannot_take_the_gateway_address_by_arp(mesh: Mesh) -> None:
    state = json.loads((mesh.cli.home / "state.json").read_text())["workloads"]
    front, pay = mesh.container("frontend"), mesh.container("payments")
    gateway = _docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}",
                      front)[0]  # fmt: skip
    pinned = _neigh(state[front]["app_pid"], gateway)
    assert "PERMANENT" in pinned, pinned
    # The control: payments publishes nothing, its entry is ARP's, and the spoof takes it.
    pay_pid = state[pay]["app_pid"]
    before = _neigh(pay_pid, gateway)
    mac = _spoof(mesh, pay, gateway)
    try:
        assert f"lladdr {mac}" in _neigh(pay_pid, gateway), (before, mac)
    finally:  # payments' way to the registry back at once
        real = pinned.split("lladdr ")[1].split()[0]
        subprocess.run(["nsenter", f"--net=/proc/{pay_pid}/ns/net", "ip", "neigh", "replace",
                        gateway, "lladdr", real, "dev", "eth0", "nud", "reachable"], check=True)
    # frontend's entry is pinned: the same spoof changes nothing.
    assert _spoof(mesh, front, gateway) == mac
    assert _neigh(state[front]["app_pid"], gateway) == pinned
    # What `down` does for a container that keeps running, and `up`'s pin again.
    from meshctl.launch.docker import pin_gateway, unpin_gateway

    unpin_gateway(state[front]["app_pid"])
    assert "PERMANENT" not in _neigh(state[front]["app_pid"], gateway)
    pin_gateway(state[front]["app_pid"], gateway)
    assert _neigh(state[front]["app_pid"], gateway) == pinned


def test_down_leaves_nothing_behind(mesh: Mesh) -> None:
    report = mesh.cli.json("down")
    assert report["compose_project"] == mesh.project and report["registry_stopped"]
    label = f"label={PROJECT_LABEL}={mesh.project}"
    assert _docker("ps", "-aq", "--filter", label) == []
    assert _docker("network", "ls", "-q", "--filter", label) == []
    wait_until(lambda: mesh.cli.processes() == [], 5, "no process of the mesh")
    assert not (mesh.cli.home / "launch" / "owned.json").exists()
    assert not (mesh.cli.home / "state.json").exists()
    host = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert "MESH_" not in host  # published ports add nothing on the host
