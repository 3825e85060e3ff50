"""Many names (issue 8, item 4) and long lineages (item 3), scaled down and structural: the name catalog
(dvx/refs/catalog.py) lets `dataset list` and `model list [--alias A]` read a fixed number of objects
however many names there are, stays right after concurrent commits, deletes, tag moves and crashes, and
works on S3 with its conditional writes. No timing assertions: requests are counted (tests/counting.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
import pytest
import zstandard
from conftest import write_tree

import dvx
from dvx.api import models
from dvx.api.repo import Repo
from dvx.refs import Refs, VersionRecord, now_iso
from dvx.refs.catalog import SHARDS, STALE_MARKER_SECONDS, Catalog

MANY = 1000
# The catalog read: one request per shard, one listing of pending writes, and a little slack (a
# store's config); nothing that grows with the number of names.
LISTING_BUDGET = SHARDS + 3


def _fill(kind: str, count: int, pointer: str | None = None, prefix: str = "team") -> None:
    """`count` names of `kind`, written through the refs layer (the real path for refs and catalog,
    without chunking files): one version each, `pointer` on it, metrics on models. The writes to one
    name share one catalog update, as `dvx delete` and `dvx push` do."""
    refs = Repo().refs(kind)
    for i in range(count):
        name = f"{prefix}{i % 10:02d}/n{i:05d}"
        with refs.catalog.updating(name) as about_to_write:
            about_to_write()
            record = refs.allocate(VersionRecord(name=name, version=0, manifest=f"{i:032x}", created=now_iso(),
                                                 author="filler", files=1, bytes=i))
            if pointer:
                refs.set_tag(name, pointer, record, by="filler", move=True)
            if kind == "model":
                refs.update_annotations(name, record.version, lambda notes, i=i: notes.metrics.update(
                    acc=i / count) or {"metrics": {"acc": i / count}}, by="filler")


def _rows_from_refs(kind: str = "dataset") -> list[dict]:
    """The listing computed the slow way (every name's refs), to compare the catalog's with."""
    refs = Repo().refs(kind)
    rows = []
    for name in refs.names():
        numbers = refs.version_numbers(name)
        if numbers:
            latest = refs.get_version(name, numbers[-1])
            rows.append({"name": name, "versions": len(numbers), "latest": latest.ref, "id": latest.manifest})
    return rows


def _listed(kind: str = "dataset") -> list[dict]:
    if kind == "dataset":
        return [{k: r[k] for k in ("name", "versions", "latest", "id")} for r in dvx.datasets()]
    return [{"name": v.name, "versions": None, "latest": v.ref, "id": v.id} for v in dvx.Model.list()]


def _commit(name: str, folder: Path, files: dict, tags=()) -> dvx.Version:
    write_tree(folder, files)
    draft = dvx.Dataset.create(name)
    draft.sync(folder)
    return draft.commit(f"{name} {sorted(files)}", tags=list(tags), force_tags=True).version


def test_listing_many_datasets_reads_a_fixed_number_of_objects(tmp_path: Path, store_calls):
    """1,000 datasets: `dvx.datasets()` makes at most one request per catalog shard (and a few), and
    agrees with the refs; resolving NAME@TAG reads the tag and the version record only."""
    for i in range(3):  # some through the real API (chunks, manifests, drafts)
        _commit(f"real/ds{i}", tmp_path / f"src{i}", {"a.txt": f"data {i}"}, tags=["production"])
    _fill("dataset", MANY, pointer="production")
    store_calls.clear()
    rows = dvx.datasets()
    assert len(store_calls) <= LISTING_BUDGET, store_calls
    assert not any(method == "list" and key.rstrip("/") == "refs/datasets" for method, key in store_calls)
    assert len(rows) == MANY + 3
    assert [{k: r[k] for k in ("name", "versions", "latest", "id")} for r in rows] == _rows_from_refs()
    assert rows[0]["name"] == "real/ds0" and rows[0]["files"] == 1 and rows[0]["draft"] is False

    store_calls.clear()
    record = Repo().resolve("team07/n00007@production")
    assert record.ref == "team07/n00007@v1"
    assert len([c for c in store_calls if c[0].startswith("read")]) <= 3, store_calls
    assert not any(method in ("list", "scan", "walk") for method, _ in store_calls), store_calls


def test_model_list_by_alias_reads_a_fixed_number_of_objects(tmp_path: Path, store_calls):
    """1,000 models with a `production` alias: `model list --alias production` needs no read per model,
    and shows the same versions, aliases and metrics as reading every model's refs."""
    write_tree(tmp_path / "ckpt", {"weights.bin": b"w" * 1000})
    dvx.Model.register("real/resnet", tmp_path / "ckpt", metrics={"acc": 0.9}, aliases=["production"],
                       tags=["best"])
    dvx.Model.register("real/resnet", tmp_path / "ckpt", metrics={"acc": 0.5}, aliases=["staging"])
    _fill("model", MANY, pointer="production")
    repo = Repo()
    expected = [v.to_dict() for v in models._listed_from_refs(repo, None, "production", None, False)]
    store_calls.clear()
    listed = dvx.Model.list(alias="production")
    assert len(store_calls) <= LISTING_BUDGET, store_calls
    assert [v.to_dict() for v in listed] == expected
    first = listed[0]
    assert (first.ref, first.aliases, first.labels, first.metrics) == ("real/resnet@v1", ["production"], ["best"],
                                                                      {"acc": 0.9})
    latest = dvx.Model.list()
    assert latest[0].ref == "real/resnet@v2" and latest[0].aliases == ["staging"]
    assert [v.to_dict() for v in latest] == [v.to_dict() for v in models._listed_from_refs(repo, None, None, None,
                                                                                            False)]
    assert [v.ref for v in dvx.Model.list(sort="acc:desc", limit=2)] == ["team09/n00999@v1", "team08/n00998@v1"]


def test_listing_follows_deletes_tag_moves_and_annotations(tmp_path: Path):
    for i in range(3):
        _commit("moving", tmp_path / "src", {"a.txt": f"version {i}"}, tags=["production"] if i == 0 else ())
    _commit("other", tmp_path / "other", {"b.txt": "b"})
    assert [(r["name"], r["latest"], r["versions"]) for r in dvx.datasets()] == [("moving", "moving@v3", 3),
                                                                                 ("other", "other@v1", 1)]
    dvx.delete("moving@v3")
    assert [(r["latest"], r["versions"]) for r in dvx.datasets()][0] == ("moving@v2", 2)
    dvx.tag("moving@v2", "production", force=True)
    entry = Repo().refs().catalog.entries()["moving"]
    assert entry.pointers == {"production": 2}
    dvx.delete("moving", all_versions=True, force=True)
    assert [r["name"] for r in dvx.datasets()] == ["other"]
    assert _listed() == _rows_from_refs()

    write_tree(tmp_path / "m", {"w.bin": b"weights"})
    dvx.Model.register("clf", tmp_path / "m", aliases=["production"])
    dvx.Model.update("clf@v1", metrics={"f1": 0.7})
    dvx.Model.tag("clf@v1", "reviewed")
    (row,) = dvx.Model.list(alias="production")
    assert (row.metrics, row.labels) == ({"f1": 0.7}, ["reviewed"])
    dvx.Model.alias("clf", "production", delete=True)
    assert dvx.Model.list(alias="production") == []


def test_a_crash_before_the_catalog_update_is_healed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The process dies between allocating a version and updating the catalog (the update never runs):
    the pending marker makes every listing right at once, and once the marker is old a reader writes the
    entry back and removes it."""
    _commit("steady", tmp_path / "a", {"a.txt": "a"})
    store_root = Path(os.environ["DVX_STORE"])
    with monkeypatch.context() as crash:
        crash.setattr(Catalog, "_finish", lambda self, name, marker: None)  # dies before the update
        _commit("fresh", tmp_path / "b", {"b.txt": "b"})
        _commit("steady", tmp_path / "a", {"a.txt": "a, again"})
    markers = sorted((store_root / "refs/catalog/datasets/pending").iterdir())
    assert len(markers) >= 2
    catalog = Repo().refs().catalog
    stored = {name for i in range(SHARDS) for name in (catalog._read_shard(i)[0] or _empty()).entries}
    assert stored == {"steady"}  # the shards themselves missed both writes
    assert [(r["name"], r["latest"]) for r in dvx.datasets()] == [("fresh", "fresh@v1"), ("steady", "steady@v2")]
    old = time.time() - STALE_MARKER_SECONDS - 60
    for marker in markers:
        os.utime(marker, (old, old))
    assert [r["latest"] for r in dvx.datasets()] == ["fresh@v1", "steady@v2"]
    assert list((store_root / "refs/catalog/datasets/pending").iterdir()) == []
    stored = {name: e.latest for i in range(SHARDS) for name, e in catalog._read_shard(i)[0].entries.items()}
    assert stored == {"fresh": 1, "steady": 2}


def _empty():
    from dvx.refs.catalog import CatalogShard

    return CatalogShard(kind="dataset", shard=0)


def test_a_missing_or_unknown_catalog_is_rebuilt_from_the_refs(tmp_path: Path, store_calls):
    _fill("dataset", 200, pointer="production")
    root = Path(os.environ["DVX_STORE"]) / "refs/catalog/datasets"
    shards = sorted(root.glob("shard-*.json.zst"))
    assert len(shards) == SHARDS
    expected = _rows_from_refs()
    for shard in shards[::2]:
        shard.unlink()
    shards[1].write_bytes(zstandard.ZstdCompressor().compress(b'{"format_version": 99, "whatever": "newer"}'))
    shards[3].write_bytes(b"damaged")
    assert _listed() == expected  # rebuilt by the slow path...
    assert len(sorted(root.glob("shard-*.json.zst"))) == SHARDS
    assert b'"whatever"' not in zstandard.ZstdDecompressor().decompress(shards[1].read_bytes())
    store_calls.clear()
    assert _listed() == expected  # ...once: written back, read cheaply from then on
    assert len(store_calls) <= LISTING_BUDGET
    for shard in shards:
        shard.unlink()
    refs = Refs(Repo().store)
    refs.set_tag("team03/n00003", "staging", refs.get_version("team03/n00003", 1), by="t")  # a write first
    assert _listed() == expected
    assert refs.catalog.rebuild() == 200


_WRITER = r"""
import sys, pathlib, dvx
who, src = sys.argv[1], pathlib.Path(sys.argv[2])
while not pathlib.Path(sys.argv[3]).exists():
    pass
for n in range(4):
    (src / "who.txt").write_text(f"{who} {n}")
    for name in (f"own/{who}-{n}", "shared"):
        draft = dvx.Dataset.create(name)
        draft.add(src)
        draft.commit(f"{who} {n}", tags=["last"], force_tags=True)
"""


def _race_writers(tmp_path: Path, writers: int) -> None:
    go = tmp_path / "go"
    procs = []
    for w in range(writers):
        src = tmp_path / f"w{w}"
        src.mkdir()
        env = dict(os.environ, DVX_STATE_DIR=str(tmp_path / f"state{w}"))
        procs.append(subprocess.Popen([sys.executable, "-c", _WRITER, f"w{w}", str(src), str(go)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    time.sleep(1.0)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err


def test_concurrent_commits_from_several_processes_lose_no_catalog_entry(tmp_path: Path):
    """Four processes commit at once, each to its own names (which share catalog shards) and all to one
    shared name: afterwards the catalog equals what the refs say, and no pending marker is left."""
    _race_writers(tmp_path, 4)
    rows = _listed()
    assert rows == _rows_from_refs()
    assert len(rows) == 4 * 4 + 1 and rows[-1] == {**rows[-1], "name": "shared", "versions": 16}
    assert list((Path(os.environ["DVX_STORE"]) / "refs/catalog/datasets/pending").iterdir()) == []
    assert Repo().refs().catalog.entries()["shared"].pointers == {"last": Repo().refs().get_tag("shared",
                                                                                                  "last").version}


def test_the_catalog_on_s3_uses_conditional_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_calls):
    """On moto's S3 (If-None-Match / If-Match): concurrent writers share shards without losing entries,
    listings read a fixed number of objects, and a deleted shard is rebuilt."""
    from servers import new_s3_bucket

    monkeypatch.setenv("DVX_STORE", f"s3://{new_s3_bucket()}/names-{uuid.uuid4().hex[:6]}")
    _race_writers(tmp_path, 3)
    write_tree(tmp_path / "m", {"w.bin": b"weights"})
    dvx.Model.register("clf", tmp_path / "m", aliases=["production"], metrics={"acc": 0.8})
    _listed()  # builds the shards no write has touched yet (a fresh store has names in a few only)
    store_calls.clear()
    rows = _listed()
    assert len(store_calls) <= LISTING_BUDGET, store_calls
    assert rows == _rows_from_refs() and len(rows) == 3 * 4 + 1
    (model,) = dvx.Model.list(alias="production")
    assert (model.ref, model.metrics) == ("clf@v1", {"acc": 0.8})
    store = Repo().store
    store.delete(Repo().refs().catalog._shard_key(0))
    assert _listed() == rows
    assert store.exists(Repo().refs().catalog._shard_key(0))


def test_long_lineage_commands_read_what_they_show(tmp_path: Path, store_calls):
    """100 versions: `show` and `get` of the latest read a fixed number of objects (one listing of the
    versions names the latest; its record, its tags, its manifest and its parent's manifest, the chunk
    store's config and the packs its files are in); `log` reads one record per version, which is
    necessary since it prints every version, plus two listings (versions, tags) and nothing else."""
    versions = 100
    src = tmp_path / "src"
    for v in range(versions):
        _commit("long", src, {"fixed.txt": "same", "changing.txt": f"version {v}"})

    def reads_of(action) -> tuple[int, int]:
        store_calls.clear()
        action()
        versions_read = [k for m, k in store_calls if m == "read" and "/versions/" in k]
        return len(store_calls), len(versions_read)

    calls_log, records_log = reads_of(lambda: dvx.log("long"))
    assert records_log == versions and calls_log <= versions + 4, store_calls
    calls_show, records_show = reads_of(lambda: dvx.show("long"))
    calls_show_v1, _ = reads_of(lambda: dvx.show("long@v2"))
    assert records_show == 1 and calls_show <= 12 and calls_show <= calls_show_v1 + 1, store_calls
    calls_get, _ = reads_of(lambda: dvx.get("long", tmp_path / "out"))
    calls_get_v1, _ = reads_of(lambda: dvx.get("long@v1", tmp_path / "out1"))
    assert calls_get <= 16 and calls_get_v1 <= 16, store_calls
    assert (tmp_path / "out" / "changing.txt").read_text() == f"version {versions - 1}"


def test_model_rows_carry_every_field_of_a_dataset_version():
    """model_version builds its rows in one step for speed: it must give every field version_from_record
    gives (a field added there and not here would silently be missing from model listings)."""
    from dvx.api.datasets import version_from_record

    record = VersionRecord(name="m", version=2, manifest="ab" * 16, created="2026-01-01T00:00:00+00:00", author="a",
                           message="msg", files=3, bytes=4, parents=["cd" * 16], parent_refs=["m@v1"],
                           inputs=["ef" * 16], input_refs=["d@v1"], new_bytes=5)
    row = models.model_version(None, record, ["production"], models.VersionNotes(metrics={"acc": 1.0}))
    base = version_from_record(record, ["production"], "model")
    fields = msgspec.structs.asdict(base)
    assert {k: getattr(row, k) for k in fields} == fields


def test_pushed_versions_are_listed_in_the_destination(tmp_path: Path):
    """`dvx push` imports version records into another store: that store's catalog lists them."""
    _commit("travels", tmp_path / "src", {"a.txt": "one"}, tags=["production"])
    _commit("travels", tmp_path / "src", {"a.txt": "two"})
    other = str(tmp_path / "other-store")
    dvx.push("travels", other)
    rows = dvx.datasets(store=other)
    assert [(r["name"], r["latest"], r["versions"]) for r in rows] == [("travels", "travels@v2", 2)]
    assert Refs(Repo(store=other).store).catalog.entries()["travels"].pointers == {"production": 1}
    assert not (tmp_path / "other-store" / "refs/catalog/datasets/pending").exists() or \
        list((tmp_path / "other-store" / "refs/catalog/datasets/pending").iterdir()) == []
