"""App health under `meshctl up` (local runtime, namespaces, iptables interception): the
proxy's HTTP probe reaches its app through the interception rules, and an endpoint whose
readiness path fails leaves the pool while its sibling serves every request."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from tests.commands.support import copy_example, free_port, mesh_home, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

# shop.py answers /status/503 with 503 and /healthz with 200 (examples/compose/apps/shop.py).
PROBES = {
    "v1": "        readinessProbe:\n          httpGet: {path: /healthz, port: http}\n"
          "          periodSeconds: 0.2\n",
    "v2": "        readinessProbe:\n          httpGet: {path: /status/503, port: 8080}\n"
          "          periodSeconds: 0.2\n",
}
# All of orders to one pool (no subsets), no retries: a request sent to v2 would fail.
ORDERS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders}
spec:
  hosts: [orders]
  http:
    - retries: {attempts: 0}
      route:
        - destination: {host: orders}
"""
COUNT = """
import collections, json, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
seen = collections.Counter()
for _ in range(30):
    try:
        with opener.open("http://orders:8080/", timeout=5) as r:
            seen[json.loads(r.read())["version"]] += 1
    except Exception as exc:
        seen[type(exc).__name__] += 1
print(json.dumps(seen))
"""


def test_failing_readiness_path_leaves_the_pool() -> None:
    # The example outside MESH_HOME (root:1337 0710 under `up`): its apps run as `nobody`,
    # who must enter their working directory.
    where = Path(tempfile.mkdtemp(prefix="meshctl-example-"))
    os.chmod(where, 0o755)
    try:
        with mesh_home() as cli:
            config = copy_example(where / "example")
            text = (config / "mesh.yaml").read_text()
            for version, probe in PROBES.items():
                line = (f'        command: ["python3", "apps/shop.py", "--service", "orders", '
                        f'"--version", "{version}"]\n')
                assert text.count(line) == 1
                text = text.replace(line, line + probe)
            (config / "mesh.yaml").write_text(text)
            (config / "orders.yaml").write_text(ORDERS)
            up = cli.json("up", str(config), "--runtime", "local", "--timeout", "30",
                          "--monitor-port", str(free_port()))
            prefix = cli.env["MESH_NETNS_PREFIX"]
            front = next(w["netns"] for w in up["workloads"]
                         if w["name"].removeprefix(prefix).startswith("frontend"))

            def orders() -> dict[str, dict[str, str]]:
                eps = cli.json("status")["endpoints"]
                return {e["labels"]["version"]: e for e in eps if e["service"] == "orders"}

            wait_until(lambda: orders()["v2"]["health"] == "unhealthy", timeout=60,
                       what="orders v2 unhealthy")
            why = "app: HTTP 503 from GET http://127.0.0.1:8080/status/503 (3 failures)"
            assert orders()["v2"]["reason"] == why  # an HTTP answer: the probe reached the app
            assert orders()["v1"]["health"] == "healthy"

            def versions() -> Counter[str]:
                done = subprocess.run(["ip", "netns", "exec", front, "python3", "-c", COUNT],
                                      capture_output=True, text=True, timeout=120, check=True)
                return Counter(json.loads(done.stdout))

            # Once the frontend's proxy has the new catalog, every request goes to v1.
            wait_until(lambda: versions() == Counter({"v1": 30}), timeout=30,
                       what="all of frontend's calls answered by orders v1")
    finally:
        shutil.rmtree(where, ignore_errors=True)
