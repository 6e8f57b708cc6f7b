"""The gateway hop side by side with HAProxy as an edge proxy, same machine, same run
(issue 20): `python -m bench.gateway [--rate 1000] [--seconds 5] [--reps 1]`.

    direct   wrk -> nginx (plain HTTP: what "added" latency is measured against)
    gateway  wrk -> https -> meshctl gateway proxy (TLS terminated, a Gateway + a
             VirtualService) -> mTLS (SVIDs) -> the upstream's sidecar -> nginx
    haproxy  wrk -> https -> HAProxy A (TLS terminated) -> TLS 1.3 with client
             certificates -> HAProxy B -> nginx

Every hop on 127.0.0.1; pinned as bench/systems.py pins (wrk, nginx and the registry on one
core, both proxy hops on the other); the same 1 kB nginx body; the client's TLS is wrk's
(one handshake per connection, then keep-alive). Fixed rate (open loop, bench/load.py),
the systems interleaved once per repetition. Printed: one JSON document, and a summary line
per figure: CPU per 1000 requests of both hops (gateway / HAProxy) and p99 added over
direct at the rate.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import load
from bench.procs import Proc, free_port, wait_until
from bench.systems import MESH_YAML, REPO, Lab, System, _listening, haproxy_configs, http_ok, settle

HOST = "bench.example.com"
# The Gateway and the VirtualService take any host ("*"): wrk resolves the URL's name itself
# (no /etc/hosts entry of ours), so it connects to 127.0.0.1 with that as SNI and Host.
GATEWAY_YAML = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bench}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
    - port: {{number: {port}, name: https, protocol: HTTPS}}
      hosts: ["*"]
      tls: {{mode: SIMPLE, credentialName: bench-cert}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bench}}
spec:
  hosts: ["*"]
  gateways: [bench]
  http:
    - route:
        - destination: {{host: upstream}}
"""


def _gateway(lab: Lab, url_host: str) -> System:
    """A registry, the upstream's sidecar in front of nginx, and a gateway proxy serving a
    Gateway on an HTTPS port with a certificate for `url_host`."""
    sys.path.insert(0, str(REPO))
    from tests.certs import write_self_signed

    config = lab.dir / "gateway-config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH_YAML)
    write_self_signed(config, "bench-cert", url_host)
    port = free_port()
    (config / "gateway.yaml").write_text(GATEWAY_YAML.format(port=port))
    mesh = lab.registry(config)
    try:
        b = mesh.proxy("upstream", "v1", app_port=lab.nginx_port)
        a = mesh.proxy("ingressgateway", None, extra=(
            "--gateway", "--gateway-address", "127.0.0.1", "--credentials", str(config)))
    finally:
        lab._adopt(mesh, lab.proxy_core)
    system = System("gateway", f"https://{url_host}:{port}/")
    system.proxies = {"A": lab._wrap(a["proc"], "gateway-A"),
                      "B": lab._wrap(b["proc"], "gateway-B")}
    return system


def _haproxy(lab: Lab) -> System:
    """HAProxy as the edge: A terminates TLS (the throwaway server certificate) and talks TLS
    1.3 with a client certificate to B, which verifies it (bench/systems.py's TLS hop)."""
    certs = lab._certs()
    port_a, port_b = free_port(), free_port()
    a, b = haproxy_configs("http", True, port_a, port_b, lab.nginx_port, certs)
    bind = f"bind 127.0.0.1:{port_a}\n"
    assert a.count(bind) == 1, a
    a = a.replace(bind, f"bind 127.0.0.1:{port_a} ssl crt {certs['server']} "
                        "ssl-min-ver TLSv1.3\n")
    system = System("haproxy", f"https://127.0.0.1:{port_a}/")
    for role, text, port in (("B", b, port_b), ("A", a, port_a)):
        cfg = lab.dir / f"haproxy-edge-{role}.cfg"
        cfg.write_text(text)
        proc = lab._start(Proc(f"haproxy-edge-{role}", ["haproxy", "-db", "-f", str(cfg)],
                               lab.dir / f"haproxy-edge-{role}.log", core=lab.proxy_core))
        wait_until(functools.partial(_listening, port, proc), what=f"haproxy edge {role}")
        system.proxies[role] = proc
    return system


