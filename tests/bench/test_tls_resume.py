"""bench.tls_resume runs, and its resumed row does resume (else it measures nothing)."""

from __future__ import annotations

import asyncio

from bench import tls_resume


def test_full_and_resumed_rows() -> None:
    server_ctx, client_ctx = tls_resume._contexts()
    cpu, reused = asyncio.run(tls_resume._run(server_ctx, client_ctx, 4, False))
    assert cpu > 0 and reused == 0
    cpu, reused = asyncio.run(tls_resume._run(server_ctx, client_ctx, 4, True))
    assert cpu > 0 and reused == 3  # every connection after the first
