"""Targeted edits of config files: shift an HTTP route's weights between subsets, in place.

The registry publishes every valid change of the config directory, so editing the file *is*
the deployment. An edit must therefore keep everything the user wrote: comments, key order,
quoting, indentation, line endings and the file's other documents stay byte-identical. We
never re-serialise YAML; we compose the file (PyYAML nodes carry `start_mark`/`end_mark`
with a character index) and splice new text at those positions:

- an existing `weight:` scalar is replaced by the new number;
- an entry without `weight` (a lone destination, which Istio weighs 100) gets a `weight`
  line at its keys' column (or `, weight: N` inside a flow mapping);
- a subset the DestinationRule defines but the route does not list yet gets a new
  `destination` + `weight` entry after the last one, laid out like that last entry.

A subset set to 0 keeps its entry with `weight: 0` (Istio accepts 0): the layout the user
wrote survives, and the next shift (`v2=10`) is a one-number change. Subsets the route lists
but the request does not name go to 0 as well: the named weights already add up to 100.

Everything here is pure (text in, text out) except `check_in_copy`, which loads the
directory with the edited file in a temporary copy before the caller writes anything.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from registry.config.loader import LoadResult, load_directory
from registry.config.model import HTTPRoute, MeshConfig, VirtualService

__all__ = [
    "EditError",
    "WeightPlan",
    "check_in_copy",
    "parse_weights",
    "plan_weights",
    "route_label",
    "route_positions",
    "set_weights",
    "unified_diff",
    "verify_weights",
]

_ARG = re.compile(r"(?P<subset>[^=\s]+)=(?P<weight>\S*)")


class EditError(Exception):
    """What is wrong and what to do, in one line; nothing has been written."""


@dataclass(frozen=True, slots=True)
class WeightPlan:
    """Which route of which VirtualService changes, and its weights before and after."""

    service: str
    virtual_service: VirtualService
    route_index: int  # in spec.http
    old: tuple[tuple[str, int], ...]  # subset -> weight, in the route's order
    new: tuple[tuple[str, int], ...]  # the route's subsets, then the added ones

    @property
    def route(self) -> HTTPRoute:
        return self.virtual_service.http[self.route_index]

    @property
    def file(self) -> str:
        return self.virtual_service.source.file

    @property
    def label(self) -> str:
        return route_label(self.route, self.route_index)

    @property
    def added(self) -> tuple[str, ...]:
        have = {s for s, _ in self.old}
        return tuple(s for s, _ in self.new if s not in have)


def route_label(route: HTTPRoute, index: int) -> str:
    """The route's name, or `http[i]` for an unnamed one (what `--route` accepts)."""
    return route.name or f"http[{index}]"


# --- the request --------------------------------------------------------------------------


def parse_weights(args: Sequence[str]) -> dict[str, int]:
    """`["v1=90", "v2=10"]` -> `{"v1": 90, "v2": 10}`; weights whole percents adding to 100."""
    weights: dict[str, int] = {}
    if not args:
        raise EditError("give at least one SUBSET=WEIGHT, e.g. v1=90 v2=10")
    for arg in args:
        m = _ARG.fullmatch(arg)
        if m is None:
            raise EditError(f"`{_shown(arg)}` is not SUBSET=WEIGHT: write e.g. v1=90 (no spaces)")
        subset, raw = m["subset"], m["weight"]
        what = f"for `{_shown(subset)}`"
        if not raw:
            raise EditError(f"`{_shown(arg)}` has no weight: write e.g. {_shown(subset)}=10")
        if raw.startswith("-") and raw[1:].isascii() and raw[1:].replace(".", "", 1).isdigit():
            raise EditError(f"weight `{raw}` {what} is negative: weights are 0..100")
        if not (raw.isascii() and raw.isdigit()):
            raise EditError(f"weight `{_shown(raw)}` {what} is not a whole number: Istio "
                            "weights are integer percents, 0..100")
        if subset in weights:
            raise EditError(f"subset `{_shown(subset)}` is given twice: give each subset once")
        weight = int(raw)
        if weight > 100:
            raise EditError(f"weight {weight} {what} is over 100: weights are percents")
        weights[subset] = weight
    total = sum(weights.values())
    if total != 100:
        terms = " + ".join(f"{s}={w}" for s, w in weights.items())
        raise EditError(f"weights add up to {total}, not 100 ({terms}): make them add up to 100")
    return weights


