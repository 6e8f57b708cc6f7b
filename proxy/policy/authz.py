"""Istio AuthorizationPolicy evaluation (action, rules: from/to/when) and path normalisation.

Istio ``AuthorizationPolicy`` evaluation (security.istio.io/v1 AuthorizationPolicy: action,
rules[].from[].source, rules[].to[].operation, rules[].when[]) and the path normalisation it
matches on (MeshConfig ``pathNormalization``: DECODE_AND_MERGE_SLASHES).

House rules, from the Istio reference:
- Within a rule, ``from``, ``to`` and ``when`` are ANDed; the entries of ``from`` (or ``to``) are
  ORed; within a source or operation, the fields are ANDed; the values of one field are ORed;
  a ``notX`` field matches when the attribute matches none of its values.
- A rule with no from/to/when matches every request. A policy with no rules matches nothing
  (so an ALLOW policy with no rules denies all).
- Order: CUSTOM, then DENY (any match denies), then ALLOW (if any ALLOW policy applies, one must
  match); AUDIT only marks. CUSTOM (ext_authz) is not supported: a matching CUSTOM policy denies.
- Any error during evaluation denies (fail closed).
String values use Istio's forms: exact ``abc``, prefix ``abc*``, suffix ``*abc``, and ``*``
(present and non-empty). Hosts match case-insensitively, everything else case-sensitively.
Policies are compiled once per config snapshot; ``evaluate`` only runs the compiled matchers.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

# -- string matching ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringSet:
    """A compiled list of Istio string values; ``matches(v)`` is true if any value matches."""

    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    presence: bool = False
    ignore_case: bool = False

    @classmethod
    def compile(cls, values: Iterable[str], *, ignore_case: bool = False) -> StringSet:
        exact: set[str] = set()
        prefixes: list[str] = []
        suffixes: list[str] = []
        presence = False
        for raw in values:
            v = raw.lower() if ignore_case else raw
            if v == "*":
                presence = True
            elif v.endswith("*"):
                prefixes.append(v[:-1])
            elif v.startswith("*"):
                suffixes.append(v[1:])
            else:
                exact.add(v)
        return cls(frozenset(exact), tuple(prefixes), tuple(suffixes), presence, ignore_case)

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.ignore_case:
            value = value.lower()
        return (
            value in self.exact
            or (self.presence and value != "")
            or (bool(self.prefixes) and value.startswith(self.prefixes))
            or (bool(self.suffixes) and value.endswith(self.suffixes))
        )


_ANY: StringSet | None = None  # an unset field: matches everything


def _field(values: Sequence[str] | None, *, ignore_case: bool = False) -> StringSet | None:
    return StringSet.compile(values, ignore_case=ignore_case) if values else None


def _ok(positive: StringSet | None, negative: StringSet | None, value: str | None) -> bool:
    """One Istio field pair: X (must match one) and notX (must match none)."""
    if positive is not None and not positive.matches(value):
        return False
    return negative is None or not negative.matches(value)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _blocks(values: Sequence[str] | None) -> tuple[IPNetwork, ...] | None:
    """Istio's ipBlocks values: an address (203.0.113.4) or a CIDR (203.0.113.0/24)."""
    if not values:
        return None
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def _in_blocks(
    positive: tuple[IPNetwork, ...] | None, negative: tuple[IPNetwork, ...] | None,
    ip: IPAddress | None,
) -> bool:
    """ipBlocks / notIpBlocks: an unknown address matches no block."""
    if positive is not None and (ip is None or not any(ip in n for n in positive)):
        return False
    return negative is None or ip is None or not any(ip in n for n in negative)


# -- request attributes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestAttrs:
    """What authz sees of a request. ``principal`` is Istio's form of the peer's SPIFFE ID
    without the scheme ("cluster.local/ns/default/sa/web"), None over plaintext; ``path`` is
    the output of ``normalize_path`` (no query); ``headers`` has lower-case names."""

    method: str
    path: str
    host: str = ""
    port: int = 0
    principal: str | None = None
    namespace: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # The connection's source address (ipBlocks; remoteIpBlocks too: a sidecar trusts no
    # X-Forwarded-For hop, Istio's numTrustedProxies 0). None when unknown: no block matches.
    source_ip: IPAddress | None = None
    # The original client's address (remoteIpBlocks) when it differs from the connection's:
    # a gateway's, read from X-Forwarded-For past its trusted hops. None: source_ip.
    remote_ip: IPAddress | None = None


# -- compiled policy ------------------------------------------------------------------------------


