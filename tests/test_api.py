"""The Python API (`import dvx`): the dataset lifecycle, references and tags, reading versions back,
the stat cache, project folders, integrity failures, concurrent writers and the checkout cache."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import dvx
import dvx.api
from conftest import read_tree, run_dvx, write_tree
from dvx.api import Repo
from dvx.errors import ConflictError, IntegrityError, NotFoundError, UsageError


def rand(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def committed(name: str, files: dict[str, bytes | str], folder: Path, message: str = "", **create) -> dvx.Version:
    """Create a draft of `name`, add `files` (written under `folder`) and commit; returns the version."""
    write_tree(folder, files)
    ds = dvx.Dataset.create(name, **create)
    ds.add(folder)
    return ds.commit(message).version


def draft_paths(ds: dvx.Dataset) -> list[str]:
    """Paths of every file the draft holds now (parents' files with its edits)."""
    return sorted(ds.files())


def paths_of(ref: str) -> list[str]:
    return sorted(f.path for f in dvx.files(ref))


def content_of(ref: str, tmp: Path) -> dict[str, bytes]:
    dest = tmp / f"view-{ref.replace('/', '_').replace('@', '_')}-{time.monotonic_ns()}"
    return read_tree(dvx.get(ref, dest))


# -- the dataset lifecycle -------------------------------------------------------------------------------

def test_create_add_status_commit(tmp_path: Path):
    """A new dataset: add a folder, status lists every file as added, commit makes NAME@v1 with an id."""
    write_tree(tmp_path / "src", {"a.txt": "alpha", "sub/b.txt": "beta", "empty": b""})
    ds = dvx.Dataset.create("vision/cifar", message="first")
    added = ds.add(tmp_path / "src")
    assert (added.files, added.bytes, added.read_files) == (3, 9, 3)
    assert {(c.kind, c.path) for c in ds.status()} == {("added", "a.txt"), ("added", "sub/b.txt"),
                                                        ("added", "empty")}
    result = ds.commit()
    version = result.version
    assert result.created
    assert version.ref == "vision/cifar@v1" and version.version == 1
    assert len(version.id) == 32 and version.message == "first"
    assert (version.files, version.bytes) == (3, 9)
    assert paths_of("vision/cifar") == ["a.txt", "empty", "sub/b.txt"]
    assert [d["name"] for d in dvx.datasets()] == ["vision/cifar"]


def test_add_folder_file_to_and_dot(tmp_path: Path, isolated):
    """A folder's contents land at the root, a file lands at the root by name, `to` puts either under a
    folder, and `add(".")` takes the working folder's contents."""
    write_tree(tmp_path / "folder", {"in_folder.txt": "1", "deep/x.txt": "2"})
    write_tree(tmp_path, {"single.txt": "3"})
    write_tree(isolated["work"], {"cwd_file.txt": "4", "cwd_dir/y.txt": "5"})
    ds = dvx.Dataset.create("layout")
    ds.add(tmp_path / "folder")
    ds.add(tmp_path / "single.txt")
    ds.add(tmp_path / "folder", to="under/here")
    ds.add(tmp_path / "single.txt", to="/files/")
    ds.add(".")
    version = ds.commit().version
    assert paths_of(version.ref) == sorted([
        "in_folder.txt", "deep/x.txt", "single.txt", "under/here/in_folder.txt", "under/here/deep/x.txt",
        "files/single.txt", "cwd_file.txt", "cwd_dir/y.txt"])


def test_add_missing_path_is_not_found_and_bad_to_is_usage(tmp_path: Path):
    """Adding a path that does not exist is NotFoundError; a `to` with '..' is UsageError; the draft is
    unchanged by either."""
    ds = dvx.Dataset.create("d")
    with pytest.raises(NotFoundError, match="nope"):
        ds.add(tmp_path / "nope")
    write_tree(tmp_path / "src", {"a": "1"})
    with pytest.raises(UsageError):
        ds.add(tmp_path / "src", to="../up")
    assert draft_paths(ds) == []


def test_exclude_globs(tmp_path: Path):
    """A pattern without '/' matches names at any depth (files or folders); one with '/' matches paths."""
    write_tree(tmp_path / "src", {
        "keep.txt": "k", "run.log": "l", "sub/deep.log": "l", "build/out.bin": "b", "sub/build/x": "b",
        "data/a.tmp": "t", "data/b.txt": "t", "other/a.tmp": "t"})
    ds = dvx.Dataset.create("ex")
    ds.add(tmp_path / "src", exclude=["*.log", "build", "data/*.tmp"])
    assert draft_paths(ds) == ["data/b.txt", "keep.txt", "other/a.tmp"]


def test_remove_by_glob_and_folder(tmp_path: Path):
    """remove takes globs relative to the root and folder names; no match is NotFoundError."""
    v1 = committed("rm", {"a.png": "1", "b.png": "2", "keep.txt": "3", "sub/x": "4", "sub/y": "5"}, tmp_path / "s")
    ds = dvx.Dataset.create("rm")
    assert ds.remove("*.png") == ["a.png", "b.png"]
    assert ds.remove("sub") == ["sub/x", "sub/y"]
    with pytest.raises(NotFoundError):
        ds.remove("nothing*")
    assert {(c.kind, c.path) for c in ds.status()} == {("removed", p) for p in ["a.png", "b.png", "sub/x", "sub/y"]}
    v2 = ds.commit("trim").version
    assert v2.version == v1.version + 1
    assert paths_of(v2.ref) == ["keep.txt"]
    assert len(paths_of(v1.ref)) == 5  # old versions are immutable


def test_sync_adds_modifies_and_removes(tmp_path: Path):
    """sync makes the draft equal a folder; the returned changes and the committed tree say so."""
    committed("sy", {"same": "s", "changed": "v1", "gone": "g"}, tmp_path / "v1")
    write_tree(tmp_path / "v2", {"same": "s", "changed": "v2!", "new": "n"})
    ds = dvx.Dataset.create("sy")
    changes = ds.sync(tmp_path / "v2")
    assert {(c.kind, c.path) for c in changes} == {("modified", "changed"), ("removed", "gone"), ("added", "new")}
    version = ds.commit().version
    assert content_of(version.ref, tmp_path) == {"same": b"s", "changed": b"v2!", "new": b"n"}


def test_sync_of_a_file_is_a_usage_error(tmp_path: Path):
    """sync mirrors folders only."""
    write_tree(tmp_path, {"f.txt": "x"})
    ds = dvx.Dataset.create("sf")
    with pytest.raises(UsageError):
        ds.sync(tmp_path / "f.txt")


def test_discard_and_conflicting_drafts(tmp_path: Path):
    """A second create of an open draft is a ConflictError (replace=True discards it); discard closes the
    draft, after which opening it is NotFoundError and nothing was committed."""
    write_tree(tmp_path / "s", {"a": "1"})
    ds = dvx.Dataset.create("dr")
    ds.add(tmp_path / "s")
    with pytest.raises(ConflictError):
        dvx.Dataset.create("dr")
    assert draft_paths(dvx.Dataset.open("dr")) == ["a"]  # the open draft still has its file
    replaced = dvx.Dataset.create("dr", replace=True)
    assert draft_paths(replaced) == []
    replaced.discard()
    with pytest.raises(NotFoundError):
        dvx.Dataset.open("dr").status()
    with pytest.raises(NotFoundError):
        dvx.version("dr")
    assert dvx.api.drafts() == []


def test_open_without_a_name_uses_the_current_draft(tmp_path: Path):
    """Dataset.open() picks the last draft created; with none it is NotFoundError."""
    with pytest.raises(NotFoundError):
        dvx.Dataset.open()
    dvx.Dataset.create("first")
    dvx.Dataset.create("second")
    assert dvx.Dataset.open().name == "second"
    assert sorted(dvx.api.drafts()) == ["first", "second"]


def test_empty_new_dataset_cannot_be_committed():
    """A new dataset with no files is refused rather than making an empty v1."""
    ds = dvx.Dataset.create("nothing")
    with pytest.raises(UsageError):
        ds.commit()


@pytest.mark.parametrize("bad", ["", "a b", "../x", "a//b", "-lead", "x@y", "a/./b", "é"])
def test_invalid_names_are_usage_errors(bad: str):
    """Names are letters, digits, '.', '_', '-' with '/' groups; anything else is a UsageError."""
    with pytest.raises(UsageError):
        dvx.Dataset.create(bad)


# -- parents and commits ---------------------------------------------------------------------------------

def test_parent_defaults_to_latest_and_new_versions_build_on_it(tmp_path: Path):
    """Without parents a draft starts from NAME's latest version; status shows only what changed."""
    v1 = committed("p", {"a": "1"}, tmp_path / "v1")
    ds = dvx.Dataset.create("p")
    assert ds.state().parent_refs == ["p@v1"]
    write_tree(tmp_path / "more", {"b": "2"})
    ds.add(tmp_path / "more")
    assert [(c.kind, c.path) for c in ds.status()] == [("added", "b")]
    v2 = ds.commit().version
    assert v2.ref == "p@v2" and v2.parents == ["p@v1"] and v2.parent_ids == [v1.id]
    assert paths_of("p") == ["a", "b"]


def test_merge_of_several_parents_first_parent_wins(tmp_path: Path):
    """With several parents the draft holds the union of their files; on a path in both, the FIRST
    parent's content wins."""
    left = committed("left", {"shared.txt": "from left", "only_left": "L"}, tmp_path / "l")
    right = committed("right", {"shared.txt": "from right", "only_right": "R"}, tmp_path / "r")
    ds = dvx.Dataset.create("merged", parents=[left.ref, right.ref])
    version = ds.commit("merge").version
    assert version.parents == ["left@v1", "right@v1"]
    assert content_of(version.ref, tmp_path) == {"shared.txt": b"from left", "only_left": b"L", "only_right": b"R"}
    flipped = dvx.Dataset.create("merged2", parents=[right.ref, left.ref]).commit().version
    assert content_of(flipped.ref, tmp_path)["shared.txt"] == b"from right"


@pytest.mark.parametrize("first, second, expected", [
    ({"a/b": "first's folder"}, {"a": "second's file"}, {"a/b": b"first's folder"}),
    ({"a/b": "first's folder"}, {"a": "second's file", "a-b": "x"}, {"a/b": b"first's folder", "a-b": b"x"}),
    ({"a": "first's file"}, {"a/c": "second's folder"}, {"a": b"first's file"}),
    ({"a": "first's file", "a-b": "y"}, {"a/c": "second's folder"}, {"a": b"first's file", "a-b": b"y"}),
], ids=["folder-beats-file", "folder-beats-file-with-sibling", "file-beats-folder", "file-beats-folder-with-sibling"])
def test_merge_first_parent_wins_when_a_file_and_a_folder_collide(tmp_path: Path, first, second, expected):
    """When one parent has a file where the other has a folder, the FIRST parent's side is kept whole
    and the merged draft is a valid tree that commits."""
    a = committed("first", first, tmp_path / "a")
    b = committed("second", second, tmp_path / "b")
    ds = dvx.Dataset.create("merged", parents=[a.ref, b.ref])
    assert draft_paths(ds) == sorted(expected)
    version = ds.commit().version
    assert content_of(version.ref, tmp_path) == expected


def test_adding_a_file_where_a_folder_was_and_back(tmp_path: Path):
    """A file added at a path that was a folder replaces the folder's files, and the reverse; the
    result commits as a valid tree."""
    committed("fl", {"x/inner1": "1", "x/inner2": "2", "y": "file y"}, tmp_path / "v1")
    write_tree(tmp_path / "files", {"x": "now a file"})
    write_tree(tmp_path / "folders", {"y/inside": "now a folder"})
    ds = dvx.Dataset.create("fl")
    ds.add(tmp_path / "files" / "x")
    ds.add(tmp_path / "folders")
    assert draft_paths(ds) == ["x", "y/inside"]
    version = ds.commit().version
    assert content_of(version.ref, tmp_path) == {"x": b"now a file", "y/inside": b"now a folder"}


def test_drafts_are_bound_to_their_store(tmp_path: Path):
    """A draft opened against one store is invisible from another store and commits to its own."""
    store_a, store_b = str(tmp_path / "A"), str(tmp_path / "B")
    write_tree(tmp_path / "s", {"a": "1"})
    ds = dvx.Dataset.create("bound", store=store_a)
    ds.add(tmp_path / "s")
    with pytest.raises(NotFoundError):
        dvx.Dataset.open("bound", store=store_b).status()
    assert dvx.api.drafts(store=store_b) == []
    dvx.Dataset.open("bound", store=store_a).commit()
    assert dvx.version("bound", store=store_a).ref == "bound@v1"
    with pytest.raises(NotFoundError):
        dvx.version("bound", store=store_b)


def test_parent_shorthand_vN_means_same_name(tmp_path: Path):
    """`parents=["v1"]` is short for NAME@v1."""
    committed("sh", {"a": "1"}, tmp_path / "a")
    committed("sh", {"b": "2"}, tmp_path / "b")
    ds = dvx.Dataset.create("sh", parents=["v1"])
    assert ds.state().parent_refs == ["sh@v1"]
    assert draft_paths(ds) == ["a"]


def test_commit_without_changes_returns_the_existing_version(tmp_path: Path):
    """Nothing changed against the single parent: commit makes no version (created False) and closes the
    draft; allow_empty=True makes a new one anyway."""
    v1 = committed("same", {"a": "1"}, tmp_path / "s")
    result = dvx.Dataset.create("same").commit("again")
    assert (result.created, result.version.ref, result.version.id) == (False, "same@v1", v1.id)
    assert dvx.api.drafts() == []
    forced = dvx.Dataset.create("same").commit("empty", allow_empty=True)
    assert forced.created and forced.version.ref == "same@v2"
    assert [v.version for v in dvx.log("same")] == [2, 1]


def test_a_new_name_from_another_datasets_version_gets_its_own_v1(tmp_path: Path):
    """A draft of a new name whose only parent is another dataset's version commits NAME@v1 (with its
    tags) even though no file changed, and leaves the parent dataset untouched."""
    orig = committed("orig", {"a": "1"}, tmp_path / "s")
    result = dvx.Dataset.create("copy", parents=[orig.ref]).commit(tags=["first"])
    assert result.created and result.version.ref == "copy@v1"
    assert result.version.parents == ["orig@v1"] and result.version.tags == ["first"]
    assert dvx.version("copy@first").ref == "copy@v1"
    assert [v.ref for v in dvx.log("orig")] == ["orig@v1"] and dvx.version("orig").tags == []


def test_remove_then_add_back_is_no_change(tmp_path: Path):
    """Removing a file and adding the same bytes back leaves nothing to commit."""
    committed("back", {"a": "1", "b": "2"}, tmp_path / "s")
    ds = dvx.Dataset.create("back")
    ds.remove("a")
    assert [(c.kind, c.path) for c in ds.status()] == [("removed", "a")]
    ds.add(tmp_path / "s" / "a")
    assert ds.status() == []
    assert ds.commit().created is False


def test_re_adding_identical_content_is_no_change(tmp_path: Path):
    """Adding the same bytes again (even from a new folder) does not count as a change."""
    committed("re", {"a": "1", "b/c": "2"}, tmp_path / "one")
    write_tree(tmp_path / "two", {"a": "1", "b/c": "2"})
    ds = dvx.Dataset.create("re")
    ds.add(tmp_path / "two")
    assert ds.status() == []
    assert ds.commit().created is False


def test_an_exec_bit_change_alone_is_a_modification(tmp_path: Path):
    """chmod +x without touching the bytes shows as modified and the new version carries the bit."""
    src = write_tree(tmp_path / "s", {"run.sh": "#!/bin/sh\necho hi\n"})
    committed("mode", {}, src)
    (src / "run.sh").chmod(0o755)
    ds = dvx.Dataset.create("mode")
    ds.add(src)
    assert [(c.kind, c.path) for c in ds.status()] == [("modified", "run.sh")]
    version = ds.commit().version
    assert [f.executable for f in dvx.files(version.ref)] == [True]
    assert os.access(dvx.get(version.ref, tmp_path / "out") / "run.sh", os.X_OK)


def test_log_lists_versions_newest_first(tmp_path: Path):
    """log gives every version, newest first, with messages and parents."""
    for i in range(3):
        committed("lg", {f"f{i}": str(i)}, tmp_path / f"s{i}", message=f"m{i}")
    log = dvx.log("lg")
    assert [(v.version, v.message) for v in log] == [(3, "m2"), (2, "m1"), (1, "m0")]
    assert log[0].parents == ["lg@v2"] and log[-1].parents == []
    with pytest.raises(NotFoundError):
        dvx.log("unknown")


# -- references and tags -----------------------------------------------------------------------------------

def test_reference_forms_resolve(tmp_path: Path):
    """NAME (latest), NAME@vN, NAME@TAG and NAME@<id prefix> all resolve to the right version."""
    v1 = committed("r", {"a": "1"}, tmp_path / "a")
    v2 = committed("r", {"b": "2"}, tmp_path / "b")
    dvx.tag("r@v1", "gold")
    assert dvx.version("r").ref == "r@v2"
    assert dvx.version("r@latest").ref == "r@v2"
    assert dvx.version("r@v1").id == v1.id
    assert dvx.version("r@gold").ref == "r@v1"
    assert dvx.version(f"r@{v2.id[:8]}").ref == "r@v2"
    assert dvx.version(f"r@{v1.id}").ref == "r@v1"


@pytest.mark.parametrize("ref, error", [("r@v9", NotFoundError), ("nope", NotFoundError), ("nope@v1", NotFoundError),
                                        ("r@nosuchtag", NotFoundError), ("r@", UsageError), ("bad name", UsageError),
                                        ("r@v1@v2", UsageError), ("r@-x", UsageError)])
def test_bad_references(tmp_path: Path, ref: str, error: type):
    """Missing versions, names and tags are NotFoundError; malformed references are UsageError."""
    committed("r", {"a": "1"}, tmp_path / "a")
    with pytest.raises(error):
        dvx.version(ref)


def test_tags_are_unique_movable_with_force_and_keep_history(tmp_path: Path):
    """A tag points at one version; re-pointing needs force; the tag record keeps every set/move/delete."""
    committed("t", {"a": "1"}, tmp_path / "a")
    committed("t", {"b": "2"}, tmp_path / "b")
    assert dvx.tag("t@v1", "prod").ref == "t@v1"
    assert dvx.tag("t@v1", "prod").ref == "t@v1"  # idempotent
    with pytest.raises(ConflictError):
        dvx.tag("t@v2", "prod")
    assert dvx.version("t@prod").ref == "t@v1"
    dvx.tag("t@v2", "prod", force=True)
    assert dvx.version("t@prod").ref == "t@v2"
    assert dvx.version("t@v2").tags == ["prod"] and dvx.version("t@v1").tags == []
    dvx.tag("t@v2", "prod", delete=True)
    with pytest.raises(NotFoundError):
        dvx.version("t@prod")
    record = Repo().refs().get_tag("t", "prod")
    assert record.version is None
    assert [(e.action, e.from_version, e.to_version) for e in record.history] == [
        ("set", None, 1), ("move", 1, 2), ("delete", 2, None)]
    assert all(e.at and e.by for e in record.history)


@pytest.mark.parametrize("tag", ["v3", "latest", "1abc", "a b", ""])
def test_tags_that_would_confuse_references_are_refused(tmp_path: Path, tag: str):
    """Tags look like neither version numbers nor 'latest' and start with a letter."""
    committed("t", {"a": "1"}, tmp_path / "a")
    with pytest.raises(UsageError):
        dvx.tag("t@v1", tag)


def test_commit_with_tags(tmp_path: Path):
    """commit(tags=...) tags the new version; a tag already on another version needs force_tags."""
    write_tree(tmp_path / "a", {"a": "1"})
    ds = dvx.Dataset.create("ct")
    ds.add(tmp_path / "a")
    assert ds.commit(tags=["best"]).version.tags == ["best"]
    write_tree(tmp_path / "b", {"b": "2"})
    ds = dvx.Dataset.create("ct")
    ds.add(tmp_path / "b")
    with pytest.raises(ConflictError):
        ds.commit(tags=["best"])
    assert dvx.version("ct").ref == "ct@v1"  # the refused commit made no version
    assert ds.commit(tags=["best"], force_tags=True).version.ref == "ct@v2"
    assert dvx.version("ct@best").ref == "ct@v2"


# -- reading -----------------------------------------------------------------------------------------------

def test_get_without_dest_is_a_read_only_cached_copy_reused(tmp_path: Path, isolated):
    """dvx.get(ref) returns a folder in the cache whose files are not writable; a second call returns the
    same folder without rebuilding it."""
    committed("g", {"a.txt": "hello", "sub/b.bin": rand(1, 200_000)}, tmp_path / "s")
    first = dvx.get("g@v1")
    assert first.is_relative_to(isolated["cache"])
    assert read_tree(first) == {"a.txt": b"hello", "sub/b.bin": rand(1, 200_000)}
    for path in (first / "a.txt", first / "sub" / "b.bin"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0, f"{path} is writable"
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (first / "a.txt", first / "sub" / "b.bin")}
    second = dvx.get("g")
    assert second == first
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in before} == before


