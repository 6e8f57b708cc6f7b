"""Benchmark: X.509-SVIDs issued per second by the CA on one core (CSR parse, verify, sign, PEM).

    python -m bench.ca_issuance [--count N]

CSRs (and their keys) are generated before the clock starts: that is the proxies' work.
The timed loop is exactly what the registry does per join or renew: `sign_csr`, which
parses the CSR, checks its signature and key, builds the leaf from the template, signs it
and encodes it as PEM. CPU time comes from time.process_time; the process is pinned to
one CPU where the OS allows it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from registry.ca.authority import CertificateAuthority
from registry.ca.csr import build_csr, generate_key
from registry.ca.spiffe import SpiffeId


def run(count: int) -> dict[str, float | int]:
    """Issue `count` SVIDs and return the figures."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory() as tmp:
        ca = CertificateAuthority.load_or_create(Path(tmp) / "ca", "bench.local")
        ids = [SpiffeId.for_service("bench.local", "default", f"svc-{i}") for i in range(count)]
        csrs = [build_csr(generate_key(), ident) for ident in ids]
        ca.sign_csr(csrs[0], ids[0])  # warm-up: first-call imports and caches
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for csr, ident in zip(csrs, ids, strict=True):
            ca.sign_csr(csr, ident)
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
    return {
        "svids_per_s": round(count / cpu, 1),
        "count": count,
        "cpu_s": round(cpu, 4),
        "wall_s": round(wall, 4),
        "us_per_svid": round(cpu / count * 1e6, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=5000, help="SVIDs to issue (default 5000)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    print(json.dumps(run(args.count)))


if __name__ == "__main__":
    main()
