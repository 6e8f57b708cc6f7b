"""mesh.yaml `readinessProbe` of a workload: how its proxy checks the app (Kubernetes' fields).

```yaml
readinessProbe:
  httpGet: {path: /ready, port: 8080}   # or tcpSocket: {port: 8080}; port may be a port name
  periodSeconds: 10                     # Kubernetes' defaults; fractions allowed (tests)
  timeoutSeconds: 1
  failureThreshold: 3
  successThreshold: 1
  initialDelaySeconds: 0
```
Kubernetes' other probe kinds (`exec`, `grpc`) and the HTTP fields we cannot honour yet
(`scheme: HTTPS`, `host`, `httpHeaders`) are errors, never silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from yaml.nodes import Node, ScalarNode

from registry.config.model import Port, ReadinessProbe
from registry.config.reader import Conv, Cx, Obj, as_number, as_str, int_in, join

__all__ = ["parse_readiness_probe"]

_KINDS = ("httpGet", "tcpSocket")
_UNSUPPORTED_KINDS = ("exec", "grpc")
_TIMING = ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold",
           "successThreshold")
# An origin-form path (RFC 9112 section 3.2.1): visible ASCII, no space, so it cannot split
# the request line the proxy writes.
_PATH = re.compile(r"/[\x21-\x7e]*")
_MIN_S, _MAX_S = 0.05, 86400.0


def _seconds(min_s: float) -> Conv[float]:
    def conv(cx: Cx, node: Node, path: str) -> float | None:
        v = as_number(cx, node, path)
        if v is not None and not min_s <= v <= _MAX_S:
            cx.error(node, path, f"{v:g} s is outside {min_s:g}..{_MAX_S:g} seconds")
            return None
        return v

    return conv


def _port(ports: Sequence[Port]) -> Conv[int]:
    """A port number, or the name of one of the service's ports (Kubernetes' named port)."""

    def conv(cx: Cx, node: Node, path: str) -> int | None:
        if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:str":
            name = as_str(cx, node, path)
            hit = next((p for p in ports if p.name == name), None)
            if hit is None:
                known = ", ".join(f"`{p.name}`" for p in ports) or "none"
                cx.error(node, path, f"no port named `{name}` in this service (ports: {known})")
                return None
            return hit.port
        return int_in(1, 65535, "port")(cx, node, path)

    return conv


def _path(cx: Cx, node: Node, path: str) -> str | None:
    v = as_str(cx, node, path)
    if v is not None and not _PATH.fullmatch(v):
        cx.error(node, path, f"path `{v}` must start with `/` and hold no spaces or "
                 "control characters")
        return None
    return v


def parse_readiness_probe(
    cx: Cx, node: Node, path: str, ports: Sequence[Port]
) -> ReadinessProbe | None:
    o = Obj(cx, node, path, (*_KINDS, *_UNSUPPORTED_KINDS, *_TIMING))
    if not o.ok and not o.fields:
        return None
    kinds = [k for k in _KINDS if k in o]
    for key in _UNSUPPORTED_KINDS:
        if key in o:
            cx.error(o.key_node(key), join(path, key), f"probe kind `{key}` is not supported: "
                     "the proxy checks its app with `httpGet` or `tcpSocket`")
            return None
    if len(kinds) != 1:
        what = "both " + " and ".join(f"`{k}`" for k in kinds) if kinds else "none"
        cx.error(node, path, f"a readinessProbe needs exactly one of `httpGet` or `tcpSocket` "
                 f"(found {what})")
        return None
    kind = kinds[0]
    if kind == "httpGet":
        h = o.obj(kind, ("path", "port"), ("scheme", "host", "httpHeaders"))
        http_path = h.get("path", _path, "/") if h is not None else None
        port = h.require("port", _port(ports)) if h is not None else None
        ok = h is not None and h.ok and http_path is not None
    else:
        t = o.obj(kind, ("port",), ("host",))
        http_path, port = "/", t.require("port", _port(ports)) if t is not None else None
        ok = t is not None and t.ok
    delay = o.get("initialDelaySeconds", _seconds(0.0), 0.0)
    period = o.get("periodSeconds", _seconds(_MIN_S), 10.0)
    timeout = o.get("timeoutSeconds", _seconds(_MIN_S), 1.0)
    failures = o.get("failureThreshold", int_in(1, 1000, "failureThreshold"), 3)
    successes = o.get("successThreshold", int_in(1, 1000, "successThreshold"), 1)
    values = (port, http_path, delay, period, timeout, failures, successes)
    if not ok or not o.ok or any(v is None for v in values):
        return None
    assert port is not None and http_path is not None and delay is not None
    assert period is not None and timeout is not None
    assert failures is not None and successes is not None
    return ReadinessProbe("http" if kind == "httpGet" else "tcp", port, http_path, delay,
                          period, timeout, failures, successes)