def _curl_ok(url: str, host: str) -> bool:
    """A first 200 with nginx's body through an https system (wrk checks no certificate
    either: the figures are the proxies', not the client's trust)."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    out = subprocess.run(["curl", "-sk", "--noproxy", "*", "--max-time", "3", "--resolve",
                          f"{host}:{port}:127.0.0.1", "-o", "/dev/null", "-w", "%{http_code}",
                          url], capture_output=True, text=True, timeout=10, check=False)
    return out.stdout == "200"


def run(rate: int, seconds: float, reps: int, connections: int = 16) -> dict[str, Any]:
    with Lab(["direct"]) as lab:
        lab.start()  # nginx and direct
        systems = {"direct": lab.systems["direct"], "haproxy": _haproxy(lab),
                   "gateway": _gateway(lab, HOST)}
        wait_until(functools.partial(http_ok, systems["direct"].url), what="direct")
        for name in ("haproxy", "gateway"):
            wait_until(functools.partial(_curl_ok, systems[name].url, HOST), timeout=30,
                       what=f"{name}: first 200")
        results: dict[str, list[dict[str, Any]]] = {n: [] for n in systems}
        for _ in range(reps):
            for name, system in systems.items():
                url = system.url
                if name == "gateway":  # wrk resolves the name itself: /etc/hosts is not ours
                    url = url.replace(HOST, "127.0.0.1")
                load.fixed_rate(url, lab.load_core, rate, connections, 1)  # warm-up
                settle(0.3)
                results[name].append(load.measured(
                    functools.partial(load.fixed_rate, url, lab.load_core, rate, connections,
                                      seconds), system.proxies, lab.proxy_core))
    out = summarize(results, rate, seconds, connections)
    core = subprocess.run([sys.executable, "-m", "proxy.compiled", "status"], cwd=REPO,
                          capture_output=True, text=True, timeout=30, check=False)
    out["proxy_core"] = core.stdout.strip()  # the gateway and the sidecar run this core
    return out


def summarize(results: dict[str, list[dict[str, Any]]], rate: int, seconds: float,
              connections: int) -> dict[str, Any]:
    def med(name: str, f: Any) -> float:
        return float(statistics.median(f(r) for r in results[name]))

    def p99_ms(r: dict[str, Any]) -> float:
        return float(r["corrected_us"]["p99"]) / 1000

    def cpu_per_1k_ms(r: dict[str, Any]) -> float:
        return 1000 * sum(p["cpu_s_per_1k"] or 0 for p in r["proxies"].values())

    out: dict[str, Any] = {"rate": rate, "seconds": seconds, "connections": connections,
                           "runs": results, "summary": {}}
    direct_p99 = med("direct", p99_ms)
    for name in ("gateway", "haproxy"):
        rows = results[name]
        added = [p99_ms(r) - p99_ms(d) for r, d in zip(rows, results["direct"], strict=True)]
        out["summary"][name] = {
            "p99_ms": round(med(name, p99_ms), 3),
            "p99_added_ms": round(statistics.median(added), 3),
            "cpu_ms_per_1k_both_hops": round(med(name, cpu_per_1k_ms), 1),
            "achieved_rps": round(med(name, lambda r: float(r["rps"])), 1),
            "non200_or_errors": sum(int(r["non200"]) + int(r["errors"]) for r in rows),
            "noise_share": round(med(name, lambda r: float(r.get("foreign_core_share", 0))), 3),
        }
    s = out["summary"]
    out["summary"]["direct_p99_ms"] = round(direct_p99, 3)
    out["summary"]["cpu_ratio_gateway_over_haproxy"] = round(
        s["gateway"]["cpu_ms_per_1k_both_hops"] / s["haproxy"]["cpu_ms_per_1k_both_hops"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=1000, help="requests/s (default 1000)")
    ap.add_argument("--seconds", type=float, default=5, help="per load (default 5)")
    ap.add_argument("--reps", type=int, default=1, help="repetitions, interleaved (default 1)")
    ap.add_argument("--out", type=Path, help="write the JSON here too")
    args = ap.parse_args(argv)
    if not 1 <= args.reps <= 10 or not 1 <= args.seconds <= 60 or not 1 <= args.rate <= 20000:
        ap.error("--reps 1..10, --seconds 1..60, --rate 1..20000 (bounded: a shared machine)")
    result = run(args.rate, args.seconds, args.reps)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    s = result["summary"]
    print(text)
    print(f"CPU per 1000 requests, both hops: gateway {s['gateway']['cpu_ms_per_1k_both_hops']} "
          f"ms, HAProxy {s['haproxy']['cpu_ms_per_1k_both_hops']} ms: "
          f"{s['cpu_ratio_gateway_over_haproxy']}x", file=sys.stderr)
    print(f"proxy core: {result['proxy_core']}", file=sys.stderr)
    print(f"p99 added over direct at {args.rate} req/s: gateway "
          f"{s['gateway']['p99_added_ms']} ms, HAProxy {s['haproxy']['p99_added_ms']} ms",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
