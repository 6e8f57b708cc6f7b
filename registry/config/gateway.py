"""Gateway (networking.istio.io): the ports, hosts and TLS a gateway proxy serves.

Istio's fields and meanings (networking/v1 Gateway); what we do not implement yet is an
error naming the field. `credentialName: NAME` is read as the pair NAME.crt (the PEM
certificate chain) and NAME.key (its PEM private key) in the config directory: Istio reads a
Kubernetes secret of that name; off Kubernetes the config directory is where the secret is.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from pathlib import Path

from yaml.nodes import Node

from registry.config.diagnostics import Source
from registry.config.model import Gateway, GatewayServer
from registry.config.reader import Cx, Obj, as_bool, as_str, as_str_map, int_in, one_of
from registry.config.scope import Scope

__all__ = ["SPEC_FIELDS", "external_host", "parse_gateway"]

SPEC_FIELDS = ("selector", "servers")
_PROTOCOLS = ("HTTP", "HTTPS")
_PROTOCOLS_LATER = ("HTTP2", "GRPC", "TCP", "TLS", "MONGO")
_TLS_LATER = ("PASSTHROUGH", "MUTUAL", "ISTIO_MUTUAL", "AUTO_PASSTHROUGH", "OPTIONAL_MUTUAL")
_TLS_FIELDS_LATER = (
    "serverCertificate", "privateKey", "caCertificates", "caCrl", "credentialNames",
    "subjectAltNames", "verifyCertificateSpki", "verifyCertificateHash", "minProtocolVersion",
    "maxProtocolVersion", "cipherSuites", "tlsCertificates",
)
_CREDENTIAL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?")
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(\*|(\*\.)?{_LABEL}(\.{_LABEL})*)")


def external_host(cx: Cx, node: Node, path: str) -> str | None:
    """A host name as a gateway sees it (`shop.example.com`, `*.example.com`, `*`),
    lowercased; Istio allows a wildcard only as the whole first label."""
    host = as_str(cx, node, path)
    return None if host is None else _host_name(cx, node, path, host)


def parse_gateway(cx: Cx, scope: Scope, spec: Obj, name: str, source: Source,
                  directory: Path) -> Gateway | None:
    selector = spec.get("selector", as_str_map)
    if "selector" not in spec:
        spec.missing("selector")
    elif selector == ():
        cx.error(spec.value_node("selector"), spec.sub("selector"),
                 "an empty selector: name the gateway proxies' labels (e.g. "
                 "`istio: ingressgateway`)")
        selector = None
    servers = [_server(cx, scope, n, p, directory) for n, p in spec.items("servers")]
    if "servers" not in spec:
        spec.missing("servers")
    elif not servers and spec.ok:
        cx.error(spec.value_node("servers"), spec.sub("servers"), "a Gateway needs servers")
    ok = [s for s in servers if s is not None]
    by_port: dict[int, GatewayServer] = {}
    for (node, path), s in zip(spec.items("servers"), servers, strict=False):
        if s is None:
            continue
        first = by_port.setdefault(s.port, s)
        if first.protocol != s.protocol:
            cx.error(node, path, f"port {s.port} is {first.protocol} in an earlier server and "
                     f"{s.protocol} here: one port serves one protocol")
            return None
    if selector is None or len(ok) != len(servers) or not spec.ok or not ok:
        return None
    return Gateway(name, selector, tuple(ok), source)


def _server(cx: Cx, scope: Scope, node: Node, path: str, directory: Path) -> GatewayServer | None:
    o = Obj(cx, node, path, ("port", "hosts", "tls", "name"), ("bind", "defaultEndpoint"))
    port = o.obj("port", ("number", "name", "protocol"), ("targetPort",))
    number = port_name = protocol = None
    if port is None:
        o.missing("port")
    else:
        number = port.require("number", int_in(1, 65535, "port"))
        port_name = port.get("name", as_str, "")
        protocol = port.require("protocol", one_of(_PROTOCOLS, _PROTOCOLS_LATER, upper=True))
    hosts: list[str] = []
    items = o.items("hosts")
    if "hosts" not in o:
        o.missing("hosts")
    for hnode, hpath in items:
        h = _server_host(cx, scope, hnode, hpath)
        if h is not None:
            hosts.append(h)
    tls = o.obj("tls", ("mode", "credentialName", "httpsRedirect"), _TLS_FIELDS_LATER)
    mode = cred = None
    redirect = False
    digest = ""
    if tls is not None:
        redirect = bool(tls.get("httpsRedirect", as_bool, False))
        mode = tls.get("mode", one_of(("SIMPLE",), _TLS_LATER, upper=True))
        if "credentialName" in tls:
            cred = tls.get("credentialName", as_str)
            if cred is not None:
                digest = _credential(cx, tls.value_node("credentialName"),
                                     tls.sub("credentialName"), directory, cred) or ""
                cred = cred if digest else None
    if protocol == "HTTPS":
        if tls is None or "mode" not in tls:
            cx.error(node, path, "an HTTPS server needs `tls.mode: SIMPLE` and "
                     "`tls.credentialName`")
            return None
        if mode == "SIMPLE" and tls is not None and "credentialName" not in tls:
            tls.missing("credentialName")
            return None
        if redirect and tls is not None:
            cx.error(tls.key_node("httpsRedirect"), tls.sub("httpsRedirect"),
                     "httpsRedirect belongs on the plain HTTP server that redirects to this one")
            return None
    elif protocol == "HTTP" and tls is not None and ("mode" in tls or "credentialName" in tls):
        cx.error(tls.node, tls.path, "a plain HTTP server takes only `tls.httpsRedirect`: "
                 "put TLS settings on an HTTPS server")
        return None
    if (number is None or port_name is None or protocol is None or not o.ok
            or (port is not None and not port.ok) or (tls is not None and not tls.ok)
            or len(hosts) != len(items) or not items
            or (protocol == "HTTPS" and (mode is None or cred is None))):
        if "hosts" in o and not items and o.ok:
            cx.error(o.value_node("hosts"), o.sub("hosts"), "a server needs at least one host")
        return None
    return GatewayServer(number, port_name, protocol, tuple(hosts), redirect, mode, cred, digest)


def _server_host(cx: Cx, scope: Scope, node: Node, path: str) -> str | None:
    """Istio's `namespace/host`: the namespace part says whose VirtualServices may bind to
    the host. This mesh has one namespace, so `*/`, `./` and `<mesh namespace>/` all mean
    every VirtualService; another namespace is an error."""
    text = as_str(cx, node, path)
    if text is None:
        return None
    if "/" in text:
        ns, _, _host = text.partition("/")
        if ns not in ("*", ".", scope.namespace):
            cx.error(node, path, f"namespace `{ns}` in `{text}`: every VirtualService of this "
                     f"mesh is in namespace `{scope.namespace}`; write `*/{_host}` or `{_host}`")
            return None
        return _host_name(cx, node, path, _host)
    return _host_name(cx, node, path, text)


def _host_name(cx: Cx, node: Node, path: str, host: str) -> str | None:
    low = host.lower()
    if not _HOST.fullmatch(low) or len(low) > 253:
        cx.error(node, path, f"`{host}` is not a host name: write a DNS name such as "
                 "shop.example.com, a wildcard such as *.example.com, or *")
        return None
    return low


def _credential(cx: Cx, node: Node, path: str, directory: Path, name: str) -> str | None:
    """sha256 of NAME.crt + NAME.key in the config directory, once both load as a matching
    certificate chain and key; else an error saying which file and what is wrong."""
    if not _CREDENTIAL.fullmatch(name):
        cx.error(node, path, f"credentialName `{name}` is not a file name (letters, digits, "
                 "'-', '_' and '.')")
        return None
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    missing = [p.name for p in (crt, key) if not p.is_file()]
    if missing:
        cx.error(node, path, f"credentialName `{name}`: {' and '.join(missing)} not found in "
                 f"the config directory ({directory}): put the PEM certificate chain in "
                 f"{name}.crt and its private key in {name}.key")
        return None
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        data = crt.read_bytes() + b"\0" + key.read_bytes()
    except (ssl.SSLError, OSError) as exc:
        cx.error(node, path, f"credentialName `{name}`: {crt.name} and {key.name} do not load "
                 f"as a PEM certificate chain and its private key ({exc})")
        return None
    return hashlib.sha256(data).hexdigest()