def test_cached_copy_edited_by_someone_is_rebuilt(tmp_path: Path):
    """If a cached file is changed behind dvx's back, the next get notices and restores the version."""
    committed("ed", {"a.txt": "original"}, tmp_path / "s")
    cached = dvx.get("ed")
    target = cached / "a.txt"
    target.chmod(0o644)
    target.write_text("tampered!")
    again = dvx.get("ed")
    assert (again / "a.txt").read_text() == "original"


def test_get_with_dest_is_a_writable_copy(tmp_path: Path):
    """dvx.get(ref, dest) writes ordinary writable files (exec bits kept) and returns the folder."""
    src = write_tree(tmp_path / "s", {"a.txt": "A", "bin/run.sh": "#!/bin/sh\n"})
    (src / "bin" / "run.sh").chmod(0o755)
    ds = dvx.Dataset.create("w")
    ds.add(src)
    ds.commit()
    dest = dvx.get("w", tmp_path / "out")
    assert dest == (tmp_path / "out").absolute()
    assert read_tree(dest) == {"a.txt": b"A", "bin/run.sh": b"#!/bin/sh\n"}
    (dest / "a.txt").write_text("edited")  # writable
    assert os.access(dest / "bin" / "run.sh", os.X_OK)
    assert not (stat.S_IMODE((dest / "a.txt").stat().st_mode) & 0o111)
    assert dvx.get("w", tmp_path / "again").joinpath("a.txt").read_text() == "A"


