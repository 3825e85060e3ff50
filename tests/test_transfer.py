"""push / fetch: versions move between stores with their lineage, data and tags, byte for byte, and
only packs the destination lacks are sent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import dvx
from conftest import read_tree, run_dvx, write_tree
from dvx.api.repo import Repo
from dvx.chunks import stored_pack_ids
from dvx.chunks.pack import index_key
from dvx.errors import ConflictError
from test_cloud import CLOUD_URLS


def _commit(name: str, folder: Path, message: str, tags=()):
    ds = dvx.Dataset.create(name)
    ds.sync(folder)
    return ds.commit(message, tags=list(tags))


def _two_versions(tmp_path: Path) -> tuple[Path, dict]:
    files = {"a.txt": "alpha\n" * 1000, "img/b.bin": os.urandom(300_000), "img/c.bin": os.urandom(200_000)}
    src = write_tree(tmp_path / "src", files)
    _commit("ds", src, "first", tags=["stable"])
    (src / "a.txt").write_text("alpha, edited\n")
    _commit("ds", src, "second", tags=["prod"])
    return src, files


def test_push_copies_lineage_data_and_tags_with_the_same_ids(tmp_path: Path):
    """Pushing ds@v2 brings v1 (its parent), both manifests, the packs and the tags; ids are unchanged
    and `get` on the destination gives the same bytes."""
    src, _ = _two_versions(tmp_path)
    remote = str(tmp_path / "remote")
    result = dvx.push("ds@v2", remote)
    assert result.versions_copied == ["ds@v1", "ds@v2"]
    assert sorted(result.tags_set) == ["ds@prod", "ds@stable"]
    assert result.packs_copied >= 1 and result.bytes_copied > 500_000
    here, there = dvx.log("ds"), dvx.log("ds", store=remote)
    assert [(v.ref, v.id, v.parents) for v in here] == [(v.ref, v.id, v.parents) for v in there]
    assert dvx.version("ds@prod", store=remote).ref == "ds@v2"
    assert read_tree(dvx.get("ds@v2", tmp_path / "out", store=remote)) == read_tree(src)


def test_second_push_sends_only_new_packs(tmp_path: Path):
    """After ds@v1 is pushed, pushing ds@v2 (one small file changed) moves one small pack, not the data."""
    src, _ = _two_versions(tmp_path)
    remote = str(tmp_path / "remote")
    first = dvx.push("ds@v1", remote)
    second = dvx.push("ds", remote)
    assert second.versions_copied == ["ds@v2"] and second.versions_present == ["ds@v1"]
    assert second.packs_present == first.packs_copied
    assert second.bytes_copied < 10_000 < first.bytes_copied
    again = dvx.push("ds", remote)
    assert (again.versions_copied, again.packs_copied, again.bytes_copied) == ([], 0, 0)


def test_fetch_brings_versions_back_and_lineage_is_kept(tmp_path: Path):
    """A version committed in another store is fetched into the active one, then committed upon."""
    remote = str(tmp_path / "remote")
    src = write_tree(tmp_path / "src", {"x": "1", "y": "2"})
    ds = dvx.Dataset.create("shared", store=remote)
    ds.sync(src)
    ds.commit("made elsewhere", tags=["prod"])
    result = dvx.fetch("shared@prod", remote)
    assert result.versions_copied == ["shared@v1"]
    (src / "x").write_text("one")
    child = _commit("shared", src, "local change")
    assert child.version.parents == ["shared@v1"]
    assert read_tree(dvx.get("shared@v2", tmp_path / "out")) == {"x": b"one", "y": b"2"}


def test_diverged_histories_are_refused_before_any_data_moves(tmp_path: Path):
    """ds@v1 committed independently in two stores is a conflict (exit 4), and nothing is copied."""
    remote = str(tmp_path / "remote")
    _commit("ds", write_tree(tmp_path / "a", {"f": "here"}), "here")
    theirs = dvx.Dataset.create("ds", store=remote)
    theirs.sync(write_tree(tmp_path / "b", {"f": "there"}))
    theirs.commit("there")
    packs_before = stored_pack_ids(Repo(store=remote).store)
    with pytest.raises(ConflictError, match="diverged"):
        dvx.push("ds", remote)
    assert stored_pack_ids(Repo(store=remote).store) == packs_before
    proc = run_dvx("push", "ds", "--to", remote, check=False)
    assert proc.returncode == 4 and "diverged" in proc.stderr


def test_tags_pointing_elsewhere_are_kept_unless_forced(tmp_path: Path):
    """A destination tag on another version survives a push (reported), and moves with --force-tags,
    keeping its history."""
    _two_versions(tmp_path)
    remote = str(tmp_path / "remote")
    dvx.push("ds@v1", remote)
    dvx.tag("ds@v1", "prod", store=remote)
    kept = dvx.push("ds", remote)
    assert kept.tags_kept == ["ds@prod"]
    assert dvx.version("ds@prod", store=remote).version == 1
    moved = dvx.push("ds", remote, force_tags=True)
    assert moved.tags_set == ["ds@prod"]
    assert dvx.version("ds@prod", store=remote).version == 2


def test_interrupted_push_completes_on_the_next_run(tmp_path: Path):
    """A pack copied without its index segment (push killed between the two) is finished next time,
    and the destination ends complete."""
    src, _ = _two_versions(tmp_path)
    remote = str(tmp_path / "remote")
    dvx.push("ds", remote)
    store = Repo(store=remote).store
    victim = sorted(stored_pack_ids(store))[0]
    store.delete(index_key(victim))
    for version in ("0000000002.json",):
        store.delete(f"refs/datasets/ds/versions/{version}")
    result = dvx.push("ds", remote)
    assert result.versions_copied == ["ds@v2"]
    assert victim in stored_pack_ids(store)
    assert read_tree(dvx.get("ds@v2", tmp_path / "out", store=remote)) == read_tree(src)


def test_push_and_fetch_through_the_cli_with_named_stores(tmp_path: Path):
    """`dvx push/fetch` accept a store named in dvx.toml and print JSON with --json."""
    work = tmp_path / "proj"
    work.mkdir()
    remote = tmp_path / "remote"
    (work / "dvx.toml").write_text(f'[stores.team]\nurl = "{remote}"\n')
    write_tree(work / "data", {"a": "A", "b/c": "C"})
    env = {"DVX_STORE": str(tmp_path / "mine")}
    run_dvx("dataset", "create", "proj", cwd=work, env=env)
    run_dvx("dataset", "add", "data", cwd=work, env=env)
    run_dvx("dataset", "commit", "-m", "one", "--tag", "prod", cwd=work, env=env)
    pushed = json.loads(run_dvx("push", "proj", "--to", "team", "--json", cwd=work, env=env).stdout)
    assert pushed["versions_copied"] == ["proj@v1"] and pushed["tags_set"] == ["proj@prod"]
    fetched = json.loads(run_dvx("fetch", "proj@prod", "--from", "team", "--json", cwd=work,
                                 env={"DVX_STORE": str(tmp_path / "other")}).stdout)
    assert fetched["versions_copied"] == ["proj@v1"] and fetched["packs_copied"] == pushed["packs_copied"]
    out = run_dvx("get", "proj@prod", "-o", str(tmp_path / "out"), cwd=work,
                  env={"DVX_STORE": str(tmp_path / "other")})
    assert read_tree(tmp_path / "out") == {"a": b"A", "b/c": b"C"}, out.stdout


def test_push_to_the_same_store_is_a_usage_error(tmp_path: Path):
    _two_versions(tmp_path)
    proc = run_dvx("push", "ds", "--to", os.environ["DVX_STORE"], check=False)
    assert proc.returncode == 2 and "same store" in proc.stderr


@pytest.mark.parametrize("backend", sorted(CLOUD_URLS))
def test_push_to_a_cloud_store_and_fetch_back(backend: str, tmp_path: Path):
    """Local → cloud → another local store: same version ids, same bytes, tags along."""
    src, _ = _two_versions(tmp_path)
    cloud = CLOUD_URLS[backend]()
    pushed = dvx.push("ds", cloud)
    assert pushed.versions_copied == ["ds@v1", "ds@v2"]
    other = str(tmp_path / "other")
    fetched = dvx.fetch("ds@prod", cloud, store=other)
    assert fetched.versions_copied == ["ds@v1", "ds@v2"] and fetched.bytes_copied == pushed.bytes_copied
    assert [v.id for v in dvx.log("ds", store=other)] == [v.id for v in dvx.log("ds")]
    assert read_tree(dvx.get("ds@prod", tmp_path / "out", store=other)) == read_tree(src)