def _shown(text: str) -> str:
    """User input as it can be shown on one line (control characters escaped)."""
    return text if text.isprintable() else repr(text)[1:-1]


def plan_weights(
    config: MeshConfig, service: str, weights: Mapping[str, int], route: str | None = None
) -> WeightPlan:
    """Find the route to change and check the request against the (valid) config."""
    if config.service(service) is None:
        known = ", ".join(s.name for s in config.services) or "none"
        close = difflib.get_close_matches(service, [s.name for s in config.services], n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise EditError(f"unknown service `{_shown(service)}`{hint}; mesh.yaml defines: {known}")
    vs = config.virtual_service_for(service)
    if vs is None:
        raise EditError(
            f"no VirtualService routes `{service}`: create one (kind: VirtualService, hosts: "
            f"[{service}], http: [{{route: [{{destination: {{host: {service}, subset: v1}}}}]}}]"
            ") in the config directory; see docs/route.md")
    rule = config.destination_rule_for(service)
    if rule is None or not rule.subsets:
        raise EditError(f"no DestinationRule for `{service}` defines subsets: add one with a "
                        "subset per version (see docs/route.md), then set weights")
    names = [s.name for s in rule.subsets]
    for subset in weights:
        if subset not in names:
            close = difflib.get_close_matches(subset, names, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise EditError(f"unknown subset `{_shown(subset)}` of `{service}`{hint}: "
                            f"DestinationRule `{rule.name}` ({rule.source}) defines: "
                            f"{', '.join(names)}")
    index = _pick_route(vs, service, route)
    http = vs.http[index]
    where = f"route `{route_label(http, index)}` of VirtualService `{vs.name}` ({vs.source})"
    old: dict[str, int] = {}
    for rd in http.route:
        dest = rd.destination
        if dest.host != service:
            raise EditError(f"{where} also sends to `{dest.host}`: set-weight shifts traffic "
                            f"between subsets of `{service}` only; edit the file by hand")
        if dest.subset is None:
            raise EditError(f"{where} sends to `{service}` without a subset: give that "
                            "destination a subset (e.g. subset: v1), then set weights")
        if dest.subset in old:
            raise EditError(f"{where} lists subset `{dest.subset}` twice: merge those "
                            "entries by hand, then set weights")
        old[dest.subset] = rd.weight
    new = {s: weights.get(s, 0) for s in old}
    new.update({s: w for s, w in weights.items() if s not in old})
    return WeightPlan(service, vs, index, tuple(old.items()), tuple(new.items()))


def _pick_route(vs: VirtualService, service: str, name: str | None) -> int:
    labels = [route_label(r, i) for i, r in enumerate(vs.http)]
    where = f"VirtualService `{vs.name}` ({vs.source})"
    if not vs.http:
        raise EditError(f"{where} has no http routes (tcp routes are not supported by "
                        "set-weight yet); edit the file by hand")
    if name is not None:
        if name in labels:
            return labels.index(name)
        raise EditError(f"{where} has no http route `{_shown(name)}`; its routes: "
                        f"{', '.join(labels)}")
    if len(vs.http) == 1:
        return 0
    mine = [i for i, r in enumerate(vs.http)
            if all(d.destination.host == service and d.destination.subset for d in r.route)]
    if len(mine) == 1:
        return mine[0]
    raise EditError(f"{where} has {len(labels)} http routes ({', '.join(labels)}): say which "
                    "with --route NAME")


# --- the text edit --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class _Splice:
    start: int
    seq: int  # keeps insertions at one position in the order they were made
    end: int
    text: str


def set_weights(text: str, plan: WeightPlan) -> str:
    """The file's text with the route's weights changed; every other byte kept."""
    seq, items = _route_items(text, plan)
    nl = "\r\n" if "\r\n" in text else "\n"
    splices: list[_Splice] = []
    final = len(plan.new)
    new = dict(plan.new)
    for item, (subset, _) in zip(items, plan.old, strict=True):
        weight = _get(item, "weight")
        if weight is not None:
            if _int(weight) != new[subset]:
                splices.append(_Splice(_start(weight), len(splices), _end(weight),
                                       str(new[subset])))
        elif final > 1:  # a lone destination without weight had 100; now it needs one
            splices.append(_add_weight(text, item, new[subset], nl, len(splices)))
    if plan.added:
        tpl = items[-1]
        rendered = [_render_entry(text, tpl, s, new[s], nl) for s in plan.added]
        if seq.flow_style:
            pos = _content_end(tpl)
            splices.append(_Splice(pos, len(splices), pos, "".join(f", {r}" for r in rendered)))
        else:
            pos, lead = _after_line(text, _content_end(tpl))
            dash = _dash(text, tpl) if tpl.flow_style else ""
            block = nl.join(dash + r for r in rendered)
            splices.append(_Splice(pos, len(splices), pos,
                                   (nl + block) if lead else (block + nl)))
    out, last = [], 0
    for sp in sorted(splices):
        out.append(text[last:sp.start])
        out.append(sp.text)
        last = sp.end
    out.append(text[last:])
    return "".join(out)


def _route_items(text: str, plan: WeightPlan) -> tuple[SequenceNode, list[MappingNode]]:
    """`spec.http[i].route` of the plan's VirtualService in this text, and its entries."""
    vs = plan.virtual_service
    http = _http_items(text, vs)
    route = _get(http[plan.route_index], "route") if plan.route_index < len(http) else None
    items = [n for n in route.value if isinstance(n, MappingNode)] if isinstance(
        route, SequenceNode) else []
    if not isinstance(route, SequenceNode) or not items or (
            [_subset_of(n) for n in items] != [s for s, _ in plan.old]):
        raise EditError(f"{vs.source.file} changed while it was being edited: run the "
                        "command again")
    return route, items


def route_positions(text: str, vs: VirtualService) -> list[tuple[int, int]]:
    """1-based (line, column) of each `spec.http[i]` of `vs` in its file's text."""
    return [(n.start_mark.line + 1, n.start_mark.column + 1) for n in _http_items(text, vs)]


def _http_items(text: str, vs: VirtualService) -> list[MappingNode]:
    try:
        docs = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise EditError(f"{vs.source.file} no longer parses ({exc}): fix it, then run the "
                        "command again") from None
    for doc in docs:
        if not isinstance(doc, MappingNode) or _str(_get(doc, "kind")) != "VirtualService":
            continue
        if _str(_get(_get(doc, "metadata"), "name")) != vs.name:
            continue
        http = _get(_get(doc, "spec"), "http")
        if isinstance(http, SequenceNode):
            return [n for n in http.value if isinstance(n, MappingNode)]
    raise EditError(f"VirtualService `{vs.name}` is no longer in {vs.source.file}: run the "
                    "command again")


def _add_weight(text: str, item: MappingNode, weight: int, nl: str, seq: int) -> _Splice:
    if item.flow_style:
        pos = _content_end(item.value[-1][1])
        return _Splice(pos, seq, pos, f", weight: {weight}")
    pos, lead = _after_line(text, _content_end(item))
    line = " " * item.start_mark.column + f"weight: {weight}"
    return _Splice(pos, seq, pos, (nl + line) if lead else (line + nl))


def _render_entry(text: str, tpl: MappingNode, subset: str, weight: int, nl: str) -> str:
    """A new `destination` + `weight` entry for `subset`, laid out like `tpl` (key order,
    flow or block, quoting, host spelling, port); its other keys (`headers`) and comments
    are not copied."""
    dest = _get(tpl, "destination")
    assert isinstance(dest, MappingNode)
    subset_node = _get(dest, "subset")
    assert isinstance(subset_node, ScalarNode)
    value = _scalar_text(subset, subset_node.style)
    keys = [k.value for k, _ in tpl.value if isinstance(k, ScalarNode)]
    weight_first = "weight" in keys and keys.index("weight") < keys.index("destination")
    if tpl.flow_style or dest.flow_style:
        src, off = text[_start(dest):_content_end(dest)], _start(dest)
        dest_lines = [f"destination: {src[:_start(subset_node) - off]}{value}"
                      f"{src[_end(subset_node) - off:]}"]
    else:
        dest_lines = ["destination:", *_block_lines(text, dest, {"subset": value})]
    parts = [[f"weight: {weight}"], dest_lines] if weight_first else [
        dest_lines, [f"weight: {weight}"]]
    if tpl.flow_style:
        brace = "{ " if text[_start(tpl) + 1:_start(tpl) + 2] == " " else "{"
        close = " }" if brace == "{ " else "}"
        return brace + ", ".join(p[0] for p in parts) + close
    # Each key's line starts at the item's column (after the dash for the first one);
    # the nested lines of a block destination already carry their own indentation.
    col = " " * tpl.start_mark.column
    lines: list[str] = []
    for part in parts:
        lines.append((col if lines else _dash(text, tpl)) + part[0])
        lines.extend(part[1:])
    return nl.join(lines)


def _block_lines(text: str, node: MappingNode, replace: Mapping[str, str]) -> list[str]:
    """A block mapping written out again at its own column, without its comments."""
    pad = " " * node.start_mark.column
    lines: list[str] = []
    for key, value in node.value:
        name = text[_start(key):_end(key)]
        if isinstance(key, ScalarNode) and key.value in replace:
            lines.append(f"{pad}{name}: {replace[key.value]}")
        elif isinstance(value, MappingNode) and not value.flow_style:
            lines.append(f"{pad}{name}:")
            lines.extend(_block_lines(text, value, {}))
        else:
            lines.append(f"{pad}{name}: {text[_start(value):_content_end(value)]}")
    return lines


def _scalar_text(value: str, style: str | None) -> str:
    if style in ("'", '"'):
        return f"{style}{value}{style}"
    # A plain `1`, `no` or `null` would not read back as a string: quote it.
    return value if isinstance(yaml.safe_load(value), str) else f'"{value}"'


def _dash(text: str, item: Node) -> str:
    """What precedes a block sequence entry on its line (`    - `)."""
    line_start = text.rfind("\n", 0, _start(item)) + 1
    dash = text[line_start:_start(item)]
    return dash if dash.strip() == "-" else " " * max(item.start_mark.column - 2, 0) + "- "


def _after_line(text: str, index: int) -> tuple[int, bool]:
    """Where the line holding `index` ends (after its newline), and whether it had none."""
    nl = text.find("\n", index)
    return (len(text), True) if nl < 0 else (nl + 1, False)


def _content_end(node: Node) -> int:
    """Where the node's own text ends (a block collection's end_mark is after what follows)."""
    if isinstance(node, MappingNode | SequenceNode) and not node.flow_style and node.value:
        last = node.value[-1]
        return _content_end(last[1] if isinstance(node, MappingNode) else last)
    return _end(node)


def _start(node: Node) -> int:
    return int(node.start_mark.index)


def _end(node: Node) -> int:
    return int(node.end_mark.index)


def _get(node: Node | None, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    return next((v for k, v in node.value if isinstance(k, ScalarNode) and k.value == key), None)


def _str(node: Node | None) -> str | None:
    return str(node.value) if isinstance(node, ScalarNode) else None


def _int(node: Node) -> int | None:
    value = yaml.safe_load(_str(node) or "") if isinstance(node, ScalarNode) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _subset_of(item: MappingNode) -> str | None:
    return _str(_get(_get(item, "destination"), "subset"))


# --- checking and showing ------------------------------------------------------------------


def check_in_copy(directory: Path, file: str, text: str) -> LoadResult:
    """Load `directory` as it would be with `file` holding `text`, in a temporary copy."""
    with tempfile.TemporaryDirectory(prefix="meshctl-edit-") as tmp:
        copy = Path(tmp) / "mesh"
        copy.mkdir()
        for name in os.listdir(directory):
            if name.startswith(".") or name == file:
                continue
            if name.endswith((".crt", ".key")):  # a Gateway's credentialName pair: the
                os.symlink(directory / name, copy / name)  # loader checks it; not copied
            elif name.endswith((".yaml", ".yml")):
                shutil.copyfile(directory / name, copy / name)
        (copy / file).write_bytes(text.encode("utf-8"))
        return load_directory(copy)


def verify_weights(result: LoadResult, plan: WeightPlan) -> None:
    """The edited config must be valid and carry exactly the planned weights."""
    if result.config is None or result.errors:
        first = str(result.errors[0]) if result.errors else "no snapshot"
        raise EditError(f"the edit would make the config invalid ({first}); nothing was "
                        "written: please report this")
    vs = result.config.virtual_service_for(plan.service)
    got = None
    if vs is not None and plan.route_index < len(vs.http):
        got = tuple((d.destination.subset or "", d.weight)
                    for d in vs.http[plan.route_index].route)
    if got != plan.new:
        raise EditError(f"the edited file would carry {got}, not {plan.new}; nothing was "
                        "written: please report this")


def unified_diff(file: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True),
                                        fromfile=f"a/{file}", tofile=f"b/{file}"))
