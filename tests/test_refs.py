"""Refs: names and references, version allocation, and tags moved by compare-and-swap with their
history — checked against a model by a Hypothesis state machine and raced across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from dvx.errors import ConflictError, NotFoundError, UsageError
from dvx.fs import open_store
from dvx.refs import Ref, Refs, VersionRecord, check_name, check_tag, parse_ref

segment = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True).filter(lambda s: s not in (".", ".."))
names = st.lists(segment, min_size=1, max_size=3).map("/".join)
tags = st.from_regex(r"[A-Za-z][A-Za-z0-9._-]{0,10}", fullmatch=True).filter(
    lambda t: t != "latest" and not (t[0] == "v" and t[1:].isdigit() and t[1:2] != "0"))


@settings(max_examples=50, deadline=None)
@given(name=names, selector=st.one_of(st.none(), st.integers(1, 10**6).map(lambda n: f"v{n}"), tags,
                                      st.from_regex(r"[0-9a-f]{4,32}", fullmatch=True)))
def test_references_round_trip(name: str, selector: str | None):
    """Every valid NAME[@SELECTOR] parses back to the same reference; vN selectors give their number."""
    text = name if selector is None else f"{name}@{selector}"
    ref = parse_ref(text)
    assert ref == Ref(name, selector)
    assert str(ref) == text
    if selector is not None and selector.startswith("v") and selector[1:].isdigit():
        assert ref.version_number == int(selector[1:])


@pytest.mark.parametrize("text", ["", "@v1", "a@", "a b", "a/../b", "../a", "a//b", "/a", "a/", "a@v1@v2",
                                  "a@-x", "a@v1/x", "x" * 201])
def test_malformed_references_are_usage_errors(text: str):
    """Malformed names and selectors are refused with UsageError."""
    with pytest.raises(UsageError):
        parse_ref(text)


@pytest.mark.parametrize("tag", ["v1", "v22", "latest", "1x", "_x", "", "a b", "a/b", "x" * 101])
def test_reserved_or_malformed_tags_are_refused(tag: str):
    """Tags cannot look like version numbers, be 'latest', or break the tag alphabet."""
    with pytest.raises(UsageError):
        check_tag(tag)


@settings(max_examples=50, deadline=None)
@given(name=names)
def test_valid_names_are_accepted(name: str):
    """Any name of letters/digits/'.'/'_'/'-' segments joined by '/' is accepted as is."""
    assert check_name(name) == name


def _record(name: str) -> VersionRecord:
    return VersionRecord(name=name, version=0, manifest=uuid.uuid4().hex, created="2026-01-01T00:00:00+00:00",
                         author="t")


def test_versions_are_numbered_in_order_per_name():
    """allocate gives 1, 2, 3… per name; names() lists every name, grouped names included."""
    refs = Refs(open_store(f"memory://{uuid.uuid4().hex}"))
    assert [refs.allocate(_record("a/b")).version for _ in range(3)] == [1, 2, 3]
    assert refs.allocate(_record("c")).version == 1
    assert refs.names() == ["a/b", "c"]
    assert refs.version_numbers("a/b") == [1, 2, 3]
    assert refs.latest("a/b").version == 3 and refs.latest("nothing") is None
    assert refs.resolve(parse_ref("a/b@v2")).version == 2
    with pytest.raises(NotFoundError):
        refs.resolve(parse_ref("a/b@v4"))


def test_datasets_and_models_have_separate_namespaces():
    """The same name as a dataset and as a model are independent."""
    store = open_store(f"memory://{uuid.uuid4().hex}")
    Refs(store, "dataset").allocate(_record("x"))
    assert Refs(store, "model").names() == []
    assert Refs(store, "model").allocate(_record("x")).version == 1


class TagMachine(RuleBasedStateMachine):
    """Tags of one name against a model: set (with and without force), delete, resolve."""

    def __init__(self) -> None:
        super().__init__()
        self.refs = Refs(open_store(f"memory://{uuid.uuid4().hex}"))
        self.versions = [self.refs.allocate(_record("ds")) for _ in range(3)]
        self.model: dict[str, int | None] = {}
        self.events: dict[str, int] = {}

    @rule(tag=st.sampled_from(["prod", "staging", "x"]), index=st.integers(0, 2), force=st.booleans())
    def set_tag(self, tag: str, index: int, force: bool) -> None:
        target = self.versions[index]
        current = self.model.get(tag)
        if current is not None and current != target.version and not force:
            with pytest.raises(ConflictError):
                self.refs.set_tag("ds", tag, target, by="t", force=force)
            return
        self.refs.set_tag("ds", tag, target, by="t", force=force)
        if current != target.version:
            self.events[tag] = self.events.get(tag, 0) + 1
        self.model[tag] = target.version

    @rule(tag=st.sampled_from(["prod", "staging", "x"]))
    def delete_tag(self, tag: str) -> None:
        if self.model.get(tag) is None:
            with pytest.raises(NotFoundError):
                self.refs.set_tag("ds", tag, None, by="t")
            return
        self.refs.set_tag("ds", tag, None, by="t")
        self.model[tag] = None
        self.events[tag] += 1

    @invariant()
    def tags_match_the_model(self) -> None:
        live = {t: v for t, v in self.model.items() if v is not None}
        assert {t: r.version for t, r in self.refs.tags("ds").items()} == live
        for tag, version in self.model.items():
            record = self.refs.get_tag("ds", tag)
            assert record.version == version
            assert len(record.history) == self.events[tag]
            previous = None
            for event in record.history:  # each event starts where the last one ended
                assert event.from_version == previous
                previous = event.to_version
            assert previous == version
            if version is None:
                with pytest.raises(NotFoundError):
                    self.refs.resolve(Ref("ds", tag))
            else:
                assert self.refs.resolve(Ref("ds", tag)).version == version


def test_tags_behave_like_the_model():
    """Random set/move/delete sequences keep tags unique, history complete and resolution right."""
    run_state_machine_as_test(TagMachine, settings=settings(max_examples=40, stateful_step_count=20, deadline=None))


_MOVER = textwrap.dedent("""
    import sys
    from dvx.fs import open_store
    from dvx.refs import Refs
    refs = Refs(open_store(sys.argv[1]))
    versions = [refs.get_version("ds", n) for n in (1, 2, 3)]
    offset = int(sys.argv[2])
    for i in range(15):
        refs.set_tag("ds", "prod", versions[(i + offset) % 3], by=f"writer{offset}", force=True)
