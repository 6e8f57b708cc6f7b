"""Retry decision table and Envoy's backoff."""

from __future__ import annotations

import random

import pytest

from proxy.policy.retry import (
    DEFAULT_RETRY_ON,
    Outcome,
    RetryParams,
    backoff,
    parse_retry_on,
    should_retry,
)

CONNECT = Outcome(connect_failure=True)
REFUSED = Outcome(refused_stream=True, bytes_sent_upstream=True)
RESET = Outcome(reset=True, bytes_sent_upstream=True)
TIMEOUT = Outcome(timed_out=True, bytes_sent_upstream=True)


def status(code: int) -> Outcome:
    return Outcome(status=code, bytes_sent_upstream=True)


def params(retry_on: str, codes: frozenset[int] = frozenset()) -> RetryParams:
    conditions, bare = parse_retry_on(retry_on)
    return RetryParams(retry_on=conditions | {str(c) for c in bare}, retriable_status_codes=codes)


# (retry_on, outcome, retried for GET)
TABLE = [
    ("5xx", status(500), True),
    ("5xx", status(503), True),
    ("5xx", status(404), False),
    ("5xx", CONNECT, True),
    ("5xx", RESET, True),
    ("5xx", REFUSED, True),
    ("5xx", TIMEOUT, True),
    ("gateway-error", status(502), True),
    ("gateway-error", status(504), True),
    ("gateway-error", status(500), False),
    ("gateway-error", RESET, True),
    ("reset", RESET, True),
    ("reset", CONNECT, True),
    ("reset", TIMEOUT, True),
    ("reset", status(503), False),
    ("connect-failure", CONNECT, True),
    ("connect-failure", RESET, False),
    ("connect-failure", TIMEOUT, False),
    ("connect-failure", status(503), False),
    ("refused-stream", REFUSED, True),
    ("refused-stream", RESET, False),
    ("retriable-4xx", status(409), True),
    ("retriable-4xx", status(429), False),
    ("503", status(503), True),
    ("503", status(502), False),
    ("503", CONNECT, False),
    ("unavailable", Outcome(status=200, grpc_status=14), True),
    ("cancelled", Outcome(status=200, grpc_status=1), True),
    ("cancelled", Outcome(status=200, grpc_status=14), False),
    ("5xx", status(200), False),
]


@pytest.mark.parametrize(("retry_on", "outcome", "expected"), TABLE)
def test_condition_table_for_idempotent_get(
    retry_on: str, outcome: Outcome, expected: bool
) -> None:
    assert should_retry(params(retry_on), outcome, b"GET", True) is expected


@pytest.mark.parametrize("method", [b"POST", b"PATCH", b"CONNECT", b"FROB"])
@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (CONNECT, True),  # nothing reached the upstream
        (REFUSED, True),  # RFC 9113 8.7: refused streams were not processed
        (Outcome(connect_failure=True, bytes_sent_upstream=True), False),
        (RESET, False),
        (TIMEOUT, False),
        (status(503), False),
    ],
)
def test_non_idempotent_only_when_not_processed(
    method: bytes, outcome: Outcome, expected: bool
) -> None:
    p = params("5xx,reset,connect-failure,refused-stream")
    assert should_retry(p, outcome, method, True) is expected


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"])
def test_idempotent_methods_retry_on_5xx(method: bytes) -> None:
    assert should_retry(params("5xx"), status(503), method, True)


@pytest.mark.parametrize("outcome", [CONNECT, REFUSED, status(503)])
def test_non_replayable_body_is_never_retried(outcome: Outcome) -> None:
    p = params("5xx,connect-failure,refused-stream")
    assert not should_retry(p, outcome, b"GET", False)
    assert not should_retry(p, outcome, b"POST", False)


def test_istio_default_policy() -> None:
    p = RetryParams()
    assert p.attempts == 2 and p.retry_on == DEFAULT_RETRY_ON
    assert should_retry(p, CONNECT, b"GET", True)
    assert should_retry(p, REFUSED, b"GET", True)
    assert should_retry(p, status(503), b"GET", True)
    assert should_retry(p, Outcome(status=200, grpc_status=14), b"POST", True) is False
    assert not should_retry(p, status(500), b"GET", True)
    assert not should_retry(p, RESET, b"GET", True)
    assert not should_retry(p, TIMEOUT, b"GET", True)


def test_parse_retry_on() -> None:
    conditions, codes = parse_retry_on(" 5xx, 503 ,retriable-4xx,,429")
    assert conditions == {"5xx", "retriable-4xx", "retriable-status-codes"}
    assert codes == {503, 429}
    with pytest.raises(ValueError, match="unknown condition 'bogus'"):
        parse_retry_on("5xx,bogus")
    with pytest.raises(ValueError, match=r"100\.\.599"):
        parse_retry_on("999")


def test_retriable_status_codes_need_the_condition() -> None:
    without = RetryParams(retry_on=frozenset({"5xx"}), retriable_status_codes=frozenset({429}))
    assert not should_retry(without, status(429), b"GET", True)
    with_it = RetryParams(
        retry_on=frozenset({"retriable-status-codes"}), retriable_status_codes=frozenset({429})
    )
    assert should_retry(with_it, status(429), b"GET", True)


def test_invalid_params() -> None:
    with pytest.raises(ValueError):
        RetryParams(attempts=-1)
    with pytest.raises(ValueError):
        RetryParams(base_interval_s=1.0, max_interval_s=0.5)


def test_backoff_full_jitter_doubles_and_caps() -> None:
    rng = random.Random(7)
    ceilings = [0.025, 0.05, 0.1, 0.2, 0.25, 0.25, 0.25]
    for n, ceiling in enumerate(ceilings):
        samples = [backoff(n, rng) for _ in range(2000)]
        assert all(0.0 <= s < ceiling for s in samples)
        assert max(samples) > 0.9 * ceiling  # full jitter reaches the top of the range
        assert min(samples) < 0.1 * ceiling  # ... and the bottom
    assert backoff(10_000, rng) < 0.25


def test_backoff_is_reproducible_with_a_seed() -> None:
    a = [backoff(i, random.Random(1)) for i in range(5)]
    b = [backoff(i, random.Random(1)) for i in range(5)]
    assert a == b


@pytest.mark.parametrize(
    "retry_on",
    [
        DEFAULT_RETRY_ON,
        frozenset({"5xx"}),
        frozenset({"gateway-error"}),
        frozenset({"retriable-4xx", "connect-failure"}),
        frozenset({"connect-failure", "refused-stream", "reset"}),
        frozenset({"retriable-status-codes", "404"}),
        frozenset({"unavailable", "cancelled"}),
    ],
)
def test_status_floor_is_below_every_status_that_retries(retry_on: frozenset[str]) -> None:
    # The fast path skips should_retry for a status under the floor: that must never skip a
    # retry (an Outcome from a response carries no grpc_status on the HTTP/1.1 paths).
    p = RetryParams(retry_on=retry_on, retriable_status_codes=frozenset({418}))
    retried = [s for s in range(100, 600) if should_retry(p, status(s), b"GET", True)]
    assert all(s >= p.status_floor for s in retried)
    if retried:
        assert min(retried) == p.status_floor  # and it is the lowest such status, not lower
    else:
        assert p.status_floor == 600
