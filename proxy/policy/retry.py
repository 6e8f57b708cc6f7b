"""Retry decision and backoff: Istio ``HTTPRetry`` on Envoy ``RetryPolicy`` semantics.

Retry decision and backoff: Istio ``HTTPRetry`` (attempts, perTryTimeout, retryOn) on Envoy's
``RetryPolicy`` semantics (``retry_on``, ``retriable_status_codes``, ``retry_back_off``).

House rules:
- ``should_retry`` only answers "is this outcome retriable"; the attempt count, the retry budget
  (``budget.py``) and the concurrent-retry breaker (``limits.py``) are checked by the caller.
- Where we are stricter than Envoy (non-idempotent methods, non-replayable bodies) the rule is
  marked DEVIATION; docs/policies.md explains why.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

# Envoy's HTTP retry_on conditions (router filter docs, x-envoy-retry-on) plus the gRPC ones
# (x-envoy-retry-grpc-on). Istio accepts both kinds, and bare status codes, in one retryOn string.
HTTP_CONDITIONS: Final = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
    }
)
# gRPC status carried in the response headers (grpc-status): name -> code (gRPC status codes).
GRPC_CONDITIONS: Final[dict[str, int]] = {
    "cancelled": 1,
    "deadline-exceeded": 4,
    "resource-exhausted": 8,
    "internal": 13,
    "unavailable": 14,
}
GATEWAY_ERRORS: Final = frozenset({502, 503, 504})
RETRIABLE_4XX: Final = frozenset({409})

# RFC 9110 9.2.2: methods whose repetition has the same effect as one request. Anything else
# (POST, PATCH, CONNECT, and unknown extension methods) is treated as non-idempotent.
IDEMPOTENT_METHODS: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

# Linkerd: request bodies over 64 KiB are not buffered for replay, so never retried.
MAX_REPLAY_BODY_BYTES = 64 * 1024

# Istio's default when a VirtualService route sets no retries (pilot: DefaultPolicy):
# 2 retries on connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes + [503].
DEFAULT_RETRY_ON = frozenset(
    {"connect-failure", "refused-stream", "unavailable", "cancelled", "503"}
)


def parse_retry_on(value: str) -> tuple[frozenset[str], frozenset[int]]:
    """Split an Istio ``retryOn`` string into (conditions, bare status codes).

    Bare codes imply ``retriable-status-codes``, as Istio's translation does. Unknown conditions
    raise ValueError naming the condition, so config validation can point at it.
    """
    conditions: set[str] = set()
    codes: set[int] = set()
    for raw in value.split(","):
        part = raw.strip()
        if not part:
            continue
        if part.isdigit():
            code = int(part)
            if not 100 <= code <= 599:
                raise ValueError(f"retryOn: status code {part!r} is not in 100..599")
            codes.add(code)
        elif part in HTTP_CONDITIONS or part in GRPC_CONDITIONS:
            conditions.add(part)
        else:
            known = ", ".join(sorted(HTTP_CONDITIONS.union(GRPC_CONDITIONS)))
            raise ValueError(
                f"retryOn: unknown condition {part!r}; expected a status code or one of {known}"
            )
    if codes:
        conditions.add("retriable-status-codes")
    return frozenset(conditions), frozenset(codes)


@dataclass(frozen=True, slots=True)
class RetryParams:
    """Istio ``HTTPRetry``: ``attempts`` is the number of *retries* (Envoy ``num_retries``).

    ``retry_on`` may mix conditions and bare codes (Istio's form); ``retriable_status_codes``
    apply only when ``retriable-status-codes`` is in ``retry_on`` (Envoy's rule), bare codes
    always.
    """

    attempts: int = 2
    per_try_timeout_s: float | None = None
    retry_on: frozenset[str] = DEFAULT_RETRY_ON
    retriable_status_codes: frozenset[int] = frozenset()
    base_interval_s: float = 0.025
    max_interval_s: float = 0.25
    # Precomputed from retry_on so should_retry() does no parsing per call.
    _on_any_reset: bool = field(init=False, repr=False, compare=False, default=False)
    _on_5xx: bool = field(init=False, repr=False, compare=False, default=False)
    _on_gateway: bool = field(init=False, repr=False, compare=False, default=False)
    _on_connect: bool = field(init=False, repr=False, compare=False, default=False)
    _on_refused: bool = field(init=False, repr=False, compare=False, default=False)
    _on_4xx: bool = field(init=False, repr=False, compare=False, default=False)
    _codes: frozenset[int] = field(init=False, repr=False, compare=False, default=frozenset())
    _grpc: frozenset[int] = field(init=False, repr=False, compare=False, default=frozenset())
    # The lowest response status any status condition here retries (600: none): an Outcome
    # with a lower status and no grpc_status is final without asking should_retry (the hot
    # path's check for a 2xx).
    status_floor: int = field(init=False, repr=False, compare=False, default=600)

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ValueError(f"retries.attempts must be >= 0, got {self.attempts}")
        if self.per_try_timeout_s is not None and self.per_try_timeout_s <= 0:
            raise ValueError(f"retries.perTryTimeout must be > 0, got {self.per_try_timeout_s}")
        if not 0 < self.base_interval_s <= self.max_interval_s:
            raise ValueError(
                f"retry backoff needs 0 < base ({self.base_interval_s})"
                f" <= max ({self.max_interval_s})"
            )
        conditions, bare = parse_retry_on(",".join(sorted(self.retry_on)))
        codes = set(bare)
        if "retriable-status-codes" in conditions:
            codes |= self.retriable_status_codes
        on_5xx = "5xx" in conditions
        on_gateway = "gateway-error" in conditions
        setattr_ = object.__setattr__
        # Envoy RetryStateImpl::wouldRetryFromReset: reset, 5xx and gateway-error retry on every
        # reset reason (connection failure, refused stream, local reset from a per-try timeout).
        setattr_(self, "_on_any_reset", on_5xx or on_gateway or "reset" in conditions)
        setattr_(self, "_on_5xx", on_5xx)
        setattr_(self, "_on_gateway", on_gateway)
        setattr_(self, "_on_connect", "connect-failure" in conditions)
        setattr_(self, "_on_refused", "refused-stream" in conditions)
        setattr_(self, "_on_4xx", "retriable-4xx" in conditions)
        setattr_(self, "_codes", frozenset(codes))
        setattr_(
            self, "_grpc", frozenset(GRPC_CONDITIONS[c] for c in conditions if c in GRPC_CONDITIONS)
        )
        floors = [*codes, *RETRIABLE_4XX] if "retriable-4xx" in conditions else [*codes]
        if on_5xx or on_gateway:
            floors.append(500 if on_5xx else min(GATEWAY_ERRORS))
        # (gRPC conditions read an Outcome's grpc_status, not the HTTP status: an Outcome
        # without one, as the HTTP/1.1 paths make, is decided by the status alone.)
        setattr_(self, "status_floor", min(floors, default=600))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt produced. ``status`` is None when no response header arrived."""

    status: int | None = None
    reset: bool = False
    connect_failure: bool = False
    refused_stream: bool = False
    bytes_sent_upstream: bool = False
    timed_out: bool = False  # the per-try timeout fired
    grpc_status: int | None = None  # grpc-status in the response headers, if any


def _matches(params: RetryParams, outcome: Outcome) -> bool:
    if outcome.connect_failure or outcome.refused_stream or outcome.reset or outcome.timed_out:
        # No usable response: Envoy handles these as stream resets. A per-try timeout is a
        # local reset, so it is retried under 5xx, gateway-error and reset (router.cc
        # onPerTryTimeout -> wouldRetryFromReset), not under connect-failure alone.
        if params._on_any_reset:
            return True
        if outcome.connect_failure and params._on_connect:
            return True
        return outcome.refused_stream and params._on_refused
    status = outcome.status
    if status is not None:
        if params._on_5xx and 500 <= status <= 599:
            return True
        if params._on_gateway and status in GATEWAY_ERRORS:
            return True
        if params._on_4xx and status in RETRIABLE_4XX:
            return True
        if status in params._codes:
            return True
    return outcome.grpc_status is not None and outcome.grpc_status in params._grpc


def should_retry(
    params: RetryParams, outcome: Outcome, method: bytes, body_replayable: bool
) -> bool:
    """True when ``outcome`` is retriable under ``params`` for this request.

    DEVIATION from Envoy (which retries any method): a non-idempotent method (POST, PATCH,
    CONNECT, unknown) is retried only when the upstream provably did not process it: a connect
    failure before any byte was sent, or an HTTP/2 REFUSED_STREAM (RFC 9113 8.7). A body that
    did not fit the replay buffer (``body_replayable`` False) is never retried (Linkerd).
    """
    if not body_replayable or not _matches(params, outcome):
        return False
    if method in IDEMPOTENT_METHODS:
        return True
    return outcome.refused_stream or (outcome.connect_failure and not outcome.bytes_sent_upstream)


def backoff(
    attempt_index: int,
    rng: random.Random,
    base_s: float = 0.025,
    max_s: float = 0.25,
) -> float:
    """Seconds to wait before retry number ``attempt_index`` (0 for the first retry).

    Envoy JitteredExponentialBackOffStrategy: full jitter over an interval that starts at
    ``base`` and doubles per retry, capped at ``max`` (default 10 x base): 25, 50, 100, 200,
    250, 250 ms. (The router docs still say [0, (2^N-1)B); the source says [0, min(B*2^n, max)).)
    """
    if attempt_index < 0:
        raise ValueError(f"attempt_index must be >= 0, got {attempt_index}")
    # Cap the exponent so 2**n never builds a huge integer for a runaway attempt count.
    ceiling = max_s if attempt_index >= 32 else min(base_s * (1 << attempt_index), max_s)
    return rng.random() * ceiling