def test_get_over_an_older_checkout_replaces_files_and_links(tmp_path: Path):
    """Getting v2 into a folder holding v1 leaves v2's content there (small and large files), also where
    a path was a symlink in v1 and is a regular file in v2 (the link must be replaced, not written through)."""
    src = write_tree(tmp_path / "s1", {"x": "original x", "small": "s1", "big": rand(1, 5 << 20)})
    os.symlink("x", src / "l")
    ds = dvx.Dataset.create("over")
    ds.add(src)
    ds.commit()
    write_tree(tmp_path / "s2", {"x": "original x", "small": "s2", "l": "now a regular file", "big": rand(2, 5 << 20)})
    ds = dvx.Dataset.create("over")
    ds.sync(tmp_path / "s2")
    ds.commit()
    out = tmp_path / "out"
    dvx.get("over@v1", out)
    assert (out / "l").is_symlink()
    dvx.get("over@v2", out)
    assert not (out / "l").is_symlink()
    assert (out / "l").read_text() == "now a regular file"
    assert (out / "x").read_text() == "original x"
    assert (out / "small").read_text() == "s2"
    assert (out / "big").read_bytes() == rand(2, 5 << 20)


def test_get_over_a_hardlinked_checkout_leaves_the_cache_intact(tmp_path: Path):
    """A folder filled with --link hardlink shares inodes with the cache; getting another version into it
    must replace those files, never write through them into the cached copy of v1."""
    committed("hl", {"a.txt": "version one"}, tmp_path / "s1")
    committed("hl", {"a.txt": "version two!"}, tmp_path / "s2")
    cached_v1 = dvx.get("hl@v1")
    out = tmp_path / "out"
    dvx.get("hl@v1", out, link="hardlink")
    assert (out / "a.txt").stat().st_ino == (cached_v1 / "a.txt").stat().st_ino
    dvx.get("hl@v2", out)
    assert (out / "a.txt").read_text() == "version two!"
    assert (cached_v1 / "a.txt").read_text() == "version one"


