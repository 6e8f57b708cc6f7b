"""A fresh key and its CSR, made by a short-lived child process (`python -m proxy.control.keygen`).

Generating an EC key and signing a CSR needs `cryptography`, whose import would stay in
the proxy's RSS (~10 MiB) for its whole life, for a job it does once per renewal. The
child imports it, writes the key where the proxy keeps its SVID's (0600, atomically),
prints the CSR and exits; the key never leaves this host's proxy directory.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from meshctl.state import ensure_dir

TIMEOUT_S = 30.0
_ROOT = Path(__file__).resolve().parents[2]  # where `proxy` and `registry` are importable


async def new_key_and_csr(key_file: Path, identity: str, timeout: float = TIMEOUT_S) -> bytes:
    """Write a new key to `key_file` and return a PEM CSR for `identity` signed by it.
    OSError (or TimeoutError) when the child fails."""
    ensure_dir(key_file.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.control.keygen", str(key_file), identity,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0 or not out.startswith(b"-----BEGIN CERTIFICATE REQUEST-----"):
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise OSError(f"key generation failed (exit {proc.returncode}): {last[0]}")
    return out


def _main(key_file: str, identity: str) -> None:
    from meshctl.state import atomic_write
    from registry.ca.csr import build_csr, generate_key, key_pem
    from registry.ca.spiffe import SpiffeId

    key = generate_key()
    csr = build_csr(key, SpiffeId.parse(identity))
    atomic_write(Path(key_file), key_pem(key), mode=0o600)
    sys.stdout.buffer.write(csr)


if __name__ == "__main__":
    _main(*sys.argv[1:3])
