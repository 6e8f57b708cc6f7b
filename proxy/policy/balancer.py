"""Load balancers: Istio ``trafficPolicy.loadBalancer`` and Linkerd's peak-EWMA (our default).

Load balancers over the available endpoints: Istio ``DestinationRule.trafficPolicy.loadBalancer``
(simple: ROUND_ROBIN, LEAST_REQUEST, RANDOM; consistentHash) plus Linkerd's peak-EWMA, our default.

Every balancer has the same three calls:
- ``pick(endpoints, *, exclude=frozenset(), key=None) -> str | None``: ``endpoints`` is the tuple
  from ``OutlierDetector.available_hosts()`` (prebuilt, so pass it as is); ``exclude`` holds the
  hosts already tried by this request, which a retry avoids when another endpoint exists (Istio
  sets Envoy's ``previous_hosts`` retry predicate by default); ``key`` is the hash key for
  consistent hashing. None means no endpoint at all (answer 503, flag UH).
- ``on_start(ep)`` when a request is sent, ``on_end(ep, latency_s, ok)`` when it completes.
Endpoints are hashable keys ("ip:port"). Picks are O(1) (ring hash: O(log n)).
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Iterable, Sequence
from typing import Final

from proxy.policy.clock import Clock

_NO_EXCLUDE: Final[frozenset[str]] = frozenset()


class Balancer:
    """What every balancer answers. A base class, not a Protocol: in the compiled core a
    call through it is a native method call, through a Protocol a generic one (by name,
    keywords in a dict) per request."""

    __slots__ = ()

    def pick(
        self,
        endpoints: Sequence[str],
        *,
        exclude: frozenset[str] = _NO_EXCLUDE,
        key: bytes | None = None,
    ) -> str | None:
        raise NotImplementedError

    def on_start(self, ep: str) -> None:
        return None

    def on_end(self, ep: str, latency_s: float, ok: bool) -> None:
        return None


def _random_index(endpoints: Sequence[str], exclude: frozenset[str], rng: random.Random) -> int:
    """Index of a uniformly random endpoint outside ``exclude``, or of any endpoint if all are
    excluded. ``endpoints`` must not be empty."""
    n = len(endpoints)
    if n == 1:
        return 0  # the only one, excluded or not (no random draw)
    i = rng.randrange(n)
    if not exclude or endpoints[i] not in exclude:
        return i
    for _ in range(3):  # exclude is small: a redraw almost always succeeds
        i = rng.randrange(n)
        if endpoints[i] not in exclude:
            return i
    allowed = [j for j in range(n) if endpoints[j] not in exclude]  # rare slow path
    return rng.choice(allowed) if allowed else i


def _random_pick(endpoints: Sequence[str], exclude: frozenset[str], rng: random.Random) -> str:
    return endpoints[_random_index(endpoints, exclude, rng)]


def _two_choices(
    endpoints: Sequence[str], exclude: frozenset[str], rng: random.Random
) -> tuple[str, str]:
    """Power of two choices: two distinct random endpoints outside ``exclude`` when possible
    (the same one twice when only one is allowed)."""
    n = len(endpoints)
    i = _random_index(endpoints, exclude, rng)
    a = endpoints[i]
    if n == 1:
        return a, a
    for _ in range(4):
        j = rng.randrange(n - 1)  # uniform over the other n - 1 indices
        b = endpoints[j + 1 if j >= i else j]
        if b not in exclude:
            return a, b
    return a, a


class RoundRobin(Balancer):
    """Istio ROUND_ROBIN: the next endpoint in turn, skipping excluded ones."""

    __slots__ = ("_i",)

    def __init__(self) -> None:
        self._i = 0

    def pick(
        self,
        endpoints: Sequence[str],
        *,
        exclude: frozenset[str] = _NO_EXCLUDE,
        key: bytes | None = None,
    ) -> str | None:
        n = len(endpoints)
        if n == 0:
            return None
        first = self._i % n
        # At most len(exclude) + 1 steps find an endpoint outside exclude, if there is one.
        for step in range(min(n, len(exclude) + 1)):
            ep = endpoints[(first + step) % n]
            if ep not in exclude:
                self._i = first + step + 1
                return ep
        self._i = first + 1
        return endpoints[first]


class Random(Balancer):
    """Istio RANDOM."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(
        self,
        endpoints: Sequence[str],
        *,
        exclude: frozenset[str] = _NO_EXCLUDE,
        key: bytes | None = None,
    ) -> str | None:
        if not endpoints:
            return None
        return _random_pick(endpoints, exclude, self._rng)


class LeastRequest(Balancer):
    """Istio LEAST_REQUEST (its default): Envoy's P2C on active requests (choice_count 2)."""

    __slots__ = ("_active", "_rng")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._active: dict[str, int] = {}

    def pick(
        self,
        endpoints: Sequence[str],
        *,
        exclude: frozenset[str] = _NO_EXCLUDE,
        key: bytes | None = None,
    ) -> str | None:
        if not endpoints:
            return None
        a, b = _two_choices(endpoints, exclude, self._rng)
        active = self._active
        return b if active.get(b, 0) < active.get(a, 0) else a

    def active(self, ep: str) -> int:
        return self._active.get(ep, 0)

    def on_start(self, ep: str) -> None:
        self._active[ep] = self._active.get(ep, 0) + 1

    def on_end(self, ep: str, latency_s: float, ok: bool) -> None:
        left = self._active.get(ep, 0) - 1
        if left > 0:
            self._active[ep] = left
        else:
            self._active.pop(ep, None)


class _Ewma:
    __slots__ = ("pending", "rtt_s", "updated_at")

    def __init__(self, rtt_s: float, now: float) -> None:
        self.rtt_s = rtt_s
        self.updated_at = now
        self.pending = 0