""")


def test_concurrent_tag_moves_lose_no_history(tmp_path: Path):
    """Three processes moving one tag at once: the compare-and-swap keeps the history a single chain
    (every event starts where the previous one ended) and the tag ends where the last event says."""
    root = str(tmp_path / "store")
    refs = Refs(open_store(root))
    for _ in range(3):
        refs.allocate(_record("ds"))
    procs = [subprocess.Popen([sys.executable, "-c", _MOVER, root, str(i)], stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    record = Refs(open_store(root)).get_tag("ds", "prod")
    assert len(record.history) >= 3
    previous = None
    for event in record.history:
        assert event.from_version == previous
        previous = event.to_version
    assert record.version == previous
    assert {e.by for e in record.history} <= {"writer0", "writer1", "writer2"}


def test_model_aliases_move_without_force_unless_protected():
    """Model aliases live in their own folder, move freely (`move=True`), and once protected need force
    to move or delete; every change is in the history."""
    store = open_store(f"memory://{uuid.uuid4().hex}")
    refs = Refs(store, "model")
    v1, v2, v3 = (refs.allocate(_record("m")) for _ in range(3))
    refs.set_tag("m", "production", v1, by="a", move=True)
    refs.set_tag("m", "production", v2, by="b", move=True, protect=True, message="ship it")
    assert store.list("refs/models/m/aliases") == ["production.json"]
    with pytest.raises(ConflictError, match="protected"):
        refs.set_tag("m", "production", v3, by="c", move=True)
    with pytest.raises(ConflictError, match="protected"):
        refs.set_tag("m", "production", None, by="c")
    record = refs.set_tag("m", "production", v3, by="c", move=True, force=True)
    assert record.version == 3 and record.protected
    record = refs.set_tag("m", "production", v3, by="d", protect=False)
    assert not record.protected
    assert [(e.action, e.from_version, e.to_version, e.by) for e in record.history] == [
        ("set", None, 1, "a"), ("move", 1, 2, "b"), ("move", 2, 3, "c"), ("unprotect", 3, 3, "d")]
    assert record.history[1].message == "ship it"
    assert refs.resolve(parse_ref("m@production")).version == 3


def test_annotations_update_by_compare_and_swap_with_history():
    """Annotations start empty, change through a function that reports what it did (nothing → no write),
    and keep each change; the version's content id is untouched."""
    store = open_store(f"memory://{uuid.uuid4().hex}")
    refs = Refs(store, "model")
    version = refs.allocate(_record("m"))
    assert refs.get_annotations("m", 1).metrics == {}

    def add_metric(record):
        record.metrics["accuracy"] = 0.91
        record.tags.append("candidate")
        return {"metrics": {"accuracy": 0.91}, "tags_added": ["candidate"]}

    refs.update_annotations("m", 1, add_metric, by="ada")
    refs.update_annotations("m", 1, lambda record: {}, by="bob")
    stored = refs.get_annotations("m", 1)
    assert stored.metrics == {"accuracy": 0.91} and stored.tags == ["candidate"]
    assert [(e.by, e.changes) for e in stored.history] == [("ada", {"metrics": {"accuracy": 0.91},
                                                                    "tags_added": ["candidate"]})]
    assert refs.get_version("m", 1).manifest == version.manifest
    with pytest.raises(NotFoundError):
        refs.update_annotations("m", 2, add_metric, by="ada")