def test_glob_selection(tmp_path: Path):
    """glob picks matching files ('*' crosses '/'; a folder name picks what is under it); a glob matching
    nothing is NotFoundError."""
    committed("gl", {"train/a.png": "1", "train/x/b.png": "2", "test/c.png": "3", "labels.csv": "4"}, tmp_path / "s")
    assert read_tree(dvx.get("gl", tmp_path / "o1", glob=["train/*"])) == {"train/a.png": b"1", "train/x/b.png": b"2"}
    assert read_tree(dvx.get("gl", tmp_path / "o2", glob="test")) == {"test/c.png": b"3"}
    assert sorted(f.path for f in dvx.files("gl", glob=["*.csv", "test/*"])) == ["labels.csv", "test/c.png"]
    cached = dvx.get("gl", glob=["labels.csv"])
    assert read_tree(cached) == {"labels.csv": b"4"}
    assert cached != dvx.get("gl")  # a selection is cached apart from the whole version
    with pytest.raises(NotFoundError):
        dvx.get("gl", tmp_path / "o3", glob=["*.jpg"])


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_parts_are_disjoint_and_cover_every_file(tmp_path: Path, count: int):
    """--part I/N over N workers: each file in exactly one part, and get writes exactly that part."""
    files = {f"d{i % 3}/f{i}.bin": rand(i, 100 + 977 * i) for i in range(10)}
    committed("parts", files, tmp_path / "s")
    seen: list[str] = []
    for index in range(count):
        part = sorted(f.path for f in dvx.files("parts", part=(index, count)))
        assert part == sorted(f.path for f in dvx.files("parts", part=f"{index}/{count}"))
        got = read_tree(dvx.get("parts", tmp_path / f"p{index}", part=(index, count)))
        assert sorted(got) == part
        assert all(got[p] == files[p] for p in part)
        seen.extend(part)
    assert sorted(seen) == sorted(files)
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("part", ["3/3", "-1/2", "0/0", "x", "1"])
def test_invalid_parts_are_usage_errors(tmp_path: Path, part: str):
    """A part outside 0 <= I < N, or not of the form I/N, is a UsageError."""
    committed("parts", {"a": "1"}, tmp_path / "s")
    with pytest.raises(UsageError):
        dvx.files("parts", part=part)


