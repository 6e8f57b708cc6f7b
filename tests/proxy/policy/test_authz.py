"""AuthorizationPolicy evaluation and path normalisation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.policy.authz import (
    Action,
    Condition,
    Decision,
    Operation,
    Policy,
    RequestAttrs,
    Rule,
    Source,
    StringSet,
    evaluate,
    normalize_path,
)

WEB = "cluster.local/ns/shop/sa/web"
BATCH = "cluster.local/ns/jobs/sa/batch"


def req(
    method: str = "GET",
    path: str = "/",
    principal: str | None = WEB,
    *,
    host: str = "orders.shop",
    port: int = 8080,
    headers: dict[str, str] | None = None,
) -> RequestAttrs:
    ns = principal.split("/")[2] if principal else None
    return RequestAttrs(method, path, host, port, principal, ns, headers or {})


def allow_web_reads() -> Policy:
    return Policy(
        "web-reads",
        Action.ALLOW,
        (
            Rule(
                sources=(Source.compile(principals=[WEB]),),
                operations=(Operation.compile(methods=["GET", "HEAD"], paths=["/api/*"]),),
            ),
        ),
    )


def deny_admin() -> Policy:
    return Policy(
        "no-admin",
        Action.DENY,
        (Rule(operations=(Operation.compile(paths=["/admin", "/admin/*"]),)),),
    )


# -- string forms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("abc", "abc", True),
        ("abc", "abcd", False),
        ("abc*", "abcd", True),
        ("abc*", "xabc", False),
        ("*abc", "xabc", True),
        ("*abc", "abcx", False),
        ("*", "anything", True),
        ("*", "", False),
        ("*", None, False),
        ("abc", None, False),
    ],
)
def test_istio_string_forms(pattern: str, value: str | None, expected: bool) -> None:
    assert StringSet.compile([pattern]).matches(value) is expected


def test_hosts_are_case_insensitive_paths_are_not() -> None:
    op = Operation.compile(hosts=["Orders.SHOP"], paths=["/Api*"])
    assert op.matches(req(path="/Api/x", host="ORDERS.shop"))
    assert not op.matches(req(path="/api/x", host="orders.shop"))


# -- the matrix -----------------------------------------------------------------------------------

MATRIX = [
    # principal, method, path, allowed
    (WEB, "GET", "/api/orders", True),
    (WEB, "HEAD", "/api/orders", True),
    (WEB, "POST", "/api/orders", False),  # method not in the ALLOW rule
    (WEB, "GET", "/admin", False),  # DENY wins
    (WEB, "GET", "/admin/users", False),
    (WEB, "GET", "/other", False),  # path not in the ALLOW rule
    (BATCH, "GET", "/api/orders", False),  # principal not in the ALLOW rule
    (None, "GET", "/api/orders", False),  # plaintext: no principal
]


@pytest.mark.parametrize(("principal", "method", "path", "allowed"), MATRIX)
def test_allow_and_deny_matrix(
    principal: str | None, method: str, path: str, allowed: bool
) -> None:
    d = evaluate([allow_web_reads(), deny_admin()], req(method, path, principal))
    assert d.allowed is allowed, d


def test_deny_names_the_policy() -> None:
    d = evaluate([allow_web_reads(), deny_admin()], req(path="/admin"))
    assert d == Decision(False, "no-admin", "matched a DENY policy")


def test_no_allow_policy_means_allowed() -> None:
    assert evaluate([], req()).allowed
    assert evaluate([deny_admin()], req(path="/api")).allowed
    assert not evaluate([deny_admin()], req(path="/admin")).allowed


def test_allow_with_no_rules_denies_all() -> None:
    d = evaluate([Policy("deny-all", Action.ALLOW)], req())
    assert not d.allowed and d.reason == "no ALLOW policy matched"


def test_empty_rule_matches_everything() -> None:
    assert evaluate([Policy("allow-all", Action.ALLOW, (Rule(),))], req(principal=None)).allowed
    assert not evaluate([Policy("deny-all", Action.DENY, (Rule(),))], req()).allowed


def test_deny_with_no_rules_matches_nothing() -> None:
    assert evaluate([Policy("inert", Action.DENY)], req()).allowed


def test_not_fields() -> None:
    rule = Rule(
        sources=(Source.compile(not_namespaces=["jobs"]),),
        operations=(Operation.compile(not_methods=["DELETE"], not_paths=["/internal/*"]),),
    )
    p = [Policy("p", Action.ALLOW, (rule,))]
    assert evaluate(p, req("GET", "/api")).allowed
    assert not evaluate(p, req("GET", "/api", BATCH)).allowed
    assert not evaluate(p, req("DELETE", "/api")).allowed
    assert not evaluate(p, req("GET", "/internal/x")).allowed
    # A missing attribute matches no value, so it passes a notX field.
    assert evaluate(p, req("GET", "/api", None)).allowed


def test_from_entries_are_ored_fields_anded() -> None:
    rule = Rule(
        sources=(
            Source.compile(principals=[BATCH]),
            Source.compile(namespaces=["shop"], not_principals=["*/sa/web"]),
        ),
    )
    p = [Policy("p", Action.ALLOW, (rule,))]
    assert evaluate(p, req(principal=BATCH)).allowed
    assert evaluate(p, req(principal="cluster.local/ns/shop/sa/cart")).allowed
    assert not evaluate(p, req(principal=WEB)).allowed


def test_ports_and_when_conditions() -> None:
    rule = Rule(
        operations=(Operation.compile(ports=["8080"], not_ports=[9090]),),
        conditions=(
            Condition.compile("request.headers[X-Tenant]", values=["acme", "beta*"]),
            Condition.compile("source.namespace", not_values=["jobs"]),
            Condition.compile("destination.port", values=["8080"]),
        ),
    )
    p = [Policy("p", Action.ALLOW, (rule,))]
    assert evaluate(p, req(headers={"x-tenant": "beta-2"})).allowed
    assert not evaluate(p, req(headers={"x-tenant": "zeta"})).allowed
    assert not evaluate(p, req()).allowed  # header absent
    assert not evaluate(p, req(headers={"x-tenant": "acme"}, port=9090)).allowed
    assert not evaluate(p, req(principal=BATCH, headers={"x-tenant": "acme"})).allowed


def test_audit_marks_only() -> None:
    audit = Policy(
        "audit-api", Action.AUDIT, (Rule(operations=(Operation.compile(paths=["/api*"]),)),)
    )
    d = evaluate([audit], req(path="/api/x"))
    assert d.allowed and d.audit == "audit-api"
    d = evaluate([audit, deny_admin()], req(path="/admin"))
    assert not d.allowed and d.audit is None


def test_custom_is_unsupported_and_denies_when_it_matches() -> None:
    custom = Policy("ext", Action.CUSTOM, (Rule(operations=(Operation.compile(paths=["/ext*"]),)),))
    assert not evaluate([custom], req(path="/ext/a")).allowed
    assert evaluate([custom], req(path="/other")).allowed


def test_fail_closed_on_error() -> None:
    broken = RequestAttrs("GET", "/", headers=None)  # type: ignore[arg-type]
    rule = Rule(conditions=(Condition.compile("request.headers[a]", values=["x"]),))
    d = evaluate([Policy("p", Action.DENY, (rule,))], broken)
    assert not d.allowed and "error" in d.reason


def test_compile_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"unsupported when\.key 'request\.auth\.claims"):
        Condition.compile("request.auth.claims[iss]", values=["x"])
    with pytest.raises(ValueError, match="port 'http'"):
        Operation.compile(ports=["http"])
    with pytest.raises(ValueError, match="needs values"):
        Condition.compile("source.principal")


# -- path normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/a/../admin", "/admin"),
        ("/%2e%2e/admin", "/admin"),
        ("/%2E%2e/admin", "/admin"),
        ("/api/..%2fadmin", "/admin"),
        ("//admin", "/admin"),
        ("/admin%2F", "/admin/"),
        ("/admin%2f..", "/"),
        ("/ADMIN", "/ADMIN"),
        ("\\admin", "/admin"),
        ("/%5cadmin", "/admin"),
        ("/./admin/.", "/admin/"),
        ("/../../admin", "/admin"),
        ("/admin?x=/../y", "/admin"),
        ("/%61dmin", "/admin"),
        ("/a%3Bb%3a", "/a%3Bb%3A"),
        (b"/api//v1/./x", "/api/v1/x"),
        ("/", "/"),
        ("/a/...", "/a/..."),
    ],
)
def test_normalize(raw: str | bytes, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "admin",
        "",
        "/a b",
        "/a\x00",
        "/a%00",
        "/a%zz",
        "/a%2",
        "/a%",
        "/a#frag",
        b"/\xc3\xa9",
        "/é",
        '/"',
    ],
)
def test_normalize_rejects(raw: str | bytes) -> None:
    assert normalize_path(raw) is None


@pytest.mark.parametrize(
    "attempt", ["/a/../admin", "/%2e%2e/admin", "//admin", "/admin%2F", "\\admin", "/./admin"]
)
def test_bypass_attempts_hit_the_deny(attempt: str) -> None:
    path = normalize_path(attempt)
    assert path is not None
    d = evaluate([deny_admin()], req(path=path))
    assert not d.allowed, (attempt, path)


def test_case_is_not_folded() -> None:
    path = normalize_path("/ADMIN")
    assert path == "/ADMIN"
    assert evaluate([deny_admin()], req(path=path)).allowed  # Istio paths are case-sensitive


_PATH_ALPHABET = st.sampled_from(
    [*"/\\.%aA09-_~:@!$&'()*+,;=?#2eEfF5cC ", "%2e", "%2F", "%5c", "%00", "%41"]
)


@settings(max_examples=500)
@given(st.lists(_PATH_ALPHABET, max_size=30).map("".join))
def test_normalize_properties(raw: str) -> None:
    out = normalize_path(raw)
    if out is None:
        return
    assert out.startswith("/")
    assert "//" not in out
    assert "/../" not in out and not out.endswith("/..")
    assert "/./" not in out and not out.endswith("/.")
    assert "?" not in out and "\\" not in out
    assert normalize_path(out) == out


@given(st.binary(max_size=40))
def test_normalize_never_raises(raw: bytes) -> None:
    out = normalize_path(raw)
    assert out is None or normalize_path(out) == out


def test_ip_blocks_match_the_source_address() -> None:
    import ipaddress

    def at(ip: str | None, principal: str | None = None) -> RequestAttrs:
        addr = ipaddress.ip_address(ip) if ip else None
        return RequestAttrs("GET", "/", "orders.shop", 8080, principal, None, {}, addr)

    only_lan = Policy("lan", Action.ALLOW, (Rule(sources=(Source.compile(
        ip_blocks=["10.0.0.0/8", "192.0.2.7"]),)),))  # fmt: skip
    assert evaluate([only_lan], at("10.1.2.3")).allowed
    assert evaluate([only_lan], at("192.0.2.7")).allowed
    assert not evaluate([only_lan], at("192.0.2.8")).allowed
    assert not evaluate([only_lan], at(None)).allowed  # unknown: no block matches
    deny_gw = Policy("gw", Action.DENY, (Rule(sources=(Source.compile(
        remote_ip_blocks=["172.19.0.1"]),)),))  # fmt: skip
    assert not evaluate([deny_gw], at("172.19.0.1")).allowed
    assert evaluate([deny_gw], at("172.19.0.2", WEB)).allowed
    not_lan = Policy("not-lan", Action.DENY, (Rule(sources=(Source.compile(
        not_ip_blocks=["10.0.0.0/8"]),)),))  # fmt: skip
    assert evaluate([not_lan], at("10.9.9.9")).allowed
    assert not evaluate([not_lan], at("203.0.113.4")).allowed
    assert not evaluate([not_lan], at(None)).allowed  # fail closed on DENY
