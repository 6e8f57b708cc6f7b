"""meshctl/observe: the exposition parser, stat's arithmetic and check's judgements (pure)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from common.promparse import parse
from common.promtext import labels_text
from common.stats import quantile, stat
from meshctl.observe.checks import FAIL, OK, WARN, Facts, evaluate, worst


def test_parse_labels_with_escapes() -> None:
    text = '# HELP x y\n# TYPE x counter\nx{a="1",b="q\\"uo\\\\te\\n"} 3.5\nplain 7\n'
    got = list(parse(text))
    assert got[0].labels == {"a": "1", "b": 'q"uo\\te\n'} and got[0].value == 3.5
    assert got[1].name == "plain" and got[1].labels == {} and got[1].value == 7


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), st.text(max_size=12)))
def test_parse_reads_what_the_writer_writes(labels: dict[str, str]) -> None:
    (s,) = parse(f"m{labels_text(labels)} 1\n")
    assert s.labels == labels


def test_quantile_interpolates_like_histogram_quantile() -> None:
    buckets = {1.0: 0.0, 5.0: 50.0, 10.0: 100.0, math.inf: 100.0}
    assert quantile(0.5, buckets) == 5.0
    assert quantile(0.75, buckets) == 7.5
    assert quantile(0.99, {10.0: 0.0, math.inf: 4.0}) == 10.0  # past the last finite bound
    assert quantile(0.5, {math.inf: 0.0}) is None


def _scrape(n: float, fails: float, le5: float) -> dict[str, list]:  # type: ignore[type-arg]
    text = (
        f'istio_requests_total{{reporter="destination",destination_service_name="orders",'
        f'response_code="200"}} {n - fails}\n'
        f'istio_requests_total{{reporter="destination",destination_service_name="orders",'
        f'response_code="503"}} {fails}\n'
        f'istio_request_duration_milliseconds_bucket{{reporter="destination",'
        f'destination_service_name="orders",le="5"}} {le5}\n'
        f'istio_request_duration_milliseconds_bucket{{reporter="destination",'
        f'destination_service_name="orders",le="+Inf"}} {n}\n'
    )
    return {"p1": list(parse(text))}


def test_stat_is_the_difference_between_two_scrapes() -> None:
    out = stat(_scrape(100, 0, 100), _scrape(300, 20, 280), 2.0)
    (row,) = out["services"]
    assert row.requests == 200 and row.rps == 100 and row.success_rate == 0.9
    assert row.p50_ms is not None and row.p50_ms <= 5.0
    assert row.requests_total == 300


def test_check_judges_proxies_certificates_and_skew() -> None:
    now = 1_000_000.0
    facts = Facts(
        status={
            "config_version": 4,
            "proxies": [
                {"proxy_id": "a", "connected": True, "acked_version": 4,
                 "cert_not_after": now + 80_000},
                {"proxy_id": "b", "connected": True, "acked_version": 3, "nack_error": "bad",
                 "cert_not_after": now + 3_600},
                {"proxy_id": "c", "connected": False, "acked_version": 4, "cert_not_after": 0},
            ],
        },
        registry_date=now + 8,
        local_time=now,
        lifetimes={"a": 86_400.0, "b": 86_400.0},
    )  # fmt: skip
    got = {(r.check, r.subject): r for r in evaluate(facts)}
    assert got[("proxy", "a")].status == OK
    assert got[("proxy", "b")].status == FAIL and "NACK: bad" in got[("proxy", "b")].detail
    assert got[("proxy", "c")].status == FAIL
    assert got[("certificate", "a")].status == OK
    assert got[("certificate", "b")].status == WARN  # 4 % of its lifetime left
    assert got[("clock", "registry")].status == WARN
    assert worst(got.values()) == FAIL
    assert evaluate(Facts(registry_error="down"))[0].status == FAIL


def test_check_says_which_core_each_proxy_runs() -> None:
    facts = Facts(
        status={"config_version": 1, "proxies": []},
        registry_date=1.0,
        local_time=1.0,
        cores={
            "a": (True, "mypyc 1.0, 35 modules, built now"),
            "b": (False, "proxy/downstream/fastpath.py changed since the compiled core was built"),
            "c": (False, "MESH_COMPILED=0"),
        },
    )
    got = {r.subject: r for r in evaluate(facts) if r.check == "core"}
    assert got["a"].status == OK and got["a"].detail.startswith("compiled (mypyc")
    assert got["b"].status == WARN and "proxy/downstream/fastpath.py changed" in got["b"].detail
    assert got["c"].status == OK and "as asked" in got["c"].detail