@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink", "reflink"])
def test_link_modes_give_the_right_content(tmp_path: Path, mode: str):
    """Every --link mode produces the version's content in dest; hardlink shares inodes with the cache,
    symlink points into it, reflink/copy make independent writable files."""
    files = {"a.txt": b"alpha", "deep/b.bin": rand(2, 150_000), "e": b""}
    committed("lk", files, tmp_path / "s")
    dest = dvx.get("lk", tmp_path / "out", link=mode)
    assert read_tree(dest) == files
    target = dest / "deep" / "b.bin"
    if mode == "symlink":
        assert target.is_symlink()
    elif mode == "hardlink":
        assert target.stat().st_nlink >= 2
    else:
        assert not target.is_symlink() and target.stat().st_nlink == 1
        assert stat.S_IMODE(target.stat().st_mode) & 0o200
    with pytest.raises(UsageError):
        dvx.get("lk", tmp_path / "bad", link="teleport")


def test_open_reads_text_and_binary_with_seek(tmp_path: Path):
    """dvx.open gives a seekable read-only file over the stored chunks, in text or binary mode."""
    blob = rand(3, 400_000)  # several chunks
    committed("op", {"labels.csv": "id,label\n1,cat\n2,dög\n", "blob.bin": blob, "empty": b""}, tmp_path / "s")
    with dvx.open("op@v1/labels.csv", "r") as f:
        assert f.readline() == "id,label\n"
        assert f.read() == "1,cat\n2,dög\n"
    with dvx.open("op/blob.bin") as f:
        assert f.read(10) == blob[:10]
        f.seek(123_456)
        assert f.read(100_000) == blob[123_456:223_456]
        f.seek(-7, os.SEEK_END)
        assert f.read() == blob[-7:]
        assert f.tell() == len(blob)
        f.seek(0)
        assert f.read() == blob
    with dvx.open("op@v1/empty") as f:
        assert f.read() == b""
    with pytest.raises(NotFoundError):
        dvx.open("op@v1/missing.csv")
    with pytest.raises(UsageError):
        dvx.open("op@v1/labels.csv", "w")


def test_open_with_grouped_names_and_no_version(tmp_path: Path):
    """`dvx.open("group/name/path")` finds the longest existing name; NAME@REF/path works for any ref."""
    committed("vision", {"cifar/readme.txt": "the vision dataset"}, tmp_path / "a")
    committed("vision/cifar", {"readme.txt": "the cifar dataset"}, tmp_path / "b")
    with dvx.open("vision/cifar/readme.txt", "r") as f:
        assert f.read() == "the cifar dataset"
    with dvx.open("vision@v1/cifar/readme.txt", "r") as f:
        assert f.read() == "the vision dataset"
    with pytest.raises(NotFoundError):
        dvx.open("nothing/here.txt")


def test_ls_show_and_diff(tmp_path: Path):
    """ls lists one level (folders with counts), show reports sizes and stored bytes, diff compares versions."""
    committed("info", {"a.txt": "aa", "sub/b.txt": "bbb", "sub/c.txt": "c"}, tmp_path / "s1")
    write_tree(tmp_path / "s2", {"a.txt": "aa", "sub/b.txt": "BBBB", "new.txt": "n"})
    ds = dvx.Dataset.create("info")
    ds.sync(tmp_path / "s2")
    ds.commit()
    rows = dvx.ls("info@v1")
    assert [(r["path"], r["type"]) for r in rows] == [("a.txt", "file"), ("sub/", "folder")]
    assert rows[1]["files"] == 2 and rows[1]["size"] == 4
    assert [r["path"] for r in dvx.ls("info@v1", "sub")] == ["sub/b.txt", "sub/c.txt"]
    with pytest.raises(NotFoundError):
        dvx.ls("info@v1", "nope")
    info = dvx.show("info@v2")
    assert info["ref"] == "info@v2" and info["files"] == 3 and info["parents"] == ["info@v1"]
    assert 0 < info["stored_new_bytes"] <= info["stored_bytes"]
    changes = {(c.kind, c.path) for c in dvx.diff("info@v1", "info@v2")}
    assert changes == {("modified", "sub/b.txt"), ("removed", "sub/c.txt"), ("added", "new.txt")}


