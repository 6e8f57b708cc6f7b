"""The rendered iptables-restore text: rule order, exceptions, replace and remove (pure)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.intercept.rules import (
    CHAINS,
    MESH_DNS,
    InterceptConfig,
    is_installed,
    is_ours,
    parse_nat,
    render_remove,
    render_restore,
)
from tests.proxy.intercept.support import DOCKER_DNS_SAVE, REPO

TYPICAL = InterceptConfig(
    proxy_uid=1337,
    proxy_gid=1337,
    exclude_outbound_cidrs=("10.250.0.1/32",),
)

# Kept verbatim in docs/interception.md: change both together.
TYPICAL_TEXT = """\
*nat
:MESH_INBOUND - [0:0]
:MESH_REDIRECT - [0:0]
:MESH_IN_REDIRECT - [0:0]
:MESH_OUTPUT - [0:0]
-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A MESH_INBOUND -p tcp ! --syn -j RETURN
-A MESH_INBOUND -p tcp --dport 22 -j RETURN
-A MESH_INBOUND -p tcp --dport 15000 -j RETURN
-A MESH_INBOUND -p tcp --dport 15001 -j RETURN
-A MESH_INBOUND -p tcp --dport 15006 -j RETURN
-A MESH_INBOUND -p tcp --dport 15021 -j RETURN
-A MESH_INBOUND -p tcp --dport 15090 -j RETURN
-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT
-A MESH_OUTPUT -p tcp ! --syn -j RETURN
-A MESH_OUTPUT -o lo ! -d 127.0.0.0/8 -m owner --uid-owner 1337 -j MESH_INBOUND
-A MESH_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A MESH_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A MESH_OUTPUT -d 127.0.0.0/8 -j RETURN
-A MESH_OUTPUT -d 10.250.0.1/32 -j RETURN
-A MESH_OUTPUT -j MESH_REDIRECT
-A OUTPUT -p tcp -j MESH_OUTPUT
-A PREROUTING -p tcp -j MESH_INBOUND
COMMIT
"""

# The same config for ip6tables-restore: ::1 for loopback, the registry's IPv4 /32 left out.
# Also kept verbatim in docs/interception.md.
TYPICAL_V6_TEXT = TYPICAL_TEXT.replace("127.0.0.0/8", "::1/128").replace(
    "-A MESH_OUTPUT -d 10.250.0.1/32 -j RETURN\n", ""
)
assert TYPICAL_V6_TEXT.count("::1/128") == 2 and "10.250" not in TYPICAL_V6_TEXT


def saved(extra_chains: list[str], extra_rules: list[str], base: str = DOCKER_DNS_SAVE) -> str:
    """`base` as iptables-save would print it with our chains and rules added."""
    chains = "".join(f":{c} - [0:0]\n" for c in extra_chains)
    rules = "".join(r + "\n" for r in extra_rules)
    head, tail = base.split("-A OUTPUT", 1)
    return head + chains + rules + "-A OUTPUT" + tail


def test_typical_config_renders_exactly() -> None:
    assert render_restore(TYPICAL) == TYPICAL_TEXT
    assert render_restore(TYPICAL, family=4) == TYPICAL_TEXT


def test_ipv6_gets_the_same_interception() -> None:
    assert render_restore(TYPICAL, family=6) == TYPICAL_V6_TEXT


def test_cidrs_go_to_their_own_family() -> None:
    cfg = InterceptConfig(
        proxy_uid=7,
        exclude_outbound_cidrs=("10.0.0.5/32", "fd00::5/128"),
        include_outbound_cidrs=("10.0.0.0/8", "fd00::/8"),
    )
    v4, v6 = render_restore(cfg, family=4), render_restore(cfg, family=6)
    assert "-A MESH_OUTPUT -d 10.0.0.5/32 -j RETURN" in v4 and "fd00" not in v4
    assert "-A MESH_OUTPUT -d fd00::5/128 -j RETURN" in v6 and "10.0.0" not in v6
    assert "-A MESH_OUTPUT -d fd00::/8 -j MESH_REDIRECT" in v6


def test_every_inbound_port_is_captured_by_default_but_the_excluded() -> None:
    cfg = InterceptConfig(proxy_uid=1337, exclude_inbound_ports=(9100,))
    assert cfg.captures_all_inbound
    assert cfg.excluded_inbound() == [9100, 15001, 15006]
    inbound = [r for r in render_restore(cfg).splitlines() if r.startswith("-A MESH_INBOUND")]
    assert inbound == [
        "-A MESH_INBOUND -p tcp ! --syn -j RETURN",  # open before the install: left alone
        "-A MESH_INBOUND -p tcp --dport 9100 -j RETURN",
        "-A MESH_INBOUND -p tcp --dport 15001 -j RETURN",
        "-A MESH_INBOUND -p tcp --dport 15006 -j RETURN",
        "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT",
    ]


def test_listed_inbound_ports_capture_those_only() -> None:
    cfg = InterceptConfig(proxy_uid=1337, inbound_ports=(9090, 8080))
    assert cfg.captured_inbound() == [8080, 9090]
    inbound = [r for r in render_restore(cfg).splitlines() if r.startswith("-A MESH_INBOUND")]
    assert inbound[-2:] == [
        "-A MESH_INBOUND -p tcp --dport 8080 -j MESH_IN_REDIRECT",
        "-A MESH_INBOUND -p tcp --dport 9090 -j MESH_IN_REDIRECT",
    ]
    assert "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT" not in inbound


def test_only_our_chains_and_jumps() -> None:
    for line in render_restore(TYPICAL).splitlines():
        if line.startswith("-A"):
            assert is_ours(line), line
        assert "DOCKER" not in line
        assert not line.startswith(("-F", "-X", "-P", "-Z")), line  # no flush, no policy


def test_exceptions_come_before_the_redirect() -> None:
    rules = [r for r in TYPICAL_TEXT.splitlines() if r.startswith("-A MESH_OUTPUT")]
    assert rules[-1] == "-A MESH_OUTPUT -j MESH_REDIRECT"
    uid_return = rules.index("-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN")
    loopback = rules.index("-A MESH_OUTPUT -d 127.0.0.0/8 -j RETURN")
    assert uid_return < loopback < len(rules) - 1
    inbound = [r for r in TYPICAL_TEXT.splitlines() if r.startswith("-A MESH_INBOUND")]
    assert inbound[-1] == "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT"


def test_no_inbound_ports_means_no_prerouting_jump() -> None:
    text = render_restore(InterceptConfig(proxy_uid=1337, inbound_ports=()))
    assert "PREROUTING" not in text
    # Nothing jumps to the inbound chains (they exist, empty or nearly, for a uniform remove).
    assert not any(line.endswith(("-j MESH_INBOUND", "-j MESH_IN_REDIRECT"))
                   for line in text.splitlines())  # fmt: skip
    assert "--gid-owner" not in text
    assert "-A OUTPUT -p tcp -j MESH_OUTPUT" in text


def test_include_and_exclude_lists() -> None:
    cfg = InterceptConfig(
        proxy_uid=7,
        exclude_outbound_ports=(5432, 53, 53),
        exclude_outbound_cidrs=("192.168.0.0/16", "10.0.0.5"),
        include_outbound_cidrs=("10.0.0.0/8", "172.16.0.0/12"),
    )
    out = [r for r in render_restore(cfg).splitlines() if r.startswith("-A MESH_OUTPUT")]
    assert out[-6:] == [
        "-A MESH_OUTPUT -p tcp --dport 53 -j RETURN",
        "-A MESH_OUTPUT -p tcp --dport 5432 -j RETURN",
        "-A MESH_OUTPUT -d 192.168.0.0/16 -j RETURN",
        "-A MESH_OUTPUT -d 10.0.0.5/32 -j RETURN",
        "-A MESH_OUTPUT -d 10.0.0.0/8 -j MESH_REDIRECT",
        "-A MESH_OUTPUT -d 172.16.0.0/12 -j MESH_REDIRECT",
    ]


def test_excluded_inbound_port_wins_over_a_captured_one() -> None:
    cfg = InterceptConfig(proxy_uid=1, inbound_ports=(22, 8080))
    inbound = [r for r in render_restore(cfg).splitlines() if r.startswith("-A MESH_INBOUND")]
    assert "-A MESH_INBOUND -p tcp --dport 22 -j RETURN" in inbound
    assert "-A MESH_INBOUND -p tcp --dport 22 -j MESH_IN_REDIRECT" not in inbound
    assert cfg.captured_inbound() == [8080]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inbound_ports": (15006,)}, "proxy's own port 15006"),
        ({"inbound_ports": (15001,)}, "proxy's own port 15001"),
        ({"inbound_ports": (0,)}, "inbound_ports: 0 is not a TCP port"),
        ({"exclude_outbound_ports": (70000,)}, "70000 is not a TCP port"),
        ({"outbound_port": 15006}, "both 15006"),
        ({"proxy_uid": -1}, "proxy_uid: -1"),
        ({"proxy_gid": -5}, "proxy_gid: -5"),
        ({"exclude_outbound_cidrs": ("10.0.0.1/8",)}, "has host bits set"),
        ({"exclude_outbound_cidrs": ("registry",)}, "'registry' is not a CIDR"),
        ({"include_outbound_cidrs": ("fd00::1/8",)}, "has host bits set"),
        ({"inbound_ports": "all"}, 'neither "*" nor a port list'),
    ],
)
def test_invalid_config_says_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"proxy_uid": 1337, **kwargs}
    with pytest.raises(ValueError, match="invalid interception config") as info:
        InterceptConfig(**args)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_parse_nat_reads_chains_and_rules() -> None:
    table = parse_nat(DOCKER_DNS_SAVE + "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\nCOMMIT\n")
    assert table.chains == (
        "PREROUTING", "INPUT", "OUTPUT", "POSTROUTING", "DOCKER_OUTPUT", "DOCKER_POSTROUTING",
    )  # fmt: skip
    assert len(table.rules) == 6
    assert table.ours() == ()
    assert parse_nat("") == parse_nat("*filter\nCOMMIT\n")


def test_replacing_deletes_every_existing_jump_first() -> None:
    # A previous install with inbound capture, and a jump somebody duplicated by hand.
    current = saved(
        list(CHAINS),
        [
            "-A PREROUTING -p tcp -j MESH_INBOUND",
            "-A OUTPUT -p tcp -j MESH_OUTPUT",
            "-A OUTPUT -p tcp -j MESH_OUTPUT",
            "-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        ],
    )
    text = render_restore(InterceptConfig(proxy_uid=1337), replacing=current)
    lines = text.splitlines()
    assert lines.count("-D OUTPUT -p tcp -j MESH_OUTPUT") == 2
    assert lines.count("-D PREROUTING -p tcp -j MESH_INBOUND") == 1
    assert lines.count("-A OUTPUT -p tcp -j MESH_OUTPUT") == 1
    assert "DOCKER" not in text
    # Chains are declared (created or emptied) before any rule that refers to them.
    first_rule = next(i for i, line in enumerate(lines) if line.startswith(("-A", "-D")))
    assert all(line.startswith(":") for line in lines[1:first_rule])


def test_remove_deletes_ours_and_nothing_else() -> None:
    current = saved(list(CHAINS), [r for r in TYPICAL_TEXT.splitlines() if r.startswith("-A")])
    text = render_remove(current)
    assert text.splitlines() == [
        "*nat",
        *(f":{c} - [0:0]" for c in CHAINS),
        "-D OUTPUT -p tcp -j MESH_OUTPUT",
        "-D PREROUTING -p tcp -j MESH_INBOUND",
        *(f"-X {c}" for c in CHAINS),
        "COMMIT",
    ]


def test_remove_with_nothing_installed_is_a_no_op() -> None:
    assert render_remove(DOCKER_DNS_SAVE) == ""
    assert render_remove("") == ""


def test_is_installed() -> None:
    assert not is_installed(DOCKER_DNS_SAVE)
    assert not is_installed(saved(list(CHAINS), []))  # chains without the jump
    assert is_installed(saved(list(CHAINS), ["-A OUTPUT -p tcp -j MESH_OUTPUT"]))


def test_is_ours_reads_quoted_comments() -> None:
    assert not is_ours('-A OUTPUT -m comment --comment "-j MESH_OUTPUT" -j ACCEPT')
    assert is_ours('-A OUTPUT -m comment --comment "mesh" -j MESH_OUTPUT')
    assert is_ours("-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001")


ports = st.lists(st.integers(1, 65535), max_size=6).map(tuple)


@given(
    uid=st.integers(0, 2**31),
    gid=st.none() | st.integers(0, 2**31),
    inbound=ports,
    excl_in=ports,
    excl_out=ports,
    dns=st.none() | st.integers(1, 65535),
)
def test_any_valid_config_renders_only_ours(
    uid: int,
    gid: int | None,
    inbound: tuple[int, ...],
    excl_in: tuple[int, ...],
    excl_out: tuple[int, ...],
    dns: int | None,
) -> None:
    inbound = tuple(p for p in inbound if p not in (15001, 15006))
    dns = None if dns in (15001, 15006) else dns
    cfg = InterceptConfig(
        dns_port=dns,
        proxy_uid=uid,
        proxy_gid=gid,
        inbound_ports=inbound,
        exclude_inbound_ports=excl_in,
        exclude_outbound_ports=excl_out,
    )
    text = render_restore(cfg)
    table = parse_nat(text)
    assert table.rules == table.ours()
    assert set(table.chains) == set(CHAINS) - ({MESH_DNS} if dns is None else set())
    assert text.endswith("COMMIT\n")
    # Removing what was installed deletes every jump and chain.
    removal = render_remove(text)
    assert removal.count("-D ") == len(
        [r for r in table.rules if r.startswith(("-A OUTPUT", "-A PREROUTING"))]
    )
    assert removal.count("-X ") == len(table.chains)


def test_the_docs_show_the_typical_rules_verbatim() -> None:
    docs = (REPO / "docs" / "interception.md").read_text()
    assert f"```\n{TYPICAL_TEXT}```" in docs
    assert f"```\n{TYPICAL_V6_TEXT}```" in docs


def test_published_ports_go_to_the_published_listener_before_the_capture() -> None:
    cfg = InterceptConfig(proxy_uid=1337, inbound_ports=(8080, 9090), published_ports=(8080, 22),
                          published_sources=("172.19.0.1/32",))  # fmt: skip
    lines = render_restore(cfg).splitlines()
    rule = "-A MESH_INBOUND -s 172.19.0.1/32 -p tcp --dport 8080 -j REDIRECT --to-ports 15007"
    assert lines.count(rule) == 1
    capture = "-A MESH_INBOUND -p tcp --dport 8080 -j MESH_IN_REDIRECT"
    assert lines.index(rule) < lines.index(capture)
    assert lines.index("-A MESH_INBOUND -p tcp --dport 22 -j RETURN") < lines.index(rule)
    assert not [ln for ln in lines if "15007" in ln and "--dport 22 " in ln]  # not captured
    assert not [ln for ln in lines if "15007" in ln and "--dport 9090 " in ln]  # not published
    plain = render_restore(InterceptConfig(proxy_uid=1337, inbound_ports=(8080, 9090)))
    assert "15007" not in plain
    # A port bound beyond loopback: also from outside the container's network.
    wide = InterceptConfig(proxy_uid=1337, inbound_ports=(8080, 9090), published_ports=(8080, 9090),
                           published_sources=("172.19.0.1/32",), published_open_ports=(9090,),
                           published_local_net="172.19.0.0/16")  # fmt: skip
    redirects = [ln for ln in render_restore(wide).splitlines() if "15007" in ln]
    assert redirects == [
        "-A MESH_INBOUND -s 172.19.0.1/32 -p tcp --dport 8080 -j REDIRECT --to-ports 15007",
        "-A MESH_INBOUND -s 172.19.0.1/32 -p tcp --dport 9090 -j REDIRECT --to-ports 15007",
        "-A MESH_INBOUND ! -s 172.19.0.0/16 -p tcp --dport 9090 -j REDIRECT --to-ports 15007",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"published_ports": (8080,)}, "published_ports without published_sources"),
        ({"published_ports": (8080,), "published_sources": ("172.19.0.1",),
          "published_port": 15006}, "published_port 15006"),
        ({"published_ports": (8080,), "published_sources": ("172.19.0.1",),
          "inbound_ports": (8080, 15007)}, "inbound_ports contains the proxy's own port 15007"),
        ({"published_ports": (8080,), "published_sources": ("10.0.0.0/33",)},
         "published_sources: '10.0.0.0/33' is not a CIDR"),
        ({"published_ports": (8080,), "published_sources": ("172.19.0.1",),
          "published_open_ports": (8080,)}, "published_open_ports without published_local_net"),
        ({"published_ports": (8080,), "published_sources": ("172.19.0.1",),
          "published_open_ports": (9090,), "published_local_net": "172.19.0.0/16"},
         "published_open_ports must also be in published_ports"),
    ],
)
def test_published_config_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"proxy_uid": 1337, "inbound_ports": (8080,), **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        InterceptConfig(**args)  # type: ignore[arg-type]
