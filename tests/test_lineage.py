"""`dvx lineage`: upstream/downstream graphs of dataset and model versions, built on a real local store.

The graph used throughout (arrows: "was made from"):

    raw@v1 <-parent- raw@v2 <-parent- clean@v1 <-input- m@v1 <-parent- m@v2
       ^                                  ^                               |
       |                                  +------------input--------------+
       +--------------------------input-----------------------------------+
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_dvx, write_tree

from dvx.api.datasets import Dataset
from dvx.api.lineage_graph import LineageGraph, lineage
from dvx.api.repo import Repo
from dvx.errors import NotFoundError, UsageError
from dvx.refs import VersionRecord

RAW_V1_MESSAGE = 'first "raw" cut \\ with a backslash'


def _commit_dataset(name: str, folder: Path, message: str, *parents: str) -> None:
    args = ["dataset", "create", name] + [a for p in parents for a in ("--parent", p)]
    run_dvx(*args)
    if folder is not None:
        run_dvx("dataset", "add", str(folder))
    run_dvx("dataset", "commit", "-m", message)


def _commit_model(name: str, folder: Path, message: str, inputs: list[str]) -> None:
    repo = Repo()
    try:
        draft = Dataset.create(name, kind="model", inputs=inputs, repo=repo)
        draft.add(str(folder))
        draft.commit(message)
    finally:
        repo.close()


@pytest.fixture
def graph_store(tmp_path: Path) -> dict[str, str]:
    """raw@v1, raw@v2, clean@v1 (from raw@v2), m@v1 (on clean@v1), m@v2 (on clean@v1 and raw@v1).
    Returns ref → version id."""
    src = tmp_path / "src"
    _commit_dataset("raw", write_tree(src / "r1", {"a.csv": "x,y\n1,2\n"}), RAW_V1_MESSAGE)
    _commit_dataset("raw", write_tree(src / "r2", {"b.csv": "x,y\n3,4\n"}), "second batch")
    _commit_dataset("clean", None, "clean <it> & #quot; up", "raw@v2")
    _commit_model("m", write_tree(src / "m1", {"model.bin": b"\x00weights-1"}), "first model", ["clean@v1"])
    _commit_model("m", write_tree(src / "m2", {"model.bin": b"\x00weights-2"}), "retrained",
                  ["clean@v1", "raw@v1"])
    repo = Repo()
    try:
        ids = {}
        for kind, names in (("dataset", ("raw", "clean")), ("model", ("m",))):
            for name in names:
                for record in repo.refs(kind).versions(name):
                    ids[record.ref] = record.manifest
        return ids
    finally:
        repo.close()


def _graph(ref: str, **kwargs) -> LineageGraph:
    repo = Repo()
    try:
        return lineage(repo, ref, **kwargs)
    finally:
        repo.close()


def _refs(graph: LineageGraph, direction: str | None = None) -> set[str]:
    return {n.ref for n in graph.nodes.values() if direction is None or n.direction == direction}


def _edges(graph: LineageGraph) -> set[tuple[str, str, str]]:
    return {(graph.nodes[e.from_node].ref, graph.nodes[e.to_node].ref, e.kind) for e in graph.edges}


UPSTREAM_OF_M2 = {
    ("m@v2", "m@v1", "parent"), ("m@v2", "clean@v1", "input"), ("m@v2", "raw@v1", "input"),
    ("m@v1", "clean@v1", "input"), ("clean@v1", "raw@v2", "parent"), ("raw@v2", "raw@v1", "parent"),
}


# -- the graph ---------------------------------------------------------------------------------------

def test_upstream_of_a_model_follows_parents_and_inputs(graph_store):
    graph = _graph("m@v2")
    assert graph.focus_node.ref == "m@v2" and graph.focus_node.kind == "model"
    assert graph.focus_node.id == graph_store["m@v2"] and graph.focus == f"model:{graph_store['m@v2']}"
    assert _refs(graph, "upstream") == {"m@v1", "clean@v1", "raw@v2", "raw@v1"}
    assert _refs(graph, "downstream") == set()
    assert _edges(graph) == UPSTREAM_OF_M2
    kinds = {n.ref: n.kind for n in graph.nodes.values()}
    assert kinds == {"m@v2": "model", "m@v1": "model", "clean@v1": "dataset", "raw@v2": "dataset",
                     "raw@v1": "dataset"}
    depths = {n.ref: n.depth for n in graph.nodes.values()}
    assert depths == {"m@v2": 0, "m@v1": 1, "clean@v1": 1, "raw@v1": 1, "raw@v2": 2}
    raw1 = next(n for n in graph.nodes.values() if n.ref == "raw@v1")
    assert (raw1.name, raw1.version, raw1.id, raw1.message) == ("raw", 1, graph_store["raw@v1"], RAW_V1_MESSAGE)
    assert raw1.created and raw1.author


def test_downstream_of_a_dataset_reaches_derived_datasets_and_models(graph_store):
    graph = _graph("raw@v1")
    assert graph.focus_node.kind == "dataset"
    assert _refs(graph, "downstream") == {"raw@v2", "clean@v1", "m@v1", "m@v2"}
    assert _refs(graph, "upstream") == set()
    assert _edges(graph) == UPSTREAM_OF_M2  # the same six links, found from the other end
    depths = {n.ref: n.depth for n in graph.nodes.values()}
    assert depths == {"raw@v1": 0, "raw@v2": 1, "m@v2": 1, "clean@v1": 2, "m@v1": 3}


def test_both_directions_around_a_derived_dataset(graph_store):
    graph = _graph("clean")  # no selector: the latest, clean@v1
    assert graph.focus_node.ref == "clean@v1"
    assert _refs(graph, "upstream") == {"raw@v2", "raw@v1"}
    assert _refs(graph, "downstream") == {"m@v1", "m@v2"}
    # m@v2 was also trained on raw@v1: a link between a downstream and an upstream version is shown too
    assert _edges(graph) == UPSTREAM_OF_M2
    up = _graph("clean@v1", downstream=False)
    down = _graph("clean@v1", upstream=False)
    assert _refs(up) == {"clean@v1", "raw@v2", "raw@v1"} and not (up.downstream or _refs(up, "downstream"))
    assert _refs(down) == {"clean@v1", "m@v1", "m@v2"} and not down.upstream
    assert _edges(down) == {("m@v1", "clean@v1", "input"), ("m@v2", "clean@v1", "input"),
                            ("m@v2", "m@v1", "parent")}


def test_depth_limits_hops_in_each_direction(graph_store):
    near = _graph("m@v2", depth=1)
    assert _refs(near, "upstream") == {"m@v1", "clean@v1", "raw@v1"}
    # links between versions at the limit are shown; links to versions beyond it are not
    assert _edges(near) == UPSTREAM_OF_M2 - {("clean@v1", "raw@v2", "parent"), ("raw@v2", "raw@v1", "parent")}
    assert _refs(_graph("m@v2", depth=2), "upstream") == {"m@v1", "clean@v1", "raw@v1", "raw@v2"}
    one = _graph("raw@v1", depth=1)
    assert _refs(one, "downstream") == {"raw@v2", "m@v2"}
    assert _edges(one) == {("raw@v2", "raw@v1", "parent"), ("m@v2", "raw@v1", "input")}
    around = _graph("clean@v1", depth=1)
    assert _refs(around) == {"clean@v1", "raw@v2", "m@v1", "m@v2"}
    zero = _graph("clean@v1", depth=0)
    assert _refs(zero) == {"clean@v1"} and zero.edges == []


def test_to_dict_is_stable_and_self_consistent(graph_store):
    first, second = _graph("raw@v1").to_dict(), _graph("raw@v1").to_dict()
    assert first == second
    assert json.loads(json.dumps(first)) == first
    keys = [n["key"] for n in first["nodes"]]
    assert keys[0] == first["focus"] and len(keys) == len(set(keys))
    assert all(e["from"] in keys and e["to"] in keys for e in first["edges"])


def test_api_rejects_bad_arguments(graph_store):
    with pytest.raises(UsageError):
        _graph("m@v2", kind="pipeline")
    with pytest.raises(UsageError):
        _graph("m@v2", depth=-1)
    with pytest.raises(UsageError):
        _graph("bad name!")
    with pytest.raises(NotFoundError):
        _graph("nosuch")
    with pytest.raises(NotFoundError):
        _graph("m@v9")
    with pytest.raises(NotFoundError):
        _graph("m", kind="dataset")  # m is a model


def test_a_dataset_wins_over_a_model_of_the_same_name_unless_kind_says(tmp_path: Path):
    _commit_dataset("shared", write_tree(tmp_path / "d", {"d.txt": "data"}), "the dataset")
    _commit_model("shared", write_tree(tmp_path / "m", {"m.bin": "model"}), "the model", ["shared@v1"])
    assert _graph("shared").focus_node.kind == "dataset"
    model = _graph("shared", kind="model")
    assert model.focus_node.kind == "model"
    assert _edges(model) == {("shared@v1", "shared@v1", "input")}
    assert {n.kind for n in model.nodes.values()} == {"model", "dataset"}
    out = json.loads(run_dvx("lineage", "shared", "--kind", "model", "--json").stdout)
    assert out["focus"].startswith("model:")


# -- versions whose records are gone or were recorded under another number --------------------------

def test_inputs_and_parents_without_a_version_record_become_unknown_nodes(tmp_path: Path):
    _commit_dataset("raw", write_tree(tmp_path / "r", {"a.txt": "a"}), "raw data")
    repo = Repo()
    try:
        raw = repo.resolve("raw@v1")
        fake_input, fake_parent = "f" * 32, "0123456789abcdef" * 2
        repo.refs("model").allocate(VersionRecord(
            name="orphan", version=0, manifest=raw.manifest, created=raw.created, author="test",
            message="made from something deleted", parents=[fake_parent], parent_refs=[],
            inputs=[raw.manifest, fake_input], input_refs=["raw@v1", "gone@v3"]))
        graph = lineage(repo, "orphan")
        raw_down = lineage(repo, "raw@v1", upstream=False)
    finally:
        repo.close()
    nodes = {n.key: n for n in graph.nodes.values()}
    assert graph.focus_node.kind == "model" and graph.focus_node.ref == "orphan@v1"
    missing_input, missing_parent = nodes[f"unknown:{fake_input}"], nodes[f"unknown:{fake_parent}"]
    assert (missing_input.kind, missing_input.id, missing_input.ref) == ("unknown", fake_input, "gone@v3")
    assert (missing_parent.ref, missing_parent.name, missing_parent.version) == (None, None, None)
    assert nodes[f"dataset:{raw.manifest}"].ref == "raw@v1"
    assert {(e.to_node, e.kind) for e in graph.edges} == {
        (f"dataset:{raw.manifest}", "input"), (f"unknown:{fake_input}", "input"),
        (f"unknown:{fake_parent}", "parent")}
    assert "orphan@v1" in _refs(raw_down, "downstream")
    text = graph.to_text()
    assert "gone@v3  ffffffffffff  (input)  [missing]" in text
    assert "?  0123456789ab  (parent)  [missing]" in text
    assert "gone@v3 (missing)" in graph.to_dot() and "unknown_" + fake_input in graph.to_mermaid()
    out = json.loads(run_dvx("lineage", "orphan", "--json").stdout)
    unknown = [n for n in out["nodes"] if n["kind"] == "unknown"]
    assert sorted(n["id"] for n in unknown) == sorted([fake_input, fake_parent])


def test_a_stale_recorded_ref_falls_back_to_the_version_id(tmp_path: Path):
    """parent_refs/input_refs are only hints: the id decides which version is meant."""
    _commit_dataset("raw", write_tree(tmp_path / "a", {"a.txt": "a"}), "one")
    _commit_dataset("raw", write_tree(tmp_path / "b", {"b.txt": "b"}), "two")
    repo = Repo()
    try:
        v2 = repo.resolve("raw@v2")
        repo.refs("model").allocate(VersionRecord(
            name="m", version=0, manifest="e" * 32, created=v2.created, author="test",
            inputs=[v2.manifest], input_refs=["raw@v1"]))  # the ref says v1, the id is v2's
        graph = lineage(repo, "m", upstream=True, downstream=False)
    finally:
        repo.close()
    assert _edges(graph) == {("m@v1", "raw@v2", "input"), ("raw@v2", "raw@v1", "parent")}


def test_a_long_history_renders_without_recursion(tmp_path: Path):
    """Every version of a dataset is the parent of the next: 1,100 levels deep, walked and drawn."""
    _commit_dataset("long", write_tree(tmp_path / "a", {"a.txt": "a"}), "v1")
    repo = Repo()
    try:
        previous = repo.resolve("long@v1")
        for n in range(2, 1101):
            previous = repo.refs("dataset").allocate(VersionRecord(
                name="long", version=0, manifest=f"{n:04x}" + "a" * 28, created=previous.created, author="test",
                parents=[previous.manifest], parent_refs=[previous.ref]))
        down = lineage(repo, "long@v1", upstream=False)
        up = lineage(repo, "long@v1100", downstream=False)
    finally:
        repo.close()
    assert len(down.nodes) == len(up.nodes) == 1100 and len(down.edges) == len(up.edges) == 1099
    lines = down.to_text().splitlines()
    assert len(lines) == 2 + 1099
    assert lines[2] == "  long@v2  0002aaaaaaaa  (parent)"
    assert lines[-1] == "  " * 32 + f"[1099] long@v1100  {1100:04x}aaaaaaaa  (parent)"
    assert up.to_text().splitlines()[-1].endswith("long@v1  " + down.focus_node.short_id + "  (parent)")


# -- the command -------------------------------------------------------------------------------------

def test_cli_json_of_a_model(graph_store):
    proc = run_dvx("lineage", "m@v2", "--json")
    out = json.loads(proc.stdout)
    assert set(out) == {"focus", "upstream", "downstream", "depth", "nodes", "edges"}
    assert (out["upstream"], out["downstream"], out["depth"]) == (True, True, None)
    node_fields = {"key", "kind", "id", "name", "version", "ref", "created", "author", "message", "direction",
                   "depth"}
    nodes = {n["key"]: n for n in out["nodes"]}
    assert all(set(n) == node_fields for n in out["nodes"]) and len(nodes) == len(out["nodes"]) == 5
    assert out["nodes"][0]["key"] == out["focus"] == f"model:{graph_store['m@v2']}"
    for node in out["nodes"]:
        assert node["key"] == f"{node['kind']}:{node['id']}"
        assert node["id"] == graph_store[node["ref"]]
        assert node["ref"] == f"{node['name']}@v{node['version']}"
    assert {n["ref"]: n["direction"] for n in out["nodes"]} == {
        "m@v2": "focus", "m@v1": "upstream", "clean@v1": "upstream", "raw@v2": "upstream", "raw@v1": "upstream"}
    edges = {(nodes[e["from"]]["ref"], nodes[e["to"]]["ref"], e["kind"]) for e in out["edges"]}
    assert edges == UPSTREAM_OF_M2 and len(out["edges"]) == len(edges)
    # --format json and the root --json say the same; a second run prints the same bytes
    assert run_dvx("lineage", "m@v2", "--format", "json").stdout == proc.stdout
    assert run_dvx("--json", "lineage", "m@v2").stdout == proc.stdout
    limited = json.loads(run_dvx("lineage", "raw@v1", "--downstream-only", "--depth", "1", "--json").stdout)
    assert (limited["upstream"], limited["downstream"], limited["depth"]) == (False, True, 1)
    assert {n["ref"] for n in limited["nodes"]} == {"raw@v1", "raw@v2", "m@v2"}
    up = json.loads(run_dvx("lineage", "clean@v1", "--upstream-only", "--json").stdout)
    assert {n["ref"] for n in up["nodes"]} == {"clean@v1", "raw@v2", "raw@v1"}


def test_cli_text_tree(graph_store):
    out = run_dvx("lineage", "clean@v1").stdout.splitlines()
    assert out[0] == f"clean@v1  {graph_store['clean@v1'][:12]}  dataset"
    assert out.index("upstream:") < out.index("downstream:")
    up = out[out.index("upstream:") + 1:out.index("downstream:")]
    down = out[out.index("downstream:") + 1:]
    assert up == [f"  raw@v2  {graph_store['raw@v2'][:12]}  (parent)",
                  f"    raw@v1  {graph_store['raw@v1'][:12]}  (parent)"]
    line = re.compile(r"^( {2})+\S+@v\d+  [0-9a-f]{12}  \((parent|input)\)( {2}\[[a-z ]+\])*$")
    assert down and all(line.match(text) for text in down), down
    assert f"  m@v1  {graph_store['m@v1'][:12]}  (input)  [model]" in down
    assert f"    m@v2  {graph_store['m@v2'][:12]}  (parent)  [model]" in down
    only_up = run_dvx("lineage", "raw@v1", "--upstream-only").stdout.splitlines()
    assert only_up[1:] == ["upstream:", "  (none)"]


_DOT_STRING = r'"((?:[^"\\]|\\.)*)"'
_DOT_NODE = re.compile(rf"^  {_DOT_STRING} \[(.*)\];$")
_DOT_EDGE = re.compile(rf"^  {_DOT_STRING} -> {_DOT_STRING} \[label=\"(parent|input)\"(, style=dashed)?\];$")


def test_cli_dot(graph_store):
    dot = run_dvx("lineage", "raw@v1", "--format", "dot").stdout
    data = json.loads(run_dvx("lineage", "raw@v1", "--json").stdout)
    lines = dot.splitlines()
    assert lines[0] == "digraph lineage {" and lines[-1] == "}"
    node_lines = {m.group(1): m.group(2) for m in map(_DOT_NODE.match, lines) if m}
    edge_lines = {(m.group(1), m.group(2), m.group(3)) for m in map(_DOT_EDGE.match, lines) if m}
    assert set(node_lines) == {n["key"] for n in data["nodes"]}
    assert edge_lines == {(e["from"], e["to"], e["kind"]) for e in data["edges"]}
    assert len(lines) == 4 + len(node_lines) + len(edge_lines) + 1  # header lines, nodes, edges, "}"
    by_ref = {n["ref"]: node_lines[n["key"]] for n in data["nodes"]}
    assert "shape=box" in by_ref["raw@v2"] and "shape=ellipse" in by_ref["m@v1"]
    assert "filled" in by_ref["raw@v1"] and "filled" not in by_ref["raw@v2"]  # the focus stands out
    # the message's quotes and backslash are escaped inside the label
    assert r'first \"raw\" cut \\ with a backslash' in by_ref["raw@v1"]
    label = re.search(rf"label={_DOT_STRING}", by_ref["raw@v1"]).group(1)
    assert label.split(r"\n")[0] == "raw@v1"
    if shutil.which("dot"):  # Graphviz itself, when installed, must accept it and read the labels back
        plain = subprocess.run(["dot", "-Tplain"], input=dot, capture_output=True, text=True, check=True).stdout
        assert sum(1 for p in plain.splitlines() if p.startswith("node ")) == len(node_lines)
        assert sum(1 for p in plain.splitlines() if p.startswith("edge ")) == len(edge_lines)
        assert r'first \"raw\" cut \\ with a backslash' in plain


def test_cli_mermaid(graph_store):
    mermaid = run_dvx("lineage", "m@v2", "--format", "mermaid").stdout
    data = json.loads(run_dvx("lineage", "m@v2", "--json").stdout)
    lines = mermaid.splitlines()
    assert lines[0] == "flowchart BT"
    edge_line = re.compile(r"^  ([A-Za-z0-9_]+) (-->|-\.->)\|(parent|input)\| ([A-Za-z0-9_]+)$")
    edges = [m for m in map(edge_line.match, lines) if m]
    assert len(edges) == len(data["edges"]) == 6
    assert {(m.group(2), m.group(3)) for m in edges} == {("-->", "parent"), ("-.->", "input")}
    node_line = re.compile(r'^  ([A-Za-z0-9_]+)(\[|\(\[)"([^"]*)"(\]|\]\))$')
    nodes = {m.group(1): m for m in map(node_line.match, lines) if m}
    assert len(nodes) == len(data["nodes"])
    assert {m.group(1) for m in edges} | {m.group(4) for m in edges} <= set(nodes)
    labels = {m.group(3).split("<br/>")[0]: m for m in nodes.values()}
    assert labels["raw@v1"].group(3).endswith("first #quot;raw#quot; cut \\ with a backslash")
    assert labels["clean@v1"].group(3).endswith("clean #lt;it#gt; #amp; #35;quot; up")
    assert labels["m@v1"].group(2) == "([" and labels["raw@v1"].group(2) == "["
    focus_id = labels["m@v2"].group(1)
    assert f"  class {focus_id} focus;" in lines


def test_cli_errors_are_one_line(graph_store):
    for args, code in ((("nosuch",), 3), (("m@v9",), 3), (("raw@nosuchtag",), 3), (("bad name!",), 2),
                       (("m", "--kind", "dataset"), 3),
                       (("m", "--upstream-only", "--downstream-only"), 2),
                       (("m", "--json", "--format", "dot"), 2), (("m", "--depth", "-1"), 2)):
        proc = run_dvx("lineage", *args, check=False)
        assert proc.returncode == code, (args, proc.stderr)
        assert proc.stdout == ""
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("dvx: error: "), (args, proc.stderr)
    assert "nosuch" in run_dvx("lineage", "nosuch", check=False).stderr


def test_models_registered_with_the_cli_and_reached_by_alias(graph_store, tmp_path: Path):
    """`dvx model register --dataset` records inputs that lineage follows; aliases work as selectors."""
    weights = write_tree(tmp_path / "w", {"w.bin": b"\x01" * 100})
    run_dvx("model", "register", "clf", str(weights), "--dataset", "clean@v1", "--dataset", "raw@v2",
            "--alias", "production", "-m", "registered")
    out = json.loads(run_dvx("lineage", "clf@production", "--upstream-only", "--depth", "1", "--json").stdout)
    nodes = {n["key"]: n for n in out["nodes"]}
    assert nodes[out["focus"]]["ref"] == "clf@v1" and nodes[out["focus"]]["kind"] == "model"
    assert {(nodes[e["from"]]["ref"], nodes[e["to"]]["ref"], e["kind"]) for e in out["edges"]} == {
        ("clf@v1", "clean@v1", "input"), ("clf@v1", "raw@v2", "input"), ("clean@v1", "raw@v2", "parent")}
    down = _graph("raw@v2", upstream=False)
    assert _refs(down, "downstream") == {"clean@v1", "m@v1", "m@v2", "clf@v1"}
