"""VirtualService `regex` matches through real proxies: a hostile value cannot stall a proxy.

`^/(a+)+$` against a 40-byte `/aaa…a!` costs a backtracking engine 2^39 steps: with Python's
`re` the client's proxy froze on the first such request, every other connection with it
(issue 19, item 5). RE2 answers in linear time, so the hostile request falls through to the
next route and a request on another connection, sent while the hostile one is in the proxy,
is answered too. No timing is asserted: with a backtracking engine neither answer comes
before the read deadline.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.recorder import FIXTURE, TwoHop, connect, read, send, two_hop

pytestmark = pytest.mark.slow

EVIL = "^/(a+)+$"
HOSTILE = b"/" + b"a" * 38 + b"!"  # 40 bytes, no match: the backtracking worst case

_ROUTE = f"""  http:
    - name: regex
      match:
        - uri:
            regex: '{EVIL}'
        - headers:
            x-user:
              regex: '{EVIL}'
      retries:
        attempts: 0
      headers:
        response:
          set:
            x-route: regex
      route:
        - destination:
            host: echo
"""


@pytest.fixture(scope="module")
def hop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHop]:
    tmp = tmp_path_factory.mktemp("regex")
    shutil.copytree(FIXTURE, tmp / "config")  # the harness keeps a config already there
    vs = Path(tmp / "config" / "echo.yaml")
    text = vs.read_text()
    assert "  http:\n" in text
    vs.write_text(text.replace("  http:\n", _ROUTE, 1))
    with two_hop(tmp) as h:
        yield h


def _get(target: bytes, *headers: bytes) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: echo\r\n%s\r\n" % (
        target, b"".join(h + b"\r\n" for h in headers))


def _route(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    return next((v for n, v in headers if n.lower() == b"x-route"), None)


def test_the_regex_route_matches_the_whole_path_and_header(hop: TwoHop) -> None:
    """`regex: ^/(a+)+$` on the path and on `x-user`: matched against the whole value (RE2,
    as Istio), not a prefix or a substring."""
    hop.new_case()
    for req, want in [
        (_get(b"/aaaa"), b"regex"),
        (_get(b"/x", b"x-user: /aaa"), b"regex"),
        (_get(b"/aaaa/b"), None),  # a full match, as Istio: not a prefix
        (_get(b"/x", b"x-user: x/aaa"), None),
    ]:
        with connect(hop.port) as sock:
            send(sock, req)
            ans = read(sock, [b"GET"])
        assert ans.statuses == [200], ans.raw[:300]
        assert _route(list(ans.final[0][0].headers)) == want, req


@pytest.mark.parametrize(
    "hostile", [_get(HOSTILE), _get(b"/x", b"x-user: " + HOSTILE)], ids=["path", "header"])
def test_hostile_value_neither_stalls_nor_blocks_another_connection(
    hop: TwoHop, hostile: bytes
) -> None:
    """`/` + 38 `a` + `!` (40 bytes) against `^/(a+)+$`, in the path or a header: answered
    by the next route, and a request sent meanwhile on another connection is served."""
    hop.new_case()
    with connect(hop.port) as evil, connect(hop.port) as other:
        send(evil, hostile)
        # Sent while the hostile request is in the client's proxy: with a backtracking
        # engine the proxy's only thread is inside the match and this is never answered.
        send(other, _get(b"/fine"))
        fine = read(other, [b"GET"], timeout=15)
        assert fine.statuses == [200], f"the other connection got no answer: {fine.raw[:200]!r}"
        assert fine.final[0][1].startswith(b"GET /fine ")
        ans = read(evil, [b"GET"], timeout=15)
    assert ans.statuses == [200], f"the hostile request got no answer: {ans.raw[:200]!r}"
    assert _route(list(ans.final[0][0].headers)) is None  # no match: the next route served it
