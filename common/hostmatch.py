"""Host matching as Istio's gateways do it: `*` matches every name, `*.example.com` every
name ending in `.example.com`, anything else itself; the more specific pattern wins.
Shared by the config check (registry/config: a VirtualService's hosts against its
Gateway's) and the gateway proxy (proxy/gateway: a request's Host)."""

from __future__ import annotations

__all__ = ["host_matches", "hosts_overlap", "request_host", "specificity"]


def host_matches(pattern: str, host: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def hosts_overlap(a: str, b: str) -> bool:
    """Whether two patterns share a name (`*.example.com` and `shop.example.com` do; so do
    `*.example.com` and `*.shop.example.com`): Istio binds a VirtualService host to a
    Gateway server whose hosts overlap it."""
    return host_matches(a, b) or host_matches(b, a)


def specificity(pattern: str) -> tuple[int, int]:
    """Sort key, most specific first: exact names, then longer wildcards, `*` last."""
    if pattern == "*":
        return (2, 0)
    if pattern.startswith("*."):
        return (1, -len(pattern))
    return (0, -len(pattern))


def request_host(raw: bytes | None) -> str:
    """A Host / :authority value as a lowercase name, its port dropped (IPv6 literals kept
    in brackets)."""
    if not raw:
        return ""
    text = raw.decode("latin-1").strip().lower()
    if text.startswith("["):
        end = text.find("]")
        return text[: end + 1] if end > 0 else text
    return text.partition(":")[0]
