"""Which undeclared ports the inbound proxy relays to its app (Istio's inbound passthrough)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.main import ProxyOptions, inbound_passthrough


def _opts(**kw: Any) -> ProxyOptions:
    return ProxyOptions(
        registry_url="https://127.0.0.1:15012", ca_file=Path("/nonexistent"), token="",
        service="orders", home=Path("/nonexistent"), **kw,
    )  # fmt: skip


def _passes(opts: ProxyOptions, port: int) -> bool:
    return inbound_passthrough(opts, port)


TRANSPARENT = _opts(outbound=("127.0.0.1", 15001))


@pytest.mark.parametrize("port", [9000, 8081, 22, 5432])
def test_an_undeclared_app_port_is_relayed_in_transparent_mode(port: int) -> None:
    assert _passes(TRANSPARENT, port)


@pytest.mark.parametrize("port", [15000, 15001, 15006, 15090])
def test_the_proxys_own_ports_never_are(port: int) -> None:
    # A peer naming the admin port in its SNI must not reach the admin API, nor 15001/15006
    # loop back into the proxy.
    assert not _passes(TRANSPARENT, port)


def test_own_ports_follow_the_options() -> None:
    opts = _opts(outbound=("127.0.0.1", 16001), inbound=("0.0.0.0", 16006),
                 admin=("127.0.0.1", 16000), metrics=("0.0.0.0", 16090))  # fmt: skip
    assert not any(_passes(opts, p) for p in (16000, 16001, 16006, 16090))
    assert _passes(opts, 15000)
    # The published listener (docker runtime) and the DNS port are the proxy's too.
    more = _opts(outbound=("127.0.0.1", 15001), published=("0.0.0.0", 15007),
                 dns=("127.0.0.1", 15053))  # fmt: skip
    assert not _passes(more, 15007) and not _passes(more, 15053)
    assert _passes(TRANSPARENT, 15007) and _passes(TRANSPARENT, 15053)


def test_explicit_mode_relays_nothing_undeclared() -> None:
    # There 127.0.0.1 is the host's loopback: every other local service, not the app's.
    assert not _passes(_opts(), 9000)
