"""Load a config directory as a whole: every file, every document, every cross-reference.

`load_directory` never raises for bad input: every problem becomes a Diagnostic, and a
MeshConfig is returned only when there are none.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

from yaml.nodes import Node, ScalarNode

from common.hostmatch import hosts_overlap
from registry.config import opaque
from registry.config.canary import API_VERSION as CANARY_API
from registry.config.canary import SPEC_FIELDS as CANARY_FIELDS
from registry.config.canary import parse_canary
from registry.config.destination_rule import parse_destination_rule
from registry.config.diagnostics import Diagnostic, Source
from registry.config.gateway import SPEC_FIELDS as GATEWAY_FIELDS
from registry.config.gateway import parse_gateway
from registry.config.mesh_file import MeshFile, check_route_rate_limits, parse_mesh_file
from registry.config.model import (
    AuthorizationPolicy,
    CanarySpec,
    DestinationRule,
    Gateway,
    MeshConfig,
    PeerAuthentication,
    VirtualService,
)
from registry.config.reader import Cx, Obj, as_str, as_str_map
from registry.config.scope import Scope
from registry.config.security import parse_authorization_policy, parse_peer_authentication
from registry.config.virtual_service import parse_virtual_service
from registry.config.yamlsource import ParsedFile, read_yaml_file

__all__ = ["MESH_FILE", "LoadResult", "load_directory"]

MESH_FILE = "mesh.yaml"
_SUFFIXES = (".yaml", ".yml")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")

Resource = (VirtualService | DestinationRule | AuthorizationPolicy | PeerAuthentication
            | CanarySpec | Gateway)

# kind -> (API group, spec fields, Istio spec fields we do not support yet)
_KINDS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "VirtualService": (
        "networking.istio.io", ("hosts", "http", "tcp", "exportTo", "gateways"), ("tls",)),
    "DestinationRule": (
        "networking.istio.io", ("host", "trafficPolicy", "subsets", "exportTo"),
        ("workloadSelector",)),
    "AuthorizationPolicy": (
        "security.istio.io", ("selector", "action", "rules"),
        ("provider", "targetRef", "targetRefs")),
    "PeerAuthentication": (
        "security.istio.io", ("selector", "mtls", "portLevelMtls"), ()),
    "Gateway": ("networking.istio.io", GATEWAY_FIELDS, ()),
    # The mesh's own resource (registry/config/canary.py): group/version in CANARY_API.
    "Canary": (CANARY_API.split("/")[0], CANARY_FIELDS, ()),
}
_VERSIONS = ("v1", "v1beta1")
_OTHER_ISTIO_KINDS = (
    "ServiceEntry", "Sidecar", "WorkloadEntry", "WorkloadGroup", "EnvoyFilter",
    "ProxyConfig", "RequestAuthentication", "Telemetry", "WasmPlugin",
)


@dataclass(frozen=True, slots=True)
class LoadResult:
    config: MeshConfig | None
    errors: tuple[Diagnostic, ...]
    # What the config accepts but does not do as written (an HTTP route on a port relayed
    # as TCP: registry/config/opaque.py); never blocks a snapshot.
    warnings: tuple[Diagnostic, ...] = ()

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.errors


def load_directory(directory: Path) -> LoadResult:
    """Load and validate `directory` (mesh.yaml plus Istio resources) as one snapshot."""
    try:
        return _Load(Path(directory)).run()
    except Exception as exc:  # never raise for bad input; a bug still gets reported
        msg = f"internal error while loading ({type(exc).__name__}: {exc}); please report it"
        return LoadResult(None, (Diagnostic(".", 1, 1, "", msg),))


@dataclass(slots=True)
class _Named:
    resource: Resource
    cx: Cx
    name_node: Node
    host_nodes: list[tuple[Node, str]]
    # A VirtualService's `gateways` entries naming a Gateway: (node, path, name).
    gateway_refs: list[tuple[Node, str, str]] = dataclass_field(default_factory=list)
    # A gateway-bound VirtualService's hosts: (node, path, host).
    external_hosts: list[tuple[Node, str, str]] = dataclass_field(default_factory=list)


class _Load:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.errors: list[Diagnostic] = []
        self.complete = True  # False once something could not be read: skip cross-checks
        self.broken_gateways: set[str] = set()

    def run(self) -> LoadResult:
        files = self._read_files()
        if files is None:
            return LoadResult(None, tuple(self.errors))
        mesh = self._mesh(files.pop(MESH_FILE, None))
        scope = Scope(mesh.namespace if mesh else "default",
                      {s.name: s for s in mesh.services} if mesh else None)
        if mesh is None:
            self.complete = False
        named: list[_Named] = []
        for name in sorted(files):
            cx = Cx(name)
            for doc in files[name].documents:
                entry = self._resource(cx, scope, doc)
                if entry is not None:
                    named.append(entry)
            self.errors.extend(cx.errors)
        self._check_unique(named)
        self._check_gateway_refs(named)
        self._check_gateway_ports(named)
        if self.complete:
            self._check_subsets(scope, named)
            if mesh is not None:
                self.errors.extend(check_route_rate_limits(mesh.services, tuple(
                    e.resource for e in named if isinstance(e.resource, VirtualService))))
        errors = tuple(sorted(set(self.errors), key=lambda d: (d.file != MESH_FILE, d)))
        if errors or mesh is None:
            return LoadResult(None, errors)
        vss = tuple(e.resource for e in named if isinstance(e.resource, VirtualService))
        return LoadResult(self._snapshot(mesh, named, self._digest), (),
                          tuple(sorted(set(opaque.warnings(mesh.services, vss)))))

    # -- files -----------------------------------------------------------------------------

    def _read_files(self) -> dict[str, ParsedFile] | None:
        try:
            names = sorted(os.listdir(self.dir))
        except NotADirectoryError:
            self.errors.append(Diagnostic(str(self.dir), 1, 1, "", "not a directory"))
            return None
        except FileNotFoundError:
            self.errors.append(Diagnostic(str(self.dir), 1, 1, "", "no such directory"))
            return None
        except OSError as exc:
            msg = f"cannot list the directory: {exc.strerror or exc}"
            self.errors.append(Diagnostic(str(self.dir), 1, 1, "", msg))
            return None
        names = [n for n in names if n.endswith(_SUFFIXES) and not n.startswith(".")]
        if MESH_FILE not in names:
            hint = " (rename mesh.yml to mesh.yaml)" if "mesh.yml" in names else ""
            self.errors.append(Diagnostic(MESH_FILE, 1, 1, "",
                                          f"missing: the config directory needs a mesh.yaml{hint}"))
        files: dict[str, ParsedFile] = {}
        digest = hashlib.sha256()
        for name in names:
            parsed = read_yaml_file(self.dir / name, name)
            if isinstance(parsed, Diagnostic):
                self.errors.append(parsed)
                self.complete = False
                continue
            files[name] = parsed
            digest.update(f"{name}\0{len(parsed.raw)}\0".encode())
            digest.update(parsed.raw)
        self._digest = digest.hexdigest()
        return files

    def _mesh(self, parsed: ParsedFile | None) -> MeshFile | None:
        if parsed is None:
            return None
        cx = Cx(MESH_FILE)
        mesh = None
        if not parsed.documents:
            self.errors.append(Diagnostic(MESH_FILE, 1, 1, "", "mesh.yaml is empty"))
        else:
            for extra in parsed.documents[1:]:
                cx.error(extra, "", "mesh.yaml holds one document; put Istio resources in "
                         "other files")
            mesh = parse_mesh_file(cx, parsed.documents[0])
        self.errors.extend(cx.errors)
        return mesh if not cx.errors else None

    # -- one resource document ---------------------------------------------------------------

    def _resource(self, cx: Cx, scope: Scope, doc: Node) -> _Named | None:
        top = Obj(cx, doc, "", ("apiVersion", "kind", "metadata", "spec", "status"))
        kind = top.require("kind", as_str)
        api = top.require("apiVersion", as_str)
        if kind is None or api is None:
            return None
        if kind not in _KINDS:
            self._unknown_kind(cx, top, kind)
            return None
        group, fields, unsupported = _KINDS[kind]
        if kind == "Canary" and api != CANARY_API:
            cx.error(top.value_node("apiVersion"), "apiVersion",
                     f"apiVersion `{api}` is not supported for Canary: use {CANARY_API}")
            return None
        if kind != "Canary" and api not in (f"{group}/{v}" for v in _VERSIONS):
            cx.error(top.value_node("apiVersion"), "apiVersion",
                     f"apiVersion `{api}` is not supported for {kind}: use {group}/v1 or "
                     f"{group}/v1beta1")
            return None
        meta = self._metadata(cx, scope, top)
        if meta is None:
            return None
        name, name_node = meta
        spec_node = top.fields["spec"][1] if "spec" in top else _null_at(doc)
        spec = Obj(cx, spec_node, "spec", fields, unsupported)
        source = Source(cx.file, doc.start_mark.line + 1, doc.start_mark.column + 1)
        resource: Resource | None
        hosts: list[tuple[Node, str]] = []
        refs: list[tuple[Node, str, str]] = []
        external: list[tuple[Node, str, str]] = []
        if kind == "VirtualService":
            vs = resource = parse_virtual_service(cx, scope, spec, name, source)
            # Only the sidecars' hosts are one VirtualService's each; a gateway's are
            # external names, looked up per Gateway.
            hosts = spec.items("hosts") if vs is not None and vs.for_mesh else []
            if vs is not None:
                refs = [(n, p, g) for (n, p), g in zip(spec.items("gateways"), vs.gateways,
                                                       strict=False) if g != "mesh"]
                if not vs.for_mesh:
                    external = [(n, p, h) for (n, p), h in zip(spec.items("hosts"), vs.hosts,
                                                               strict=False)]
        elif kind == "Gateway":
            resource = parse_gateway(cx, scope, spec, name, source, self.dir)
            if resource is None:
                self.broken_gateways.add(name)  # VirtualServices naming it: no second error
        elif kind == "DestinationRule":
            resource = parse_destination_rule(cx, scope, spec, name, source)
            if resource is None:
                self.complete = False  # its subsets are unknown: do not report them missing
            else:
                hosts = [(spec.value_node("host"), spec.sub("host"))]
        elif kind == "AuthorizationPolicy":
            resource = parse_authorization_policy(cx, spec, name, source)
        elif kind == "Canary":
            resource = parse_canary(cx, scope, spec, name, source)
            hosts = [(spec.value_node("service"), spec.sub("service"))] if resource else []
        else:
            resource = parse_peer_authentication(cx, spec, name, source)
        if resource is None:
            return None
        return _Named(resource, cx, name_node, hosts, refs, external)

    def _unknown_kind(self, cx: Cx, top: Obj, kind: str) -> None:
        node = top.value_node("kind")
        if kind in _OTHER_ISTIO_KINDS:
            cx.error(node, "kind", f"kind `{kind}` is not supported yet")
            return
        close = difflib.get_close_matches(kind, list(_KINDS), n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        cx.error(node, "kind", f"unknown kind `{kind}`{hint}; supported: {', '.join(_KINDS)}")

    def _metadata(self, cx: Cx, scope: Scope, top: Obj) -> tuple[str, Node] | None:
        if "metadata" not in top:
            top.missing("metadata")
            return None
        meta = top.obj("metadata", ("name", "namespace", "labels", "annotations"))
        assert meta is not None
        name = meta.require("name", as_str)
        namespace = meta.get("namespace", as_str)
        meta.get("labels", as_str_map)
        meta.get("annotations", as_str_map)
        if name is not None and not _NAME.fullmatch(name):
            cx.error(meta.value_node("name"), "metadata.name", f"`{name}` is not a valid name "
                     "(lowercase letters, digits, '-' and '.')")
            return None
        if namespace is not None and namespace != scope.namespace:
            cx.error(meta.value_node("namespace"), "metadata.namespace",
                     f"namespace `{namespace}` is not the mesh namespace `{scope.namespace}` "
                     "(set in mesh.yaml)")
            return None
        if name is None or not meta.ok:
            return None
        return name, meta.value_node("name")

    # -- cross-resource checks --------------------------------------------------------------

    def _check_unique(self, named: list[_Named]) -> None:
        seen_names: dict[tuple[str, str], _Named] = {}
        seen_hosts: dict[tuple[str, str], _Named] = {}
        for entry in named:
            kind = type(entry.resource).__name__.removesuffix("Spec")  # CanarySpec: Canary
            key = (kind, entry.resource.name)
            first = seen_names.setdefault(key, entry)
            if first is not entry:
                self._error(entry.cx, entry.name_node, "metadata.name",
                               f"duplicate {kind} `{entry.resource.name}` (first defined at "
                               f"{first.resource.source})")
            hosts = _hosts(entry.resource)
            for (node, path), host in zip(entry.host_nodes, hosts, strict=False):
                other = seen_hosts.setdefault((kind, host), entry)
                if other is not entry:
                    self._error(entry.cx, node, path, f"a second {kind} for `{host}`: "
                                   f"{kind} `{other.resource.name}` ({other.resource.source}) "
                                   "already covers it; Istio would merge or ignore one, so "
                                   "put both in one resource")

    def _check_gateway_ports(self, named: list[_Named]) -> None:
        """Gateways selecting the same proxies share their ports: one protocol per port."""
        seen: dict[tuple[tuple[tuple[str, str], ...], int], tuple[str, Gateway]] = {}
        for entry in named:
            gw = entry.resource
            if not isinstance(gw, Gateway):
                continue
            for server in gw.servers:
                first = seen.setdefault((gw.selector, server.port), (server.protocol, gw))
                if first[0] != server.protocol and first[1] is not gw:
                    self._error(entry.cx, entry.name_node, "metadata.name",
                                f"Gateway `{gw.name}` serves port {server.port} as "
                                f"{server.protocol}, Gateway `{first[1].name}` "
                                f"({first[1].source}) as {first[0]}, on the same gateway "
                                "proxies (same selector): one port serves one protocol")
                    break

    def _check_gateway_refs(self, named: list[_Named]) -> None:
        gateways = {e.resource.name: e.resource for e in named
                    if isinstance(e.resource, Gateway)}
        for entry in named:
            for node, path, name in entry.gateway_refs:
                if name not in gateways and name not in self.broken_gateways:
                    known = ", ".join(sorted(gateways)) or "none"
                    self._error(entry.cx, node, path, f"unknown Gateway `{name}` (defined: "
                                f"{known}); `mesh` means the sidecars")
            bound = [gateways[n] for _, _, n in entry.gateway_refs if n in gateways]
            served = sorted({h for g in bound for s in g.servers for h in s.hosts})
            if len(bound) != len(entry.gateway_refs):
                continue  # an unknown or broken Gateway: reported, nothing to check against
            for node, path, host in entry.external_hosts:
                # Istio drops such a host silently: every request for it would get a 404.
                if not any(hosts_overlap(host, s) for s in served):
                    names = ", ".join(f"`{g.name}`" for g in bound)
                    self._error(entry.cx, node, path, f"host `{host}` is not served by "
                                f"Gateway {names} (its servers' hosts: {', '.join(served)})")

    def _check_subsets(self, scope: Scope, named: list[_Named]) -> None:
        rules = {e.resource.host: e.resource for e in named
                 if isinstance(e.resource, DestinationRule)}
        for ref in scope.subset_refs:
            rule = rules.get(ref.service)
            if rule is None:
                msg = (f"subset `{ref.subset}` of `{ref.service}` is not defined: no "
                       f"DestinationRule for `{ref.service}` defines subsets")
            elif rule.subset(ref.subset) is None:
                known = ", ".join(s.name for s in rule.subsets) or "none"
                msg = (f"unknown subset `{ref.subset}` of `{ref.service}`: DestinationRule "
                       f"`{rule.name}` ({rule.source}) defines: {known}")
            else:
                continue
            self._error(ref.cx, ref.node, ref.path, msg)

    def _error(self, cx: Cx, node: Node, path: str, message: str) -> None:
        mark = node.start_mark
        self.errors.append(Diagnostic(cx.file, mark.line + 1, mark.column + 1, path, message))

    # -- the snapshot -------------------------------------------------------------------------

    def _snapshot(self, mesh: MeshFile, named: list[_Named], digest: str) -> MeshConfig:
        def of(t: type[Resource]) -> tuple[Resource, ...]:
            return tuple(sorted((e.resource for e in named if isinstance(e.resource, t)),
                                key=lambda r: r.name))

        gateways = tuple(g for g in of(Gateway) if isinstance(g, Gateway))
        creds = sorted({s.credential_sha256 for g in gateways for s in g.servers
                        if s.credential_sha256})
        if creds:  # a renewed certificate is a new config version, pushed to the gateways
            digest = hashlib.sha256(" ".join((digest, *creds)).encode()).hexdigest()
        return MeshConfig(
            trust_domain=mesh.trust_domain,
            namespace=mesh.namespace,
            certificate_ttl_s=mesh.certificate_ttl_s,
            registry_address=mesh.registry_address,
            registry_port=mesh.registry_port,
            services=mesh.services,
            virtual_services=of(VirtualService),  # type: ignore[arg-type]
            destination_rules=of(DestinationRule),  # type: ignore[arg-type]
            authorization_policies=of(AuthorizationPolicy),  # type: ignore[arg-type]
            peer_authentications=of(PeerAuthentication),  # type: ignore[arg-type]
            base_dir=str(self.dir.resolve().parent),
            digest=digest,
            canaries=of(CanarySpec),  # type: ignore[arg-type]
            gateways=gateways,
        )


def _hosts(resource: Resource) -> tuple[str, ...]:
    if isinstance(resource, VirtualService):
        return resource.hosts
    if isinstance(resource, DestinationRule):
        return (resource.host,)
    if isinstance(resource, CanarySpec):
        return (resource.service,)
    return ()


def _null_at(node: Node) -> Node:
    return ScalarNode("tag:yaml.org,2002:null", "", node.start_mark, node.start_mark)
