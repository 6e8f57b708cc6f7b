"""meshctl's listener ports come from below the kernel's ephemeral range, where no outgoing
connection can take them between the choice and the proxy's bind."""

from __future__ import annotations

import socket

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