class PeakEwma(Balancer):
    """Linkerd's balancer (tower ``PeakEwma`` + P2C), our default.

    cost = peak-EWMA latency x (pending + 1). A latency above the estimate replaces it (peak);
    a lower one pulls it down with weight 1 - exp(-elapsed / decay); between samples the
    estimate decays towards 0, so an endpoint that was slow once is tried again. A new endpoint
    starts at the lowest estimate of the known ones (``default_rtt_s`` when it is the first).
    Linkerd: default RTT 30 ms, decay 10 s.
    """

    __slots__ = ("_clock", "_decay_s", "_default_rtt_s", "_rng", "_state")

    def __init__(
        self,
        rng: random.Random,
        clock: Clock,
        *,
        default_rtt_s: float = 0.030,
        decay_s: float = 10.0,
    ) -> None:
        if default_rtt_s <= 0 or decay_s <= 0:
            raise ValueError("peak EWMA needs default_rtt_s > 0 and decay_s > 0")
        self._rng = rng
        self._clock = clock
        self._default_rtt_s = default_rtt_s
        self._decay_s = decay_s
        self._state: dict[str, _Ewma] = {}

    def _get(self, ep: str, now: float) -> _Ewma:
        state = self._state.get(ep)
        if state is None:
            # DEVIATION from tower's fixed default: a new endpoint starts at the lowest
            # estimate among the known ones (the default only when there are none), so a
            # replica that (re)joins next to fast ones is tried at once rather than starved
            # until their estimates decay past 30 ms.
            rtt = min((s.rtt_s for s in self._state.values()), default=self._default_rtt_s)
            state = self._state[ep] = _Ewma(rtt, now)
        return state

    def _update(self, state: _Ewma, rtt_s: float, now: float) -> float:
        if rtt_s > state.rtt_s:
            state.rtt_s = rtt_s
        else:
            decay = math.exp(-(now - state.updated_at) / self._decay_s)
            state.rtt_s = state.rtt_s * decay + rtt_s * (1.0 - decay)
        state.updated_at = now
        return state.rtt_s

    def cost(self, ep: str) -> float:
        now = self._clock()
        state = self._get(ep, now)
        return self._update(state, 0.0, now) * (state.pending + 1)

    def pick(
        self,
        endpoints: Sequence[str],
        *,
        exclude: frozenset[str] = _NO_EXCLUDE,
        key: bytes | None = None,
    ) -> str | None:
        if not endpoints:
            return None
        a, b = _two_choices(endpoints, exclude, self._rng)
        if a == b:
            return a
        return b if self.cost(b) < self.cost(a) else a

    def on_start(self, ep: str) -> None:
        state = self._state.get(ep)  # (no clock read unless the endpoint is new)
        if state is None:
            state = self._get(ep, self._clock())
        state.pending += 1

    def on_end(self, ep: str, latency_s: float, ok: bool) -> None:
        # Failures count like successes, as in Linkerd: a fast-failing endpoint is for outlier
        # detection to eject, not for the latency estimate to judge.
        now = self._clock()
        state = self._state.get(ep)
        if state is None:
            state = self._get(ep, now)
        if state.pending > 0:
            state.pending -= 1
        self._update(state, latency_s, now)

    def retain(self, endpoints: Iterable[str]) -> None:
        """Forget the state of endpoints that left the set (call on a config snapshot)."""
        keep = set(endpoints)
        for ep in [e for e in self._state if e not in keep]:
            del self._state[ep]


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class ConsistentHash(Balancer):
    """Istio ``consistentHash`` (httpHeaderName etc.): a ring hash (Ketama) as Envoy's
    RING_HASH, with a fixed ``points_per_host`` (Envoy sizes the whole ring to
    minimum_ring_size 1024, so removing a host also moves a few keys between the others; a
    fixed count per host moves only the removed host's keys). Keys are hashed with BLAKE2b-64
    (Envoy: xxHash64); a request without a key gets a random endpoint, as in Envoy. An excluded
    host is skipped by walking the ring to the next host. The ring is rebuilt only when the
    endpoint tuple changes (compared by identity first)."""

    __slots__ = ("_hashes", "_owners", "_points_per_host", "_rng", "_source")

    def __init__(self, rng: random.Random, *, points_per_host: int = 256) -> None:
        if points_per_host < 1:
            raise ValueError(f"ring hash: points_per_host must be >= 1, got {points_per_host}")
        self._rng = rng
        self._points_per_host = points_per_host
        self._source: tuple[str, ...] = ()
        self._hashes: list[int] = []
        self._owners: list[str] = []

    def _build(self, endpoints: Sequence[str]) -> None:
        hosts = dict.fromkeys(endpoints)
        points = range(self._points_per_host)
        ring = sorted((_hash64(f"{ep}_{i}".encode()), ep) for ep in hosts for i in points)
        self._hashes = [h for h, _ in ring]
        self._owners = [ep for _, ep in ring]
        self._source = tuple(endpoints)

    def pick(
        self,
        endpoints: Sequence[str],
        *,
        exclude: frozenset[str] = _NO_EXCLUDE,
        key: bytes | None = None,
    ) -> str | None:
        if not endpoints:
            return None
        if key is None:
            return _random_pick(endpoints, exclude, self._rng)
        if endpoints is not self._source and tuple(endpoints) != self._source:
            self._build(endpoints)
        owners = self._owners
        size = len(owners)
        i = bisect.bisect_left(self._hashes, _hash64(key)) % size
        ep = owners[i]
        if not exclude or ep not in exclude:
            return ep
        for step in range(1, size):
            candidate = owners[(i + step) % size]
            if candidate not in exclude:
                return candidate
        return ep
