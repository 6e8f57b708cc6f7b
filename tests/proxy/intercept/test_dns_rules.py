"""DNS capture rules (InterceptConfig.dns_port): what they add, in which order (pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from proxy.intercept.rules import (
    MESH_DNS,
    InterceptConfig,
    is_installed,
    parse_nat,
    render_remove,
    render_restore,
)
from tests.proxy.intercept.support import DOCKER_DNS_SAVE, REPO
from tests.proxy.intercept.test_rules import TYPICAL

WITH_DNS = replace(TYPICAL, dns_port=15053)

# Kept verbatim in docs/interception.md ("DNS capture"): change both together.
DNS_LINES = """\
:MESH_DNS - [0:0]
-A MESH_DNS -p tcp ! --syn -j RETURN
-A MESH_DNS -m owner --uid-owner 1337 -j RETURN
-A MESH_DNS -m owner --gid-owner 1337 -j RETURN
-A MESH_DNS -p udp -j REDIRECT --to-ports 15053
-A MESH_DNS -p tcp -j REDIRECT --to-ports 15053
-A OUTPUT -p udp --dport 53 -j MESH_DNS
-A OUTPUT -p tcp --dport 53 -j MESH_DNS
"""


def _installed(cfg: InterceptConfig) -> str:
    """A dump as iptables-save would show `cfg` installed over Docker's DNS rules."""
    text = render_restore(cfg)
    table = parse_nat(text)
    head, tail = DOCKER_DNS_SAVE.split("COMMIT", 1)
    return (head + "".join(f":{c} - [0:0]\n" for c in table.chains)
            + "".join(r + "\n" for r in table.rules) + "COMMIT" + tail)


def test_dns_capture_adds_exactly_these_lines() -> None:
    without = render_restore(TYPICAL).splitlines()
    added = [line for line in render_restore(WITH_DNS).splitlines() if line not in without]
    assert added == DNS_LINES.splitlines()
    assert MESH_DNS not in render_restore(TYPICAL)  # off: the rules are as before


def test_dns_jumps_come_before_the_tcp_capture() -> None:
    # TCP 53 would otherwise go to MESH_OUTPUT and be sent to 15001 (or RETURNed on lo).
    rules = parse_nat(render_restore(WITH_DNS)).rules
    output = [r for r in rules if r.startswith("-A OUTPUT")]
    assert output == ["-A OUTPUT -p udp --dport 53 -j MESH_DNS",
                      "-A OUTPUT -p tcp --dport 53 -j MESH_DNS",
                      "-A OUTPUT -p tcp -j MESH_OUTPUT"]  # fmt: skip
    dns = [r for r in rules if r.startswith(f"-A {MESH_DNS}")]
    # After the rule for connections open before the install, the proxy's own queries leave.
    assert dns.index("-A MESH_DNS -m owner --uid-owner 1337 -j RETURN") == 1


def test_turning_dns_off_drops_its_chain_and_jumps_in_the_same_transaction() -> None:
    current = _installed(WITH_DNS)
    assert is_installed(current) and is_installed(_installed(TYPICAL))
    text = render_restore(TYPICAL, replacing=current)
    assert "-D OUTPUT -p udp --dport 53 -j MESH_DNS" in text
    assert "-D OUTPUT -p tcp --dport 53 -j MESH_DNS" in text
    assert text.splitlines()[-2] == f"-X {MESH_DNS}"
    assert not any(line.startswith(f"-A {MESH_DNS}") for line in text.splitlines())
    removal = render_remove(current)
    assert f"-X {MESH_DNS}" in removal and "-j MESH_DNS" in removal


@pytest.mark.parametrize(("port", "message"), [
    (0, "dns_port: 0 is not a port"), (70000, "dns_port: 70000"),
    (15001, "also the proxy's outbound or inbound port"),
])  # fmt: skip
def test_invalid_dns_port_is_refused(port: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(TYPICAL, dns_port=port)


def test_the_docs_show_the_dns_lines_verbatim() -> None:
    docs = (REPO / "docs" / "interception.md").read_text()
    assert f"```\n{DNS_LINES}```" in docs


@pytest.mark.root
def test_real_iptables_take_dns_capture_on_off_and_away(bare_netns: str) -> None:
    from proxy.intercept import iptables
    from tests.proxy.intercept.support import normalized

    before = iptables.dump(bare_netns)
    iptables.install(WITH_DNS, bare_netns)
    on = parse_nat(iptables.dump(bare_netns))
    assert MESH_DNS in on.chains and iptables.installed(bare_netns)
    jumps = [r for r in on.rules if r.startswith("-A OUTPUT")]
    assert len(jumps) == 3 and jumps[-1] == "-A OUTPUT -p tcp -j MESH_OUTPUT"
    iptables.install(WITH_DNS, bare_netns)  # idempotent
    assert parse_nat(iptables.dump(bare_netns)).rules == on.rules
    iptables.install(TYPICAL, bare_netns)  # off: chain and jumps gone
    off = parse_nat(iptables.dump(bare_netns))
    assert MESH_DNS not in off.chains and not any("MESH_DNS" in r for r in off.rules)
    iptables.install(WITH_DNS, bare_netns)
    iptables.remove(bare_netns)
    assert normalized(iptables.dump(bare_netns)) == normalized(before)
