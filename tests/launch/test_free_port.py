"""meshctl's listener ports come from below the kernel's ephemeral range, where no outgoing
connection can take them between the choice and the proxy's bind."""

from __future__ import annotations

import socket

import pytest

from meshctl.launch.local import _ephemeral_floor, free_port


def test_ports_are_free_and_below_the_ephemeral_range() -> None:
    floor = _ephemeral_floor()
    ports = {free_port() for _ in range(20)}
    assert len(ports) > 1  # chosen at random, not one fixed port
    for port in ports:
        assert 10000 <= port < floor
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # free: a listener can take it


def test_a_plans_allocator_never_repeats_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # free_port answers "free now", not "reserved": within one plan (~60 allocations in
    # explicit mode) it may answer the same port twice, and the second proxy to bind it
    # dies with EADDRINUSE. The plan's allocator hands out each port once, never `taken`.
    from meshctl.launch import local

    answers = iter([20001, 20002, 20001, 20003, 20002, 20004, 20005])
    monkeypatch.setattr(local, "free_port", lambda host="127.0.0.1": next(answers))
    alloc = local.distinct_ports(taken=[20003])
    assert [alloc(), alloc(), alloc()] == [20001, 20002, 20004]