# -- stat cache ------------------------------------------------------------------------------------------

def test_unchanged_files_are_not_read_again(tmp_path: Path):
    """The stat cache: a second add of unchanged files reads 0 files (also in a new draft); a modified or
    touched file is read again, and the new content is what gets committed."""
    src = write_tree(tmp_path / "src", {"a": rand(1, 50_000), "b": rand(2, 50_000), "c": "small"})
    time.sleep(2.2)  # files changed within the last 2 s are not trusted to the stat cache (racy mtimes)
    ds = dvx.Dataset.create("sc")
    assert ds.add(src).read_files == 3
    second = ds.add(src)
    assert (second.read_files, second.unchanged_files, second.stored_bytes) == (0, 3, 0)
    ds.commit()
    other = dvx.Dataset.create("sc2")
    assert other.add(src).read_files == 0
    (src / "b").write_bytes(rand(3, 50_000))  # same size, new content
    later = time.time() + 5
    os.utime(src / "c", (later, later))  # touched only
    third = other.add(src)
    assert (third.read_files, third.unchanged_files) == (2, 1)
    version = other.commit().version
    assert content_of(version.ref, tmp_path)["b"] == rand(3, 50_000)


# -- symlinks --------------------------------------------------------------------------------------------

def test_symlinks_inside_the_folder_are_kept_as_links(tmp_path: Path):
    """A relative symlink that stays inside the added folder is stored as a link and recreated by get."""
    src = write_tree(tmp_path / "src", {"data/real.txt": "content"})
    os.symlink("data/real.txt", src / "alias.txt")
    os.symlink("../data", src / "data" / "loop")  # a link to a folder inside, not followed
    ds = dvx.Dataset.create("ln")
    ds.add(src)
    ds.commit()
    files = {f.path: f for f in dvx.files("ln")}
    assert files["alias.txt"].link == "data/real.txt"
    assert files["data/loop"].link == "../data"
    out = dvx.get("ln", tmp_path / "out")
    assert os.readlink(out / "alias.txt") == "data/real.txt"
    assert (out / "alias.txt").read_text() == "content"
    with dvx.open("ln/alias.txt", "r") as f:
        assert f.read() == "content"


@pytest.mark.parametrize("target", ["../outside.txt", "/etc/hostname", "sub/../../outside.txt"])
def test_symlinks_escaping_the_folder_are_refused(tmp_path: Path, target: str):
    """A symlink leaving the added folder (relative or absolute) is a UsageError naming it; nothing is added."""
    write_tree(tmp_path, {"outside.txt": "secret"})
    src = write_tree(tmp_path / "src", {"ok.txt": "fine", "sub/x": "1"})
    os.symlink(target, src / "escape")
    ds = dvx.Dataset.create("esc")
    with pytest.raises(UsageError, match="escape"):
        ds.add(src)
    assert draft_paths(ds) == []


# -- projects and where things are written ---------------------------------------------------------------

def test_add_dot_in_a_project_never_takes_dvx_state_or_dvx_toml(isolated, monkeypatch: pytest.MonkeyPatch):
    """After dvx.init, drafts live in .dvx/ and adding '.' takes neither .dvx/ nor dvx.toml."""
    monkeypatch.delenv("DVX_STATE_DIR")
    project = isolated["work"]
    assert dvx.init(project) == project / "dvx.toml"
    write_tree(project, {"train.csv": "a,b\n", "imgs/1.png": "png"})
    ds = dvx.Dataset.create("proj")
    assert any((project / ".dvx").rglob("*.draft")), "drafts should live in the project's .dvx folder"
    ds.add(".")
    version = ds.commit().version
    assert paths_of(version.ref) == ["imgs/1.png", "train.csv"]
    with pytest.raises(UsageError):
        dvx.init(project)  # once only


