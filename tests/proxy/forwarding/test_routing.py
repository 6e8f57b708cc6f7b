"""VirtualService route matching, compiled once per snapshot: Istio's match semantics."""

from __future__ import annotations

from collections import Counter

import pytest

from proxy.forwarding.routing import compile_route, first_match
from proxy.http1 import RequestParser
from registry.config.model import (
    Destination,
    HeaderOperations,
    Headers,
    HTTPMatch,
    HTTPRoute,
    RouteDestination,
    StringMatch,
)


def req(target: str = "/", method: str = "GET", host: str = "orders",
        headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    raw = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
    return RequestParser().feed(raw)[0]


def match(uri: StringMatch | None = None, method: StringMatch | None = None,
          headers: tuple[tuple[str, StringMatch], ...] = (),
          without: tuple[tuple[str, StringMatch], ...] = (),
          query: tuple[tuple[str, StringMatch], ...] = (), ignore_case: bool = False,
          authority: StringMatch | None = None) -> HTTPMatch:
    return HTTPMatch(name=None, uri=uri, method=method, authority=authority, headers=headers,
                     without_headers=without, query_params=query, port=None,
                     ignore_uri_case=ignore_case)


def route(name: str, *matches: HTTPMatch, weights: tuple[int, ...] = (100,),
          headers: Headers | None = None) -> HTTPRoute:
    dests = tuple(RouteDestination(Destination("orders", f"v{i + 1}", None), w, Headers())
                  for i, w in enumerate(weights))
    return HTTPRoute(name=name, match=matches, route=dests, timeout_s=None, retries=None,
                     fault=None, mirror=None, mirror_percentage=0.0, headers=headers or Headers(),
                     rewrite=None)


def routes(*rs: HTTPRoute):  # type: ignore[no-untyped-def]
    return tuple(compile_route(r) for r in rs)


@pytest.mark.parametrize(("sm", "path", "hit"), [
    (StringMatch("exact", "/a"), "/a", True),
    (StringMatch("exact", "/a"), "/a/", False),
    (StringMatch("exact", "/a"), "/a?x=1", True),  # the query is not part of the path
    (StringMatch("prefix", "/api"), "/api/v1", True),
    (StringMatch("prefix", "/api"), "/ap", False),
    (StringMatch("regex", "/u/[0-9]+"), "/u/42", True),
    (StringMatch("regex", "/u/[0-9]+"), "/u/42/x", False),  # RE2 full match, as Istio
])
def test_uri_matches(sm: StringMatch, path: str, hit: bool) -> None:
    rs = routes(route("r", match(uri=sm)))
    assert (first_match(rs, req(path)) is not None) is hit


def test_ignore_uri_case() -> None:
    rs = routes(route("r", match(uri=StringMatch("prefix", "/API"), ignore_case=True)))
    assert first_match(rs, req("/api/x")) is not None


def test_first_matching_entry_wins_in_order() -> None:
    rs = routes(route("admin", match(uri=StringMatch("prefix", "/admin"))),
                route("all"))
    assert first_match(rs, req("/admin/x")).route.name == "admin"  # type: ignore[union-attr]
    assert first_match(rs, req("/shop")).route.name == "all"  # type: ignore[union-attr]


def test_matches_in_one_entry_are_ored_fields_are_anded() -> None:
    both = match(uri=StringMatch("prefix", "/a"), method=StringMatch("exact", "POST"))
    other = match(headers=(("x-canary", StringMatch("exact", "1")),))
    rs = routes(route("r", both, other))
    assert first_match(rs, req("/a", "POST")) is not None
    assert first_match(rs, req("/a", "GET")) is None
    assert first_match(rs, req("/zzz", "GET", headers={"X-Canary": "1"})) is not None


def test_header_present_and_without_headers() -> None:
    rs = routes(route("r", match(headers=(("x-user", StringMatch("present", "")),),
                                 without=(("x-debug", StringMatch("exact", "1")),))))
    assert first_match(rs, req(headers={"x-user": "a"})) is not None
    assert first_match(rs, req(headers={"x-user": "a", "x-debug": "1"})) is None
    assert first_match(rs, req()) is None


def test_query_params_and_authority() -> None:
    rs = routes(route("r", match(query=(("v", StringMatch("exact", "2")),),
                                 authority=StringMatch("prefix", "orders"))))
    assert first_match(rs, req("/?v=2&x=1", host="orders:8080")) is not None
    assert first_match(rs, req("/?v=3", host="orders:8080")) is None
    assert first_match(rs, req("/?v=2", host="payments")) is None


def test_weights_are_exact_over_many_picks() -> None:
    (r,) = routes(route("canary", weights=(90, 10)))
    picks = Counter(r.pick() for _ in range(1000))
    assert picks == {0: 900, 1: 100}


def test_header_operations_are_prebuilt_as_bytes() -> None:
    ops = Headers(request=HeaderOperations(set=(("x-a", "1"),), add=(("x-b", "2"),),
                                           remove=("x-c",)),
                  response=HeaderOperations(remove=("server",)))
    r = compile_route(route("r", headers=ops), frozenset((b"x-forwarded-client-cert",)))
    assert r.add_request[0] == [(b"x-a", b"1"), (b"x-b", b"2")]
    assert {b"x-c", b"x-a", b"x-forwarded-client-cert"} <= r.remove_request[0]
    # Built with the route, for every request: its removals, the framing the proxy redoes,
    # the hop-by-hop fields; the Upgrade set keeps Connection and Upgrade.
    drop = r.drop_request[0]
    assert r.remove_request[0] | {b"content-length", b"expect", b"connection", b"te"} <= drop
    assert b"connection" not in r.remove_request[0]
    apply = r.response_ops[0]
    assert apply is not None
    assert apply([(b"Server", b"x"), (b"a", b"b")]) == [(b"a", b"b")]


def test_snapshot_routes_remove_the_callers_trace_headers() -> None:
    # The outbound stack renders the next hop's trace context from its own span: every
    # route of a snapshot, the default one included, drops the caller's.
    from proxy.snapshot import ROUTE_REMOVES

    r = compile_route(route("r"), ROUTE_REMOVES)
    for header in (b"traceparent", b"b3", b"x-b3-traceid", b"x-forwarded-client-cert"):
        assert header in r.remove_request[0] and header in r.drop_request[0]


def test_regexes_are_compiled_once_per_snapshot_by_re2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `regex` is compiled when the route is (once per snapshot), by the RE2 matcher
    that the config check uses, and never again per request."""
    import proxy.forwarding.routing as routing

    compiled: list[str] = []
    real = routing.full_matcher

    def counting(pattern: str):  # type: ignore[no-untyped-def]
        compiled.append(pattern)
        return real(pattern)

    monkeypatch.setattr(routing, "full_matcher", counting)
    r = compile_route(route("r", match(uri=StringMatch("regex", "^/(a+)+$"),
                                       headers=(("x-user", StringMatch("regex", "u[0-9]+")),))))
    assert compiled == ["^/(a+)+$", "u[0-9]+"]
    hostile = "/" + "a" * 38 + "!"  # backtracking's worst case: linear for RE2
    for _ in range(100):
        assert first_match((r,), req(hostile, headers={"x-user": "u1"})) is None
        assert first_match((r,), req("/aaa", headers={"x-user": "u1"})) is r
    assert len(compiled) == 2