class Action(enum.Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"
    CUSTOM = "CUSTOM"


@dataclass(frozen=True, slots=True)
class Source:
    principals: StringSet | None = None
    not_principals: StringSet | None = None
    namespaces: StringSet | None = None
    not_namespaces: StringSet | None = None
    # ipBlocks and remoteIpBlocks both match the connection's source address (RequestAttrs)
    ip_blocks: tuple[IPNetwork, ...] | None = None
    not_ip_blocks: tuple[IPNetwork, ...] | None = None
    remote_ip_blocks: tuple[IPNetwork, ...] | None = None
    not_remote_ip_blocks: tuple[IPNetwork, ...] | None = None

    @classmethod
    def compile(
        cls,
        *,
        principals: Sequence[str] = (),
        not_principals: Sequence[str] = (),
        namespaces: Sequence[str] = (),
        not_namespaces: Sequence[str] = (),
        ip_blocks: Sequence[str] = (),
        not_ip_blocks: Sequence[str] = (),
        remote_ip_blocks: Sequence[str] = (),
        not_remote_ip_blocks: Sequence[str] = (),
    ) -> Source:
        return cls(
            _field(principals), _field(not_principals), _field(namespaces), _field(not_namespaces),
            _blocks(ip_blocks), _blocks(not_ip_blocks),
            _blocks(remote_ip_blocks), _blocks(not_remote_ip_blocks),
        )  # fmt: skip

    def matches(self, r: RequestAttrs) -> bool:
        return (
            _ok(self.principals, self.not_principals, r.principal)
            and _ok(self.namespaces, self.not_namespaces, r.namespace)
            and _in_blocks(self.ip_blocks, self.not_ip_blocks, r.source_ip)
            and _in_blocks(self.remote_ip_blocks, self.not_remote_ip_blocks,
                           r.source_ip if r.remote_ip is None else r.remote_ip)
        )


@dataclass(frozen=True, slots=True)
class Operation:
    methods: StringSet | None = None
    not_methods: StringSet | None = None
    paths: StringSet | None = None
    not_paths: StringSet | None = None
    ports: frozenset[int] | None = None
    not_ports: frozenset[int] | None = None
    hosts: StringSet | None = None
    not_hosts: StringSet | None = None

    @classmethod
    def compile(
        cls,
        *,
        methods: Sequence[str] = (),
        not_methods: Sequence[str] = (),
        paths: Sequence[str] = (),
        not_paths: Sequence[str] = (),
        ports: Sequence[str | int] = (),
        not_ports: Sequence[str | int] = (),
        hosts: Sequence[str] = (),
        not_hosts: Sequence[str] = (),
    ) -> Operation:
        return cls(
            _field(methods),
            _field(not_methods),
            _field(paths),
            _field(not_paths),
            _ports(ports),
            _ports(not_ports),
            _field(hosts, ignore_case=True),
            _field(not_hosts, ignore_case=True),
        )

    def matches(self, r: RequestAttrs) -> bool:
        if self.ports is not None and r.port not in self.ports:
            return False
        if self.not_ports is not None and r.port in self.not_ports:
            return False
        return (
            _ok(self.methods, self.not_methods, r.method)
            and _ok(self.paths, self.not_paths, r.path)
            and _ok(self.hosts, self.not_hosts, r.host)
        )


def _ports(values: Sequence[str | int]) -> frozenset[int] | None:
    if not values:
        return None
    out: set[int] = set()
    for v in values:
        text = str(v)
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise ValueError(f"authorization policy: port {v!r} is not a number in 1..65535")
        out.add(int(text))
    return frozenset(out)


_HEADER_KEY: Final = re.compile(r"request\.headers\[([^\]]+)\]\Z")
_WHEN_KEYS: Final = ("source.principal", "source.namespace", "destination.port")


@dataclass(frozen=True, slots=True)
class Condition:
    """``when``: ``key`` is request.headers[name], source.principal, source.namespace or
    destination.port."""

    key: str
    header: str | None
    values: StringSet | None
    not_values: StringSet | None

    @classmethod
    def compile(
        cls, key: str, *, values: Sequence[str] = (), not_values: Sequence[str] = ()
    ) -> Condition:
        header = None
        m = _HEADER_KEY.match(key)
        if m:
            header = m.group(1).strip().lower()
        elif key not in _WHEN_KEYS:
            supported = ", ".join(("request.headers[<name>]", *_WHEN_KEYS))
            raise ValueError(f"authorization policy: unsupported when.key {key!r}; use {supported}")
        if not values and not not_values:
            raise ValueError(f"authorization policy: when.key {key!r} needs values or notValues")
        return cls(key, header, _field(values), _field(not_values))

    def matches(self, r: RequestAttrs) -> bool:
        value: str | None
        if self.header is not None:
            value = r.headers.get(self.header)
        elif self.key == "source.principal":
            value = r.principal
        elif self.key == "source.namespace":
            value = r.namespace
        else:
            value = str(r.port)
        return _ok(self.values, self.not_values, value)


@dataclass(frozen=True, slots=True)
class Rule:
    """Empty ``sources``/``operations``/``conditions`` mean "any"."""

    sources: tuple[Source, ...] = ()
    operations: tuple[Operation, ...] = ()
    conditions: tuple[Condition, ...] = ()

    def matches(self, r: RequestAttrs) -> bool:
        # Plain loops: any()/all() over a generator allocate per call, and this is per request.
        if self.sources:
            for source in self.sources:
                if source.matches(r):
                    break
            else:
                return False
        if self.operations:
            for operation in self.operations:
                if operation.matches(r):
                    break
            else:
                return False
        for condition in self.conditions:  # noqa: SIM110 (hot path: no generator)
            if not condition.matches(r):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    action: Action
    rules: tuple[Rule, ...] = ()

    def matches(self, r: RequestAttrs) -> bool:
        # No rules: never matches (Istio: "If not set, the match will never occur").
        for rule in self.rules:  # noqa: SIM110 (hot path: no generator)
            if rule.matches(r):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy_name: str | None
    reason: str
    audit: str | None = None  # name of the AUDIT policy that matched, if any


def evaluate(policies: Sequence[Policy], request: RequestAttrs) -> Decision:
    """Decide one request against the policies that select this workload."""
    try:
        return _evaluate(policies, request)
    except Exception as exc:  # fail closed: a bug or a malformed attribute must not allow
        return Decision(False, None, f"authorization error, denied: {type(exc).__name__}")


def _evaluate(policies: Sequence[Policy], r: RequestAttrs) -> Decision:
    audit = None
    allow: list[Policy] = []
    for p in policies:
        action = p.action
        if action is Action.ALLOW:
            allow.append(p)
        elif action is Action.DENY:
            if p.matches(r):
                return Decision(False, p.name, "matched a DENY policy", _audit(policies, r))
        elif action is Action.CUSTOM:
            if p.matches(r):
                reason = "CUSTOM (ext_authz) is not supported: denied"
                return Decision(False, p.name, reason, _audit(policies, r))
        elif audit is None and p.matches(r):
            audit = p.name
    if not allow:
        return Decision(True, None, "no ALLOW policy applies", audit)
    for p in allow:
        if p.matches(r):
            return Decision(True, p.name, "matched an ALLOW policy", audit)
    return Decision(False, None, "no ALLOW policy matched", audit)


def _audit(policies: Sequence[Policy], r: RequestAttrs) -> str | None:
    for p in policies:
        if p.action is Action.AUDIT and p.matches(r):
            return p.name
    return None


# -- path normalisation --------------------------------------------------------------------------

_HEX: Final = "0123456789abcdefABCDEF"
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar minus pct-encoded, plus "/" (and "\\", turned into "/").
_PATH_CHARS: Final = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
# Already normal: non-empty segments of plain pchars, none "." or "..", optional trailing "/".
_ALREADY_NORMAL: Final = re.compile(r"(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9\-._~!$&'()*+,;=:@]+)+/?|/")


def normalize_path(raw: bytes | str) -> str | None:
    """Normalise a request path for matching, as Istio's DECODE_AND_MERGE_SLASHES: drop the
    query, percent-decode unreserved characters and %2F / %5C, turn ``\\`` into ``/``, merge
    slashes, resolve ``.`` and ``..`` (RFC 3986 5.2.4; ``..`` above the root stays at the root).
    Other percent-encodings stay encoded, with upper-case hex. Case is kept.

    Returns None for a path the proxy must reject with 400: not ASCII, not starting with ``/``
    (or ``\\``), a character outside RFC 3986 pchar (space, control, ``"<>`` ...), a fragment,
    an invalid percent-encoding, or an encoded NUL.
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
    else:
        text = raw
    query = text.find("?")
    if query >= 0:
        text = text[:query]
    if not text or text[0] not in "/\\":
        return None
    if _ALREADY_NORMAL.fullmatch(text):
        return text
    chars: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "%":
            if i + 2 >= n:
                return None
            hi, lo = text[i + 1], text[i + 2]
            if hi not in _HEX or lo not in _HEX:
                return None
            byte = int(hi + lo, 16)
            if byte == 0:
                return None
            decoded = chr(byte)
            if decoded in _UNRESERVED or decoded == "/":
                chars.append(decoded)
            elif decoded == "\\":
                chars.append("/")
            else:
                chars.append("%" + (hi + lo).upper())
            i += 3
            continue
        if c == "\\":
            chars.append("/")
        elif c in _PATH_CHARS:
            chars.append(c)
        else:
            return None
        i += 1
    return _remove_dot_segments("".join(chars))


def _remove_dot_segments(path: str) -> str:
    out: list[str] = []
    trailing = False
    for seg in path.split("/")[1:]:
        if seg in ("", "."):
            trailing = True  # an empty segment is a merged slash; "/a/." ends in "/"
        elif seg == "..":
            if out:
                out.pop()
            trailing = True
        else:
            out.append(seg)
            trailing = False
    if not out:
        return "/"
    return "/" + "/".join(out) + ("/" if trailing else "")