def test_project_store_setting_is_used(isolated, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """dvx.init(store=...) pins the project's store; without DVX_STORE commands use it."""
    monkeypatch.delenv("DVX_STORE")
    dvx.init(isolated["work"], store=str(tmp_path / "project-store"))
    committed("ps", {"a": "1"}, tmp_path / "s")
    info = dvx.store_info()
    assert info["url"] == str(tmp_path / "project-store")
    assert info["source"].endswith("dvx.toml")
    assert (tmp_path / "project-store" / "config.json").is_file()


def test_without_a_project_nothing_is_written_to_the_working_folder(isolated, monkeypatch: pytest.MonkeyPatch):
    """With no dvx.toml and no DVX_* folders set, the whole lifecycle writes under the user's data, state
    and cache folders and leaves the working folder exactly as it was."""
    for var in ("DVX_STORE", "DVX_STATE_DIR", "DVX_CACHE_DIR", "DVX_DATA_DIR"):
        monkeypatch.delenv(var)
    work = isolated["work"]
    write_tree(work, {"data/a.txt": "a", "data/b/c.txt": "c"})
    before = sorted(p.relative_to(work).as_posix() for p in work.rglob("*"))
    ds = dvx.Dataset.create("nowrite")
    ds.add("data")
    version = ds.commit().version
    assert read_tree(dvx.get(version.ref)) == {"a.txt": b"a", "b/c.txt": b"c"}
    with dvx.open(f"{version.ref}/a.txt", "r") as f:
        assert f.read() == "a"
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == before
    info = dvx.store_info()
    assert info["source"] == "embedded default store"
    assert Path(info["url"]).is_relative_to(isolated["home"])
    assert Path(info["state_dir"]).is_relative_to(isolated["home"])
    assert Path(info["cache_dir"]).is_relative_to(isolated["home"])


# -- integrity ---------------------------------------------------------------------------------------------

def _packs(store_root: Path) -> list[Path]:
    return sorted((store_root / "packs").rglob("*.pack"))


def _flip(path: Path, offset: int) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("size", [100_000, 5 << 20], ids=["small-file", "large-file"])
def test_corrupt_pack_names_version_and_file_and_leaves_no_partial_file(tmp_path: Path, isolated, size: int):
    """A damaged chunk fails get/open with IntegrityError naming NAME@vN and the file; nothing half
    written is left in the destination or the cache."""
    committed("bad", {"big.bin": rand(9, size)}, tmp_path / "s")
    (pack,) = _packs(isolated["store"])
    _flip(pack, 10)
    dest = tmp_path / "out"
    with pytest.raises(IntegrityError) as info:
        dvx.get("bad", dest)
    assert "bad@v1" in str(info.value) and "big.bin" in str(info.value)
    assert not dest.exists() or list(dest.rglob("*")) == [], f"left behind: {list(dest.rglob('*'))}"
    with pytest.raises(IntegrityError, match="bad@v1"):
        dvx.get("bad")
    checkouts = isolated["cache"] / "checkouts"
    assert not checkouts.exists() or list(checkouts.iterdir()) == []
    with pytest.raises(IntegrityError, match="big.bin"):
        with dvx.open("bad@v1/big.bin") as f:
            f.read()


def test_corrupt_file_does_not_prevent_good_files_but_is_never_partial(tmp_path: Path, isolated):
    """With one damaged file among good ones, get fails, and whatever exists in dest is complete and correct."""
    files = {f"f{i}.bin": rand(i, 30_000) for i in range(8)}
    committed("mixed", files, tmp_path / "s")
    (pack,) = _packs(isolated["store"])
    _flip(pack, 5)
    dest = tmp_path / "out"
    with pytest.raises(IntegrityError):
        dvx.get("mixed", dest)
    for path in (dest.rglob("*") if dest.exists() else []):
        rel = path.relative_to(dest).as_posix()
        assert rel in files, f"unexpected file {rel} left in dest"
        assert path.read_bytes() == files[rel], f"{rel} is partial or wrong"


def test_truncated_pack_is_an_error_naming_the_version(tmp_path: Path, isolated):
    """A pack cut short reports a DvxError (not a crash) when the version is read."""
    committed("cut", {"x.bin": rand(4, 200_000)}, tmp_path / "s")
    (pack,) = _packs(isolated["store"])
    pack.chmod(0o644)
    pack.write_bytes(pack.read_bytes()[:50_000])
    with pytest.raises(dvx.DvxError):
        dvx.get("cut", tmp_path / "out")


_ADDER = textwrap.dedent("""
    import sys
    import dvx
    ds = dvx.Dataset.create("crash")
    ds.add(sys.argv[1])
    ds.commit()
""")


def test_a_killed_add_leaves_no_version_and_the_rerun_uploads_only_what_is_missing(tmp_path: Path, isolated):
    """SIGKILL a process in the middle of storing a large file: no version or manifest appears (only
    unreferenced packs), and re-running stores only what had not reached the store (allowing for the one
    pack that may have been in flight without its index segment)."""
    import msgspec

    from dvx.chunks import ChunkStore
    from dvx.chunks.store import CONFIG_KEY, StoreConfig
    from dvx.fs import open_store

    pack_size = 1 << 20
    config = StoreConfig(store_id="crash-test", created="2026-01-01T00:00:00+00:00", pack_size=pack_size)
    open_store(str(isolated["store"])).put_create(CONFIG_KEY, msgspec.json.encode(config, order="sorted"))
    data = rand(11, 64 << 20)
    write_tree(tmp_path / "src", {"big.bin": data})
    proc = subprocess.Popen([sys.executable, "-c", _ADDER, str(tmp_path / "src")], stderr=subprocess.PIPE)
    index_dir = isolated["store"] / "index"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if index_dir.is_dir() and len(list(index_dir.glob("*.idx"))) >= 3:
            break
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    assert proc.returncode != 0, "the writer finished before it could be killed; use a larger file"
    store_root = isolated["store"]
    assert not any(p.is_file() for p in (store_root / "refs").rglob("*")), "a version appeared"
    assert not any((store_root / "manifests").rglob("*.zst")), "a manifest appeared"
    known = ChunkStore.open(open_store(str(store_root))).index()
    stored_before = sum(ref.size for ref in known.values())
    assert stored_before >= 3 * pack_size * 0.9

    ds = dvx.Dataset.create("crash", replace=True)
    result = ds.add(tmp_path / "src")
    assert result.stored_bytes <= len(data) - stored_before + pack_size + (256 << 10), (
        result.stored_bytes, stored_before)
    version = ds.commit().version
    with dvx.open(f"{version.ref}/big.bin") as f:
        assert f.read() == data


def test_file_names_that_are_not_unicode_are_refused(tmp_path: Path):
    """A file name that is not valid UTF-8 cannot be stored portably: add refuses it with a UsageError."""
    src = write_tree(tmp_path / "src", {"fine.txt": "ok"})
    with open(os.path.join(os.fsencode(src), b"bad\xff.txt"), "wb") as f:
        f.write(b"x")
    ds = dvx.Dataset.create("uni")
    with pytest.raises(UsageError, match="Unicode"):
        ds.add(src)


# -- concurrency -------------------------------------------------------------------------------------------


def release_and_collect(procs: list[subprocess.Popen], go: Path) -> list[dict]:
    """Let processes waiting on the file `go` start together; return their JSON outputs."""
    time.sleep(0.5)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results

_WRITER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import dvx
    go, index, src = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    while not go.exists():
        time.sleep(0.002)
    ds = dvx.Dataset.create("shared")
    ds.add(src)
    print(json.dumps(ds.commit(f"writer {index}").version.to_dict()))
""")


def test_concurrent_commits_get_distinct_version_numbers(tmp_path: Path):
    """Writers in separate processes committing the same name at once get v1..vN: no number twice, no
    version lost, and each number's record is the manifest its writer made."""
    count = 4
    go = tmp_path / "go"
    procs = []
    for i in range(count):
        src = write_tree(tmp_path / f"src{i}", {f"w{i}.txt": f"writer {i}", "common.txt": "same"})
        env = dict(os.environ, DVX_STATE_DIR=str(tmp_path / f"state{i}"))
        procs.append(subprocess.Popen([sys.executable, "-c", _WRITER, str(go), str(i), str(src)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = release_and_collect(procs, go)
    numbers = sorted(r["version"] for r in results)
    assert numbers == list(range(1, count + 1))
    log = {v.version: v for v in dvx.log("shared")}
    assert sorted(log) == numbers
    for r in results:
        assert log[r["version"]].id == r["id"]
        assert f"w{r['message'].split()[-1]}.txt" in paths_of(r["ref"])


_GETTER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import dvx
    go = Path(sys.argv[1])
    while not go.exists():
        time.sleep(0.002)
    path = dvx.get("together")
    print(json.dumps({"path": str(path), "files": sorted(p.name for p in path.iterdir())}))
""")


def test_concurrent_cached_gets_share_one_complete_copy(tmp_path: Path):
    """Processes asking for the same version at once all receive the same cache folder, complete."""
    files = {f"f{i}.bin": rand(20 + i, 300_000) for i in range(4)}
    committed("together", files, tmp_path / "s")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _GETTER, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = release_and_collect(procs, go)
    assert len({r["path"] for r in results}) == 1
    assert all(r["files"] == sorted(files) for r in results)
    assert read_tree(Path(results[0]["path"])) == files


# -- the checkout cache ------------------------------------------------------------------------------------

def test_cache_evicts_least_recently_used_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """With DVX_CACHE_MAX_SIZE smaller than two versions, getting a second version evicts the first
    (least recently used), and getting the first again evicts the second."""
    monkeypatch.setenv("DVX_CACHE_MAX_SIZE", "150000")
    committed("lru", {"f.bin": rand(1, 100_000)}, tmp_path / "a")
    committed("lru", {"f.bin": rand(2, 100_000)}, tmp_path / "b")
    v1 = dvx.get("lru@v1")
    assert v1.is_dir()
    v2 = dvx.get("lru@v2")
    assert v2.is_dir() and not v1.exists()
    again = dvx.get("lru@v1")
    assert again == v1 and v1.is_dir() and not v2.exists()
    assert (v1 / "f.bin").read_bytes() == rand(1, 100_000)


def test_cache_keeps_entries_within_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Below the byte budget nothing is evicted."""
    monkeypatch.setenv("DVX_CACHE_MAX_SIZE", "10MiB")
    committed("keep", {"f.bin": rand(1, 100_000)}, tmp_path / "a")
    committed("keep", {"f.bin": rand(2, 100_000)}, tmp_path / "b")
    v1, v2 = dvx.get("keep@v1"), dvx.get("keep@v2")
    assert v1 != v2 and v1.is_dir() and v2.is_dir()


def test_committing_an_unchanged_draft_of_an_older_version_is_a_rollback(tmp_path):
    """A draft opened from v1 while v2 is the latest, committed unchanged, becomes v3 with v1's files:
    that is how a user rolls back, so it must not be swallowed as "nothing changed"."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("one")
    ds = dvx.Dataset.create("rb")
    ds.add(src)
    ds.commit("v1")
    (src / "a.txt").write_text("two")
    ds = dvx.Dataset.create("rb")
    ds.add(src)
    ds.commit("v2")
    result = dvx.Dataset.create("rb", parents=["rb@v1"]).commit("roll back")
    assert result.created and result.ref == "rb@v3"
    assert not dvx.diff("rb@v1", "rb@v3")
    again = dvx.Dataset.create("rb").commit()
    assert not again.created and again.ref == "rb@v3"


def test_one_add_with_a_file_where_another_source_has_a_folder_keeps_the_last(tmp_path: Path):
    """`add` of a folder holding `a/b` and of a file named `a` in one call: the later source wins and
    the draft stays committable (no file nested under a file)."""
    tree = write_tree(tmp_path / "tree", {"a/b.txt": "inner"})
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "a").write_text("a file")
    ds = dvx.Dataset.create("clash")
    ds.add(tree, lone / "a")
    assert draft_paths(ds) == ["a"]
    assert ds.commit("ok").created


# -- dvx.toml: named stores, per-store options, jobs --------------------------------------------------

def test_named_stores_and_store_options_come_from_dvx_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """[store] options belong to the project's store; [stores.NAME] are found by name or by URL;
    relative folder paths are relative to the project."""
    from dvx.api.config import load_settings

    project = tmp_path / "proj"
    (project / "sub").mkdir(parents=True)
    (project / "dvx.toml").write_text(
        '[store]\nurl = "s3://main/prefix"\nregion = "eu-west-1"\n\n'
        '[stores.team]\nurl = "gs://team/dvx"\nproject = "p1"\n\n'
        '[stores.near]\nurl = "backup"\n\n[transfer]\njobs = 6\n')
    monkeypatch.delenv("DVX_STORE")
    settings = load_settings(cwd=project / "sub")
    assert settings.store_spec() == ("s3://main/prefix", {"region": "eu-west-1"})
    assert settings.store_spec("team") == ("gs://team/dvx", {"project": "p1"})
    assert settings.store_spec("gs://team/dvx/") == ("gs://team/dvx", {"project": "p1"})
    assert settings.store_spec("near") == (str(project / "backup"), {})
    assert settings.store_spec("s3://elsewhere") == ("s3://elsewhere", {})
    assert settings.jobs == 6
    by_name = load_settings("team", cwd=project)
    assert (by_name.store_url, by_name.store_options) == ("gs://team/dvx", {"project": "p1"})
    # Fetching from the project's own store while another is active keeps its options.
    other = load_settings(str(tmp_path / "local"), cwd=project)
    assert other.store_spec("s3://main/prefix") == ("s3://main/prefix", {"region": "eu-west-1"})


def test_bad_store_options_and_jobs_are_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A misspelt option names what the backend accepts; a bad DVX_JOBS is refused (exit 2)."""
    from dvx.fs import open_store

    with pytest.raises(UsageError, match="regoin.*accepts.*region"):
        open_store("s3://bucket/p", {"regoin": "x"})
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dvx.toml").write_text('[stores.broken]\npath = "x"\n')
    proc = run_dvx("store", cwd=broken, check=False)
    assert proc.returncode == 2 and "[stores.broken] needs a url" in proc.stderr
    proc = run_dvx("store", env={"DVX_JOBS": "many"}, check=False)
    assert proc.returncode == 2 and "jobs" in proc.stderr
