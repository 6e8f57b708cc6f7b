"""A fresh key and its CSR, made by a short-lived child process (`python -m proxy.control.keygen`).

Generating an EC key and signing a CSR needs `cryptography`, whose import would stay in
the proxy's RSS (~10 MiB) for its whole life, for a job it does once per renewal. The
child imports it, writes the key where the proxy keeps its SVID's (0600, atomically),
prints the CSR and exits; the key never leaves this host's proxy directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from common.state import ensure_dir

log = logging.getLogger("meshctl.proxy.control")
TIMEOUT_S = 30.0
_ROOT = Path(__file__).resolve().parents[2]  # where `proxy` and `registry` are importable


async def new_key_and_csr(key_file: Path, identity: str, timeout: float = TIMEOUT_S) -> bytes:
    """Write a new key to `key_file` and return a PEM CSR for `identity` signed by it.
    OSError (or TimeoutError) when the child fails."""
    ensure_dir(key_file.parent)
    env = dict(os.environ)
    # The child imports what this process imports, whichever binary runs it (below).
    path = [str(_ROOT), *(p for p in sys.path if p), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    argv = ("-m", "proxy.control.keygen", str(key_file), identity)
    # sys.executable may be a venv link this uid cannot follow (a venv under /root run as
    # uid 1337) although the interpreter it names runs: /proc/self/exe is that interpreter.
    for exe in (sys.executable, "/proc/self/exe"):
        try:
            proc = await asyncio.create_subprocess_exec(
                exe, *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )  # fmt: skip
            break
        except OSError as exc:
            log.info("cannot start %s for key generation (%s)", exe, exc)
    else:
        # No interpreter this process may start: make them here (cryptography then stays
        # in this process's memory, as it did before keygen ran in a child).
        log.warning("key generation in process: no Python interpreter can be started")
        return _generate(key_file, identity)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0 or not out.startswith(b"-----BEGIN CERTIFICATE REQUEST-----"):
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise OSError(f"key generation failed (exit {proc.returncode}): {last[0]}")
    return out


def _generate(key_file: Path, identity: str) -> bytes:
    from common.state import atomic_write
    from registry.ca.csr import build_csr, generate_key, key_pem
    from registry.ca.spiffe import SpiffeId

    key = generate_key()
    csr = build_csr(key, SpiffeId.parse(identity))
    atomic_write(key_file, key_pem(key), mode=0o600)
    return csr


def _main(key_file: str, identity: str) -> None:
    sys.stdout.buffer.write(_generate(Path(key_file), identity))


if __name__ == "__main__":
    _main(*sys.argv[1:3])
