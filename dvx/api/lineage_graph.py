"""Lineage: the graph of dataset and model versions a version was made from (upstream) and the versions
made from it (downstream).

Two kinds of edge come from the version records (dvx/refs/store.py):

- "parent": a version and the version(s) it was drafted from (`parents`): the previous version of the
  same name, a merge, or another dataset's version for a derived dataset (`--parent other@v2`);
- "input": a version and the dataset versions it was made from (`inputs`), e.g. a model's training data.

An edge goes from the newer version to the older one: `from` was made from `to`. Nodes are versions,
identified by (kind, version id); an id that no version record in the store carries (a deleted or
never-copied version) becomes a node of kind "unknown" that keeps the ref recorded at the time, when
there is one, and says whether that version was deleted (`deleted`).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from dvx.api.repo import Repo
from dvx.errors import NotFoundError, UsageError
from dvx.refs import Refs, VersionRecord, parse_ref
from dvx.refs.store import DeletedVersion

KINDS = ("dataset", "model")
UNKNOWN = "unknown"
EDGE_KINDS = ("parent", "input")
SHORT_ID = 12
_MAX_INDENT = 32  # text tree levels drawn by indentation


@dataclass
class LineageNode:
    """One version in the graph. `direction` is "focus", "upstream" or "downstream"; `depth` is the
    number of hops from the focus. Unknown nodes carry only `id` (and `ref` when it was recorded)."""

    key: str  # "<kind>:<id>", unique in the graph
    kind: str  # dataset | model | unknown
    id: str
    name: str | None = None
    version: int | None = None
    ref: str | None = None
    created: str | None = None
    author: str | None = None
    message: str | None = None
    direction: str = "upstream"
    depth: int = 0
    # An unknown node whose recorded ref names a version deleted from the store (shown as "[deleted]" in
    # the text and pictures; not in to_dict yet, whose keys tests/test_lineage.py fixes).
    deleted: bool = False

    @property
    def short_id(self) -> str:
        return self.id[:SHORT_ID]

    @property
    def label(self) -> str:
        """The ref (or "?" for an unknown version whose ref was never recorded)."""
        return self.ref or "?"

    def to_dict(self) -> dict:
        return {"key": self.key, "kind": self.kind, "id": self.id, "name": self.name, "version": self.version,
                "ref": self.ref, "created": self.created, "author": self.author, "message": self.message,
                "direction": self.direction, "depth": self.depth}


@dataclass(frozen=True)
class LineageEdge:
    """`from_node` was made from `to_node` (node keys); `kind` is "parent" or "input"."""

    from_node: str
    to_node: str
    kind: str

    def to_dict(self) -> dict:
        return {"from": self.from_node, "to": self.to_node, "kind": self.kind}


@dataclass
class LineageGraph:
    focus: str  # key of the focus node
    nodes: dict[str, LineageNode] = field(default_factory=dict)
    edges: list[LineageEdge] = field(default_factory=list)
    # What was asked for: the directions walked and the hop limit (None: none).
    upstream: bool = True
    downstream: bool = True
    depth: int | None = None

    @property
    def focus_node(self) -> LineageNode:
        return self.nodes[self.focus]

    def sorted_nodes(self) -> list[LineageNode]:
        """Focus first, then upstream, then downstream; nearer before farther; then by kind, name, version."""
        order = {"focus": 0, "upstream": 1, "downstream": 2}
        return sorted(self.nodes.values(), key=lambda n: (order.get(n.direction, 3), n.depth, n.kind, n.name or "",
                                                          n.version or 0, n.ref or "", n.id))

    def sorted_edges(self) -> list[LineageEdge]:
        rank = {n.key: i for i, n in enumerate(self.sorted_nodes())}
        return sorted(self.edges, key=lambda e: (rank[e.from_node], rank[e.to_node], e.kind))

    def to_dict(self) -> dict:
        return {"focus": self.focus, "upstream": self.upstream, "downstream": self.downstream, "depth": self.depth,
                "nodes": [n.to_dict() for n in self.sorted_nodes()],
                "edges": [e.to_dict() for e in self.sorted_edges()]}

    # -- renderings ----------------------------------------------------------------------------
    def to_text(self) -> str:
        """An indented tree per direction: `name@vN  shortid  (parent|input)` on each line. A version
        reached again by another path is listed again but not expanded ("[shown above]")."""
        focus = self.focus_node
        lines = [f"{focus.label}  {focus.short_id}  {focus.kind}"]
        for direction, wanted in (("upstream", self.upstream), ("downstream", self.downstream)):
            if not wanted:
                continue
            lines.append(f"{direction}:")
            children = self._children(direction)
            if not children.get(self.focus):
                lines.append("  (none)")
                continue
            self._tree(self.focus, children, lines)
        return "\n".join(lines)

    def _children(self, direction: str) -> dict[str, list[tuple[str, str]]]:
        """node key → [(next node key, edge kind)] walking away from the focus in `direction`."""
        out: dict[str, list[tuple[str, str]]] = {}
        for edge in self.edges:
            if direction == "upstream" and self.nodes[edge.to_node].direction == "upstream":
                out.setdefault(edge.from_node, []).append((edge.to_node, edge.kind))
            elif direction == "downstream" and self.nodes[edge.from_node].direction == "downstream":
                out.setdefault(edge.to_node, []).append((edge.from_node, edge.kind))
        return out

    def _tree(self, root: str, children: dict, lines: list[str]) -> None:
        """Depth-first, without recursion (a dataset's history can be thousands of versions deep); past
        _MAX_INDENT levels the indent stops growing and the line starts with its level instead."""
        expanded = {root}
        stack = [iter(children.get(root, ()))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                continue
            child, kind = step
            level = len(stack)
            node = self.nodes[child]
            indent = "  " * min(level, _MAX_INDENT) + (f"[{level}] " if level > _MAX_INDENT else "")
            line = f"{indent}{node.label}  {node.short_id}  ({kind})"
            if node.kind == UNKNOWN:
                line += "  [deleted]" if node.deleted else "  [missing]"
            elif node.kind != self.focus_node.kind:
                line += f"  [{node.kind}]"
            if child in expanded and children.get(child):
                lines.append(line + "  [shown above]")
                continue
            lines.append(line)
            expanded.add(child)
            stack.append(iter(children.get(child, ())))

    def to_dot(self) -> str:
        """Graphviz DOT: datasets as boxes, models as ellipses, unknown versions dashed, the focus bold and
        filled. Arrows point from a version to what it was made from; drawn bottom-up (`rankdir=BT`), so
        data flows down the page. Render with `dot -Tsvg lineage.dot -o lineage.svg`."""
        shapes = {"dataset": "box", "model": "ellipse", UNKNOWN: "box"}
        out = ["digraph lineage {", "  rankdir=BT;", '  node [fontname="Helvetica"];',
               '  edge [fontname="Helvetica", fontsize=10];']
        for node in self.sorted_nodes():
            attrs = [f'label="{_dot_escape(_label_lines(node))}"', f"shape={shapes.get(node.kind, 'box')}"]
            if node.key == self.focus:
                attrs.append('style="bold,filled"')
                attrs.append('fillcolor="lightyellow"')
            elif node.kind == UNKNOWN:
                attrs.append("style=dashed")
            out.append(f'  "{_dot_escape([node.key])}" [{", ".join(attrs)}];')
        for edge in self.sorted_edges():
            style = ", style=dashed" if edge.kind == "input" else ""
            out.append(f'  "{_dot_escape([edge.from_node])}" -> "{_dot_escape([edge.to_node])}" '
                       f'[label="{edge.kind}"{style}];')
        out.append("}")
        return "\n".join(out) + "\n"

    def to_mermaid(self) -> str:
        """A Mermaid flowchart: datasets as rectangles, models as stadiums, unknown versions as hexagons,
        one line per edge (`-->` parent, `-.->` input), the focus styled by the `focus` class."""
        ids = {n.key: _mermaid_id(n) for n in self.nodes.values()}
        out = ["flowchart BT"]
        for node in self.sorted_nodes():
            label = _mermaid_escape(_label_lines(node))
            open_, close = {"dataset": ("[", "]"), "model": ("([", "])")}.get(node.kind, ("{{", "}}"))
            out.append(f'  {ids[node.key]}{open_}"{label}"{close}')
        for edge in self.sorted_edges():
            arrow = "-->" if edge.kind == "parent" else "-.->"
            out.append(f"  {ids[edge.from_node]} {arrow}|{edge.kind}| {ids[edge.to_node]}")
        out.append("  classDef focus stroke-width:3px,font-weight:bold;")
        out.append(f"  class {ids[self.focus]} focus;")
        return "\n".join(out) + "\n"


# -- building the graph ------------------------------------------------------------------------------

def lineage(repo: Repo, ref: str, kind: str | None = None, upstream: bool = True, downstream: bool = True,
            depth: int | None = None) -> LineageGraph:
    """The lineage graph around the version `ref` (NAME[@SELECTOR]) in `repo`.

    `kind` ("dataset" or "model") says what `ref` names; without it a dataset of that name is tried
    first, then a model (so when a dataset and a model share a name, the dataset wins: pass
    kind="model" for the model). `upstream` follows parents and inputs transitively; `downstream`
    finds the versions (datasets and models of any name) whose parents or inputs include the focus,
    transitively. `depth` limits the hops in each direction (None: no limit).

    Cost: version records carry only their own parents and inputs, so finding what was made *from* a
    version (downstream), or a version whose recorded ref no longer matches (upstream), reads every
    version record of every dataset and model in the store once per call: one small read each.
    Upstream alone usually reads just the versions it visits.
    """
    if kind is not None and kind not in KINDS:
        raise UsageError(f"invalid kind {kind!r}: use dataset or model")
    if depth is not None and depth < 0:
        raise UsageError(f"invalid depth {depth}: give 0 or more hops")
    index = _Index(repo)
    focus_kind, focus = _resolve_focus(index, ref, kind)
    graph = LineageGraph(focus=_key(focus_kind, focus.manifest), upstream=upstream, downstream=downstream,
                         depth=depth)
    graph.nodes[graph.focus] = _node(focus_kind, focus, "focus", 0)
    records = {graph.focus: focus}
    if upstream:
        _walk_upstream(graph, index, records, depth)
    if downstream:
        _walk_downstream(graph, index, records, depth)
    _add_links_between_shown_nodes(graph, records)
    graph.edges = list(dict.fromkeys(graph.edges))
    return graph


def _resolve_focus(index: _Index, ref: str, kind: str | None) -> tuple[str, VersionRecord]:
    parsed = parse_ref(ref)
    if kind is not None:
        return kind, index.refs[kind].resolve(parsed)
    for candidate in KINDS:
        refs = index.refs[candidate]
        if refs.version_numbers(parsed.name):
            return candidate, refs.resolve(parsed)
    for candidate in KINDS:  # only deleted versions: resolving says "was deleted"
        refs = index.refs[candidate]
        if refs.all_version_numbers(parsed.name):
            return candidate, refs.resolve(parsed)
    raise NotFoundError(f"no dataset or model named {parsed.name!r} in this store "
                        f"(see `dvx dataset list` and `dvx model list`)")


def _walk_upstream(graph: LineageGraph, index: _Index, records: dict[str, VersionRecord],
                   depth: int | None) -> None:
    queue = deque([(graph.focus, 0)])
    seen = {graph.focus}
    while queue:
        key, hops = queue.popleft()
        record = records.get(key)
        if record is None or (depth is not None and hops >= depth):
            continue  # unknown versions have no recorded parents; the depth limit stops here
        kind = graph.nodes[key].kind
        for edge_kind, ids, refs in (("parent", record.parents, record.parent_refs),
                                     ("input", record.inputs, record.input_refs)):
            for i, target_id in enumerate(ids):
                hint = refs[i] if len(refs) == len(ids) else None
                found = index.lookup(target_id, hint, _target_kinds(edge_kind, kind))
                if found is None:
                    target_key = _key(UNKNOWN, target_id)
                    if target_key not in graph.nodes:
                        graph.nodes[target_key] = LineageNode(key=target_key, kind=UNKNOWN, id=target_id, ref=hint,
                                                              direction="upstream", depth=hops + 1,
                                                              deleted=index.was_deleted(target_id, hint, kind))
                else:
                    target_kind, target = found
                    target_key = _key(target_kind, target.manifest)
                    if target_key not in graph.nodes:
                        graph.nodes[target_key] = _node(target_kind, target, "upstream", hops + 1)
                        records[target_key] = target
                _add_edge(graph, key, target_key, edge_kind)
                if target_key not in seen:
                    seen.add(target_key)
                    queue.append((target_key, hops + 1))


def _walk_downstream(graph: LineageGraph, index: _Index, records: dict[str, VersionRecord],
                     depth: int | None) -> None:
    made_from = index.reverse()
    queue = deque([(graph.focus, 0)])
    seen = {graph.focus}
    while queue:
        key, hops = queue.popleft()
        if depth is not None and hops >= depth:
            continue
        for child_kind, child, edge_kind in made_from.get(key, ()):
            child_key = _key(child_kind, child.manifest)
            if child_key not in graph.nodes:
                graph.nodes[child_key] = _node(child_kind, child, "downstream", hops + 1)
                records[child_key] = child
            _add_edge(graph, child_key, key, edge_kind)
            if child_key not in seen:
                seen.add(child_key)
                queue.append((child_key, hops + 1))


def _add_links_between_shown_nodes(graph: LineageGraph, records: dict[str, VersionRecord]) -> None:
    """The walks record the links they follow; add the other links between versions already in the
    graph (a model downstream that was also trained on an upstream dataset, or two versions at the depth
    limit), so that the picture does not hide how shown versions relate. Reads nothing."""
    for key, record in records.items():
        kind = graph.nodes[key].kind
        for edge_kind, ids in (("parent", record.parents), ("input", record.inputs)):
            for target_id in ids:
                target = next((_key(k, target_id) for k in (*_target_kinds(edge_kind, kind), UNKNOWN)
                               if _key(k, target_id) in graph.nodes), None)
                if target is not None:
                    _add_edge(graph, key, target, edge_kind)


def _add_edge(graph: LineageGraph, from_key: str, to_key: str, kind: str) -> None:
    graph.edges.append(LineageEdge(from_key, to_key, kind))  # duplicates are dropped at the end


class _Index:
    """Version records by id, read lazily. The ref recorded next to an id (`parent_refs`, `input_refs`)
    is tried first: one read, kept when that version still has this id. The first lookup it cannot
    answer, or the first downstream walk, reads every record of every name of both kinds."""

    def __init__(self, repo: Repo) -> None:
        self.refs: dict[str, Refs] = {kind: repo.refs(kind) for kind in KINDS}
        self._by_id: dict[str, dict[str, VersionRecord]] | None = None
        self._by_ref: dict[tuple[str, str, int], VersionRecord] = {}
        self._all: list[tuple[str, VersionRecord]] = []

    def _scan(self) -> dict[str, dict[str, VersionRecord]]:
        if self._by_id is None:
            self._by_id = {kind: {} for kind in KINDS}
            for kind in KINDS:
                refs = self.refs[kind]
                for name in refs.names():
                    for record in refs.versions(name):
                        self._all.append((kind, record))
                        self._by_ref[kind, record.name, record.version] = record
                        self._by_id[kind].setdefault(record.manifest, record)  # an id under two names: the first
        return self._by_id

    def lookup(self, version_id: str, hint: str | None, kinds: Iterable[str]) -> tuple[str, VersionRecord] | None:
        kinds = tuple(kinds)
        if hint is not None:
            record = self._by_hint(hint, kinds[0])
            if record is not None and record.manifest == version_id:
                return kinds[0], record
        by_id = self._scan()
        for kind in kinds:
            record = by_id[kind].get(version_id)
            if record is not None:
                return kind, record
        return None

    def _by_hint(self, hint: str, kind: str) -> VersionRecord | None:
        """The version a recorded NAME@vN names now (None if it is gone or the text is no such ref)."""
        try:
            ref = parse_ref(hint)
        except UsageError:
            return None
        number = ref.version_number
        if number is None:
            return None
        if self._by_id is not None:
            return self._by_ref.get((kind, ref.name, number))
        try:
            return self.refs[kind].get_version(ref.name, number)
        except (NotFoundError, UsageError):
            return None

    def was_deleted(self, version_id: str, hint: str | None, kind: str) -> bool:
        """Whether the recorded ref `hint` names a version of this id that was deleted."""
        try:
            ref = parse_ref(hint) if hint else None
        except UsageError:
            return False
        if ref is None or ref.version_number is None:
            return False
        for candidate in (kind, *[k for k in KINDS if k != kind]) if kind in KINDS else KINDS:
            try:
                record = self.refs[candidate].get_record(ref.name, ref.version_number)
            except (NotFoundError, UsageError):
                continue
            if isinstance(record, DeletedVersion) and record.deleted_manifest == version_id:
                return True
        return False

    def reverse(self) -> dict[str, list[tuple[str, VersionRecord, str]]]:
        """node key → [(kind, record, edge kind)] of the versions made from it, in name/version order.
        An id is matched to a kind the way `lookup` does it, so both walks agree on every node."""
        by_id = self._scan()
        out: dict[str, list[tuple[str, VersionRecord, str]]] = {}
        for kind, record in self._all:
            for edge_kind, ids in (("parent", record.parents), ("input", record.inputs)):
                order = _target_kinds(edge_kind, kind)
                for target in dict.fromkeys(ids):
                    target_kind = next((k for k in order if target in by_id[k]), UNKNOWN)
                    out.setdefault(_key(target_kind, target), []).append((kind, record, edge_kind))
        return out


def _target_kinds(edge_kind: str, kind: str) -> tuple[str, ...]:
    """Where an id is looked for: a parent among versions of the same kind first, an input among datasets."""
    first = kind if edge_kind == "parent" and kind in KINDS else "dataset"
    return (first, *[k for k in KINDS if k != first])


def _key(kind: str, version_id: str) -> str:
    return f"{kind}:{version_id}"


def _node(kind: str, record: VersionRecord, direction: str, depth: int) -> LineageNode:
    return LineageNode(key=_key(kind, record.manifest), kind=kind, id=record.manifest, name=record.name,
                       version=record.version, ref=record.ref, created=record.created, author=record.author,
                       message=record.message, direction=direction, depth=depth)


# -- escaping for the graph languages ----------------------------------------------------------------

_MESSAGE_WIDTH = 40


def _label_lines(node: LineageNode) -> list[str]:
    """ref, short id and the first line of the message (shortened) for a drawn node."""
    lines = [node.label if node.kind != UNKNOWN else f"{node.label} ({'deleted' if node.deleted else 'missing'})",
             node.short_id]
    message = (node.message or "").strip().splitlines()
    if message:
        first = message[0]
        lines.append(first if len(first) <= _MESSAGE_WIDTH else first[:_MESSAGE_WIDTH - 1] + "…")
    return lines


def _dot_escape(lines: list[str]) -> str:
    """The inside of a DOT double-quoted string: backslashes and quotes escaped (so `\\l`, `\\N` … in a
    message stay literal), control characters dropped, lines joined by DOT's centred line break `\\n`."""
    return "\\n".join(_CONTROL.sub("", line).replace("\\", "\\\\").replace('"', '\\"') for line in lines)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MERMAID_ENTITIES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;"}


def _mermaid_escape(lines: list[str]) -> str:
    """Label text safe inside Mermaid's `["…"]`: quotes and markup characters as Mermaid entity codes
    (`#` first, so a message containing `#quot;` stays literal), lines joined by `<br/>`."""
    return "<br/>".join("".join(_MERMAID_ENTITIES.get(c, c) for c in _CONTROL.sub("", line)) for line in lines)


def _mermaid_id(node: LineageNode) -> str:
    """A node id Mermaid accepts: letters, digits and underscores only."""
    return f"{node.kind}_{re.sub(r'[^A-Za-z0-9_]', '_', node.id)}"
