"""Deleting versions and garbage collection (dvx/api/garbage.py, dvx/cli/gc.py, docs/reliability.md).

The two-phase collection is driven with an injected clock (`now=`), so no test sleeps through a grace
period. The concurrency tests race real processes: writers adding and committing (new data, and data
that lives in packs the gc is collecting at that moment) against gc loops with no grace at all or a
fraction of a second, then check that every committed version is complete and that every failure was
the clear "re-add" error. One interleaving too narrow to hit by chance is replayed with threads.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import dvx_executable, run_dvx, write_tree

import dvx
from dvx.api import garbage
from dvx.api.garbage import (
    CLOCK_MARGIN,
    GC,
    Lease,
    SweepMarker,
    collect_garbage,
    delete_versions,
    parse_duration,
)
from dvx.api.repo import Repo
from dvx.chunks.pack import index_key, pack_key
from dvx.errors import ConflictError, NotFoundError, UsageError
from dvx.fs import open_store
from dvx.manifests import manifest_key
from dvx.refs.store import DeletedVersion, VersionDeletedError

HOUR = 3600.0
DAY = 24 * HOUR


# -- helpers ------------------------------------------------------------------------------------------------
def gc_cli_prefix() -> list[str]:
    return [dvx_executable()]


def run_gc_cli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """`dvx gc …` / `dvx dataset delete …` / `dvx model delete …` through the installed command."""
    proc = subprocess.run([*gc_cli_prefix(), *map(str, args)], check=False, capture_output=True, text=True,
                          timeout=120,
                          env={**os.environ, **(env or {})})
    assert "Traceback (most recent call last)" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, f"dvx {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def rand(seed: int | str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def commit(name: str, files: dict, folder: Path, **create) -> dvx.Version:
    write_tree(folder, files)
    ds = dvx.Dataset.create(name, **create)
    ds.add(folder)
    return ds.commit().version


def collect(**kwargs) -> garbage.GcReport:
    repo = Repo()
    try:
        return collect_garbage(repo, **{"grace": DAY, **kwargs})
    finally:
        repo.close()


def keys_of(version: dvx.Version) -> set[str]:
    """Manifest (root and pages), pack and index keys of a version."""
    repo = Repo()
    packs = {c.pack for f in repo.read_manifest(version.id).files for c in f.chunks}
    return repo.manifest_keys(version.id) | {pack_key(p) for p in packs} | {index_key(p) for p in packs}


def store_keys() -> set[str]:
    return set(Repo().store.walk(""))


def verify_full(*refs: str) -> None:
    report = dvx.verify(list(refs), mode="full")
    assert report.ok, [p.to_dict() for p in report.problems]


# -- durations, listings -------------------------------------------------------------------------------------
def test_durations_parse_and_bad_ones_are_usage_errors():
    assert [parse_duration(t) for t in ("24h", "30m", "7d", "0s", "1h30m", "90", "1.5h", "2w")] == [
        DAY, 1800, 7 * DAY, 0, 5400, 90, 5400, 14 * DAY]
    for bad in ("", "h", "-1h", "3 days", "1y"):
        with pytest.raises(UsageError):
            parse_duration(bad)


@pytest.mark.parametrize("backend", ["local", "memory", "s3", "gcs", "azure"])
def test_scan_lists_every_object_below_a_prefix_with_size_and_mtime(backend: str, tmp_path: Path):
    """Store.scan (what gc lists the store with) agrees with walk() and info() on each backend."""
    from servers import new_azure_container, new_gcs_bucket, new_s3_bucket

    url = {"local": lambda: str(tmp_path / "scan"), "memory": lambda: f"memory://scan-{uuid.uuid4().hex}",
           "s3": lambda: f"s3://{new_s3_bucket()}/scan", "gcs": lambda: f"gs://{new_gcs_bucket()}/scan",
           "azure": lambda: f"az://{new_azure_container()}/scan"}[backend]()
    store = open_store(url)
    for key, size in {"packs/ab/x.pack": 3, "packs/cd/y.pack": 0, "index/z.idx": 5, "packsy/q": 1}.items():
        store.put_create(key, b"x" * size)
    listed = list(store.scan("packs"))
    assert [i.key for i in listed] == ["packs/ab/x.pack", "packs/cd/y.pack"]
    for info in listed:
        direct = store.info(info.key)
        assert (info.size, round(info.mtime)) == (direct.size, round(direct.mtime))
        assert abs(info.mtime - time.time()) < 600
    assert [i.key for i in store.scan("")] == sorted(["index/z.idx", "packs/ab/x.pack", "packs/cd/y.pack", "packsy/q"])
    assert list(store.scan("nothing")) == []


# -- collection ----------------------------------------------------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def any_store(request, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    if request.param == "local":
        return os.environ["DVX_STORE"]
    from servers import new_s3_bucket

    url = f"s3://{new_s3_bucket()}/gc-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("DVX_STORE", url)
    return url


def test_a_deleted_version_is_collected_in_two_runs_a_grace_apart(any_store: str, tmp_path: Path):
    """Deleting a version frees its own data only after it was found unreachable and old by two gc runs
    at least the grace apart; shared and referenced data stays; the report counts the bytes freed."""
    keep = commit("keep", {"k.bin": rand(1, 150_000), "shared.txt": "same"}, tmp_path / "k")
    drop = commit("drop", {"d.bin": rand(2, 120_000), "shared.txt": "same"}, tmp_path / "d")
    assert collect().condemned == []  # everything is referenced
    delete_versions(Repo(), "drop@v1")
    only_drop = keys_of(drop) - keys_of(keep)
    assert len(only_drop) == 4  # its manifest's root and page, its pack and the pack's index segment
    t = time.time()

    young = collect(now=t)
    assert young.condemned == [] and young.deleted == []  # unreachable, but younger than the grace
    first = collect(now=t + DAY + HOUR)
    assert {o.key for o in first.condemned} == only_drop and first.deleted == []
    assert first.record and first.deletable_after == pytest.approx(t + 2 * DAY + HOUR)
    early = collect(now=t + 2 * DAY)  # condemned, but not yet for a whole grace
    assert early.deleted == [] and {o.key for o in early.pending} == only_drop and early.condemned == []
    assert only_drop <= store_keys()

    second = collect(now=t + 2 * DAY + 2 * HOUR)
    assert {o.key for o in second.deleted} == only_drop
    sizes = {k: Repo().store.info(k).size for k in keys_of(keep)}
    assert second.bytes_freed == sum(o.size for o in second.deleted) > 120_000
    assert second.records_processed == 1 and second.condemned == []
    assert not only_drop & store_keys()
    assert keys_of(keep) <= store_keys() and all(Repo().store.info(k).size == s for k, s in sizes.items())
    assert not [k for k in store_keys() if k.startswith("gc/")]  # records and sweep markers are gone
    verify_full("keep@v1")
    assert collect(now=t + 5 * DAY).condemned == []


def test_unreferenced_data_is_kept_while_young_and_while_a_draft_holds_it(tmp_path: Path):
    """A discarded draft's packs are garbage once old enough; an open draft's packs are kept (its lease),
    even when the draft is old, until the lease is a week old."""
    write_tree(tmp_path / "a", {"a.bin": rand(3, 100_000)})
    write_tree(tmp_path / "b", {"b.bin": rand(4, 100_000)})
    gone = dvx.Dataset.create("gone")
    gone.add(tmp_path / "a")
    gone.discard()
    held = dvx.Dataset.create("held")
    held.add(tmp_path / "b")
    t = time.time()
    report = collect(now=t + DAY + 60)
    condemned = {o.key for o in report.condemned}
    assert any(k.startswith("packs/") for k in condemned) and len(condemned) == 2  # a pack and its index
    assert [o.key for o in report.kept_by_leases] and all(k not in condemned for k in
                                                          (o.key for o in report.kept_by_leases))
    assert [h["purpose"] for h in report.leases] == ["draft"] and report.leases[0]["name"] == "held"
    expired = collect(now=t + 8 * DAY)  # a lease not refreshed for a week no longer protects
    assert expired.expired_leases == 1 and {o.key for o in expired.kept_by_leases} == set()
    assert {o.key for o in expired.deleted} == condemned


def test_commit_of_a_draft_whose_data_was_collected_fails_with_re_add_and_re_adding_fixes_it(tmp_path: Path):
    """A draft left for over a week loses its lease; once gc collected its data, commit refuses with the
    re-add error (not a broken version), and adding the files again stores them again."""
    src = write_tree(tmp_path / "src", {"x.bin": rand(5, 200_000), "y.txt": "why"})
    ds = dvx.Dataset.create("stale")
    ds.add(src)
    t = time.time()
    assert collect(now=t + 8 * DAY).condemned  # lease expired: the draft's packs are condemned …
    assert collect(now=t + 10 * DAY).deleted  # … and deleted a grace later
    with pytest.raises(ConflictError, match="re-add") as failure:
        ds.commit()
    assert "x.bin" in str(failure.value) and "y.txt" in str(failure.value)
    with pytest.raises(NotFoundError):
        dvx.log("stale")
    ds.add(src)  # the stat cache and the chunk index still name the deleted pack: stored again
    assert ds.commit().version.ref == "stale@v1"
    verify_full("stale@v1")


def test_dry_run_changes_nothing_and_the_json_report_has_its_shape(tmp_path: Path):
    commit("d", {"a.bin": rand(6, 80_000)}, tmp_path / "a")
    delete_versions(Repo(), "d@v1")
    before = {k: Repo().store.info(k).mtime for k in store_keys()}
    dry = json.loads(run_gc_cli("gc", "--dry-run", "--grace", "0s", "--force", "--json").stdout)
    assert dry["dry_run"] is True and dry["condemned"]["objects"] == 4 and dry["condemned"]["record"] is None
    assert {k: Repo().store.info(k).mtime for k in store_keys()} == before
    out = json.loads(run_gc_cli("gc", "--grace", "0s", "--force", "--json").stdout)
    assert set(out) == {"store", "dry_run", "grace_seconds", "now", "reachable", "condemned", "deleted",
                        "temporaries", "bytes_freed", "kept_by_leases", "pardoned", "pending", "records_processed",
                        "leases", "incomplete"}
    assert set(out["condemned"]) == {"objects", "bytes", "keys", "record", "deletable_after"}
    assert set(out["deleted"]) == {"objects", "bytes", "keys"} and set(out["leases"]) == {"live", "expired",
                                                                                              "holders"}
    assert out["grace_seconds"] == 0 and out["condemned"]["objects"] == 4 and out["deleted"]["objects"] == 0
    assert out["condemned"]["record"].startswith("gc/condemned-")
    dry = json.loads(run_gc_cli("gc", "--dry-run", "--grace", "0s", "--force", "--json").stdout)
    assert dry["deleted"]["objects"] == 4 and dry["bytes_freed"] > 80_000
    assert set(store_keys()) == set(before) | {out["condemned"]["record"]}
    done = run_gc_cli("gc", "--grace", "0s", "--force")
    assert "deleted 4 objects, freed" in done.stdout
    assert not [k for k in store_keys() if k.startswith(("packs/", "index/", "manifests/", "pages/", "gc/"))]


def test_a_short_grace_needs_force_and_a_bad_one_is_a_usage_error():
    assert run_gc_cli("gc", "--grace", "10m", check=False).returncode == 2
    bad = run_gc_cli("gc", "--grace", "soon", check=False)
    assert bad.returncode == 2 and "invalid duration" in bad.stderr
    assert run_gc_cli("gc", "--grace", "10m", "--force").returncode == 0  # empty store: nothing to do


def test_a_pack_condemned_then_referenced_again_is_pardoned(tmp_path: Path):
    """Data condemned as garbage that a new version then uses (deduplication) is not deleted."""
    commit("p", {"a.bin": rand(7, 90_000)}, tmp_path / "one")
    delete_versions(Repo(), "p@v1")
    t = time.time()
    condemned = {o.key for o in collect(now=t + DAY + 60).condemned}
    assert len(condemned) == 4  # manifest root and page, pack, index segment
    again = commit("q", {"same.bin": rand(7, 90_000)}, tmp_path / "two")  # dedups into the condemned pack
    report = collect(now=t + 3 * DAY)
    assert report.deleted == [o for o in report.deleted if o.key.startswith(("manifests/", "pages/"))]
    assert {o.key for o in report.pardoned} == {k for k in condemned if k.startswith("packs/")}
    verify_full(again.ref)


# -- deleting versions -------------------------------------------------------------------------------------
def test_delete_refuses_while_others_depend_unless_forced(tmp_path: Path):
    raw = commit("raw", {"r.csv": "a,b\n1,2\n"}, tmp_path / "raw")
    commit("derived", {"extra.txt": "more"}, tmp_path / "der", parents=["raw@v1"])
    run_dvx("tag", "raw@v1", "prod")
    ckpt = write_tree(tmp_path / "ckpt", {"w.bin": rand(8, 30_000)})
    run_dvx("model", "register", "m", str(ckpt), "--dataset", "raw@v1", "--alias", "production")

    refused = run_gc_cli("dataset", "delete", "raw@v1", check=False)
    assert refused.returncode == 4, refused.stderr
    for needed in ("derived@v1", "model m@v1 was trained on it", "tag raw@prod"):
        assert needed in refused.stderr
    assert dvx.version("raw@v1").id == raw.id  # nothing changed
    forced = json.loads(run_gc_cli("dataset", "delete", "raw@prod", "--force", "-m", "bad rows", "--json").stdout)
    assert forced["deleted"] == ["raw@v1"] and forced["tags_deleted"] == ["raw@prod"] and forced["forced"]
    tag = Repo().refs().get_tag("raw", "prod")
    assert tag.version is None and [e.action for e in tag.history] == ["set", "delete"]
    gone = run_dvx("ls", "raw@v1", check=False)
    assert gone.returncode == 3 and "raw@v1 was deleted" in gone.stderr and "bad rows" in gone.stderr
    assert "every version of dataset 'raw' was deleted" in run_dvx("get", "raw", check=False).stderr
    # the derived dataset and the model are intact; lineage shows the deleted version as such
    verify_full("derived@v1")
    assert "raw@v1" in run_dvx("lineage", "derived@v1").stdout and "[deleted]" in run_dvx("lineage",
                                                                                          "derived@v1").stdout
    assert dvx.Model.version("m@v1").input_refs == ["raw@v1"]
    # models: the alias blocks, --force deletes it with the version
    assert run_gc_cli("model", "delete", "m@v1", check=False).returncode == 4
    assert json.loads(run_gc_cli("model", "delete", "m@production", "--force", "--json").stdout)[
        "tags_deleted"] == ["m@production"]
    assert run_dvx("model", "get", "m", check=False).returncode == 3


def test_version_numbers_are_never_reused_and_readers_skip_deleted_versions(tmp_path: Path):
    for n in range(3):
        commit("n", {"f.txt": f"v{n}"}, tmp_path / f"s{n}")
    run_gc_cli("dataset", "delete", "n@v3")  # the latest one
    run_gc_cli("dataset", "delete", "n@v1")
    assert [v.version for v in dvx.log("n")] == [2]
    assert dvx.datasets()[0]["versions"] == 1 and dvx.datasets()[0]["latest"] == "n@v2"
    assert dvx.version("n").ref == "n@v2"
    assert commit("n", {"f.txt": "again"}, tmp_path / "s9").ref == "n@v4"
    with pytest.raises(VersionDeletedError, match="n@v3 was deleted"):
        dvx.version("n@v3")
    with pytest.raises(VersionDeletedError):
        dvx.version(f"n@{Repo().refs().get_record('n', 1).deleted_manifest[:10]}")  # by id prefix
    again = run_gc_cli("dataset", "delete", "n@v1", check=False)
    assert again.returncode == 3 and "was deleted" in again.stderr
    refused = run_gc_cli("dataset", "delete", "n", check=False)
    assert refused.returncode == 2 and "--all" in refused.stderr
    assert json.loads(run_gc_cli("dataset", "delete", "n", "--all", "--json").stdout)["deleted"] == ["n@v2", "n@v4"]
    assert run_dvx("dataset", "log", "n", check=False).returncode == 3
    assert commit("n", {"f.txt": "after all"}, tmp_path / "s10").ref == "n@v5"
    verify = run_dvx("verify", "n@v2", check=False)
    assert verify.returncode == 3 and "n@v2 was deleted" in verify.stderr


def test_a_tombstone_without_its_marker_is_still_a_deleted_version(tmp_path: Path):
    """A crash between the tombstone and its listing marker: readers still skip it, deleting again
    completes it."""
    for n in range(2):
        commit("c", {"f.txt": f"v{n}"}, tmp_path / f"s{n}")
    refs = Repo().refs()
    refs.delete_version("c", 2, by="test")
    Repo().store.delete("refs/datasets/c/versions/0000000002.deleted.json")
    assert refs.version_numbers("c") == [1, 2] and refs.latest("c").version == 1
    assert [r.version for r in refs.versions("c")] == [1]
    assert isinstance(refs.delete_version("c", 2, by="again"), DeletedVersion)
    assert refs.version_numbers("c") == [1] and refs.get_record("c", 2).deleted.by == "test"


def test_pins_push_and_fetch_treat_deleted_versions_as_absent(tmp_path: Path):
    run_dvx("init")
    commit("base", {"b.txt": "base"}, tmp_path / "b")
    child = commit("base", {"c.txt": "child"}, tmp_path / "c")
    run_dvx("pin", "base@v1")
    refused = run_gc_cli("dataset", "delete", "base@v1", check=False)
    assert refused.returncode == 4 and "pins it" in refused.stderr
    run_gc_cli("dataset", "delete", "base@v1", "--force")
    status = run_dvx("verify", check=False)  # the project's pins
    assert status.returncode == 5 and "pinned dataset base@v1 was deleted" in status.stdout
    other = tmp_path / "other-store"
    dvx.push("base", str(other))  # a version whose parent was deleted still copies, without it
    assert [v.ref for v in dvx.log("base", store=str(other))] == ["base@v2"]
    assert dvx.version("base@v2", store=str(other)).id == child.id
    with pytest.raises(NotFoundError, match="was deleted"):
        dvx.push("base@v1", str(other))
    commit("back", {"x.txt": "x"}, tmp_path / "x", store=str(other))
    delete_versions(Repo(store=str(other)), "back@v1")
    commit("back", {"x.txt": "x here"}, tmp_path / "y")
    with pytest.raises(ConflictError, match="was deleted in"):
        dvx.push("back@v1", str(other))


# -- leases and sweeps ------------------------------------------------------------------------------------------
def test_a_writer_waits_for_a_sweep_that_began_before_its_lease_then_checks(tmp_path: Path):
    store = open_store(str(tmp_path / "s"))
    store.put_create("packs/ab/ab" + "0" * 30 + ".pack", b"data")
    key = "packs/ab/ab" + "0" * 30 + ".pack"
    now = time.time()
    marker = f"{GC}/sweep-test.json"
    store.put_create(marker, garbage.encode_document(SweepMarker(id="1" * 32, started=now - 1, until=now + 60,
                                                         keys=[key])))
    lease = Lease.new(store, purpose="test")
    lease.hold([key])
    result: dict = {}
    waiter = threading.Thread(target=lambda: result.setdefault("missing", lease.secure([key], check=[key])))
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive()  # the sweep may still delete the key: wait for it
    store.delete(key)  # … it did
    store.delete(marker)
    waiter.join(10)
    assert result["missing"] == {key}
    # A sweep announced well after the lease, or one that ran out of time long ago, is no reason to wait.
    store.put_create(key, b"data")
    later = time.time() + CLOCK_MARGIN + 5
    store.put_create(f"{GC}/sweep-later.json", garbage.encode_document(SweepMarker(id="2" * 32, started=later,
                                                                           until=later + 60, keys=[key])))
    store.put_create(f"{GC}/sweep-dead.json", garbage.encode_document(SweepMarker(
        id="3" * 32, started=now - 3 * CLOCK_MARGIN - 100, until=now - 2 * CLOCK_MARGIN, keys=[key])))
    assert lease.secure([key], check=[key]) == set()
    lease.release()
    assert not store.exists(lease.key)


@pytest.mark.parametrize("announced", [True, False], ids=["sweep-announced", "unannounced-sweep-breaks"])
def test_a_writer_waits_for_a_sweep_that_read_the_leases_before_it(announced: bool, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    """The interleaving the sweep marker exists for, made deterministic: a gc has read the leases and the
    refs (the old pack is garbage), then a writer deduplicates into that pack and commits, then the gc
    deletes. With the marker the writer waits, sees the pack go and stores the data again; a gc that does
    not announce its sweep (unannounced-sweep-breaks, what the protocol must prevent) leaves a version
    whose pack is missing."""
    content = rand(9, 150_000)
    commit("old", {"x.bin": content}, tmp_path / "old")
    delete_versions(Repo(), "old@v1")
    t = time.time()
    assert len(collect(now=t + DAY + 60).condemned) == 4
    refs_read, go = threading.Event(), threading.Event()
    real_reachable = garbage._reachable

    def paused_reachable(*args, **kwargs):
        found = real_reachable(*args, **kwargs)
        refs_read.set()
        assert go.wait(30)
        return found

    monkeypatch.setattr(garbage, "_reachable", paused_reachable)
    gc_repo = Repo()
    if not announced:
        real_put = gc_repo.store.put_create
        monkeypatch.setattr(gc_repo.store, "put_create",
                            lambda key, data: True if key.startswith("gc/sweep-") else real_put(key, data))
    outcome: dict = {}
    sweeper = threading.Thread(target=lambda: outcome.setdefault(
        "gc", collect_garbage(gc_repo, grace=DAY, now=t + 3 * DAY)))
    sweeper.start()
    assert refs_read.wait(30)

    def write() -> None:
        ds = dvx.Dataset.create("new")
        ds.add(write_tree(tmp_path / "new", {"same.bin": content}))
        outcome["version"] = ds.commit().version

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(1.0)
    assert writer.is_alive() == announced  # with the marker, the writer waits for the sweep to end
    go.set()
    sweeper.join(30)
    writer.join(30)
    assert len(outcome["gc"].deleted) == 4  # the old version's manifest root and page, pack and index segment
    report = dvx.verify(["new@v1"], mode="exists")
    if announced:
        assert report.ok and outcome["version"].ref == "new@v1"
        verify_full("new@v1")
    else:
        assert not report.ok and "is missing" in report.problems[0].what


def test_a_lease_that_may_have_lapsed_starts_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = open_store(str(tmp_path / "s"))
    lease = Lease.new(store, purpose="test")
    lease.hold(["a"])
    first = dict(lease.since)
    lease.hold(["b"])
    assert lease.since["a"] == first["a"] and lease.since["b"] >= first["a"]
    real = time.time
    monkeypatch.setattr(garbage, "_clock", lambda: real() + 2 * DAY)
    lease.hold([])
    assert lease.since["a"] > first["a"] + DAY and set(lease.since) == {"a", "b"}


# -- concurrency: writers against an aggressive gc ----------------------------------------------------------
_WRITER = r"""
set -u
name=$1; rounds=$2; data=$3; log=$4
record() {  # step, exit code, stderr file
    printf '%s\t%s\t%s\n' "$1" "$2" "$(tr '\n' ' ' < "$3")" >> "$log"
}
for r in $(seq 1 "$rounds"); do
    dvx dataset create "$name" --replace > /dev/null 2> "$log.err"; record "create $r" $? "$log.err"
    dvx dataset sync "$data/$r" > /dev/null 2> "$log.err"; record "sync $r" $? "$log.err"
    out=$(dvx dataset commit -m "round $r" 2> "$log.err"); code=$?; record "commit $r ${out%% *}" $code "$log.err"
    if [ $code -eq 0 ] && [ $((r % 2)) -eq 1 ]; then  # odd rounds become garbage for the next round to reuse
        $DELETE dataset delete "${out%% *}" --force > /dev/null 2> "$log.err"; record "delete $r" $? "$log.err"
    fi
done
"""

_GC_LOOP = r"""
import json, os, random, sys, time, traceback
from dvx.api import garbage
from dvx.api.repo import Repo
stop, out = sys.argv[1], sys.argv[2]
# To check that this test can fail: DVX_TEST_BREAK_GC=leases ignores the writers' leases, =sweeps deletes
# without announcing its sweep to writers.
broken = os.environ.get("DVX_TEST_BREAK_GC", "")
if broken == "leases":
    garbage._read_leases = lambda *args, **kwargs: set()
real_reachable = garbage._reachable
def slow_reachable(*args, **kwargs):  # widen the window between reading the leases and deleting
    time.sleep(random.uniform(0, 0.02) if random.random() < 0.8 else random.uniform(0.2, 0.6))
    return real_reachable(*args, **kwargs)
garbage._reachable = slow_reachable
graces = [float(g) for g in sys.argv[3].split(",")]
pause = float(sys.argv[4])
runs = deleted = condemned = 0
errors = []
while not os.path.exists(stop):
    repo = Repo()
    try:
        if broken == "sweeps":
            store = repo.store
            original = store.put_create
            store.put_create = lambda key, data, _o=original: True if key.startswith("gc/sweep-") else _o(key, data)
        # No grace at all, or a fraction of a second: whatever a writer left unreferenced for that long goes.
        report = garbage.collect_garbage(repo, grace=random.choice(graces))
        runs += 1
        deleted += len(report.deleted)
        condemned += len(report.condemned)
        time.sleep(pause)
    except Exception:
        errors.append(traceback.format_exc())
        time.sleep(0.05)
    finally:
        repo.close()
json.dump({"runs": runs, "deleted": deleted, "condemned": condemned, "errors": errors}, open(out, "w"))
"""


# Loaded by every writer process (PYTHONPATH): a writer pauses after checking what it will reference and
# before referencing it, so an unsafe gc has time to delete it in between. A safe gc does not care.
_SLOW_WRITER = """
import os, random, time
from dvx.api import garbage
_secure = garbage.Lease.secure
def secure(self, *args, **kwargs):
    missing = _secure(self, *args, **kwargs)
    time.sleep(random.uniform(0, float(os.environ.get("DVX_TEST_SLOW", "0.05"))))
    return missing
garbage.Lease.secure = secure
"""


def _round_data(root: Path, writer: int, rounds: int) -> Path:
    """Round r: a new file, the file of round r-1 (an odd round's version is deleted right after its
    commit, so this content sits in a pack gc is collecting), and a file common to every round."""
    common = rand("common", 70_000)
    for r in range(1, rounds + 1):
        write_tree(root / str(r), {
            "common.bin": common,
            "new.bin": rand(f"{writer}-{r}", 60_000 + 1000 * r),
            "previous.bin": rand(f"{writer}-{r - 1}", 60_000 + 1000 * (r - 1)) if r > 1 else b"first",
            f"round-{r}.txt": f"round {r} of writer {writer}",
        })
    return root


def _race(tmp_path: Path, writers: int, rounds: int, gcs: int, pause: float = 0.0) -> dict:
    """Run `writers` add+commit loops against `gcs` gc loops (grace 0) in separate processes."""
    bin_dir = Path(dvx_executable()).parent
    delete = tmp_path / "dvx-with-delete"  # the installed `dvx`, as the loops call it
    delete.write_text(f'#!/bin/sh\nexec "{dvx_executable()}" "$@"\n')
    delete.chmod(0o755)
    write_tree(tmp_path / "slow", {"sitecustomize.py": _SLOW_WRITER})
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DELETE": str(delete)}
    stop = tmp_path / "stop"
    # Grace in seconds, picked at each run from the list of its loop: none at all, or a fraction of a
    # second (then data dies while writers are busy with it, rather than before they get to it).
    graces = os.environ.get("DVX_TEST_GC_GRACES", "0;0.3,0.4,0.5").split(";")
    loops = [subprocess.Popen([sys.executable, "-c", _GC_LOOP, str(stop), str(tmp_path / f"gc{i}.json"),
                               graces[i % len(graces)], str(pause)], env=env) for i in range(gcs)]
    procs = []
    for w in range(writers):
        data = _round_data(tmp_path / f"data{w}", w, rounds)
        procs.append(subprocess.Popen(
            ["bash", "-c", _WRITER, "-", f"w{w}", str(rounds), str(data), str(tmp_path / f"w{w}.log")],
            env={**env, "DVX_STATE_DIR": str(tmp_path / f"state{w}"), "PYTHONPATH": str(tmp_path / "slow")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    try:
        for proc in procs:
            proc.communicate(timeout=600)
    finally:
        stop.touch()
        for loop in loops:
            loop.wait(timeout=120)
    steps = []
    for w in range(writers):
        for line in (tmp_path / f"w{w}.log").read_text().splitlines():
            step, code, err = line.split("\t")
            steps.append((w, step, int(code), err))
    gc_runs = [json.loads((tmp_path / f"gc{i}.json").read_text()) for i in range(gcs)]
    return {"steps": steps, "gcs": gc_runs}


def _check_race(outcome: dict, writers: int, rounds: int) -> None:
    steps, gcs = outcome["steps"], outcome["gcs"]
    assert not [e for g in gcs for e in g["errors"]], [e for g in gcs for e in g["errors"]]
    # Every committed version not deleted on purpose is complete: every chunk re-read and re-hashed.
    kept = {step.split()[2] for _, step, code, _ in steps
            if step.startswith("commit") and code == 0 and int(step.split()[1]) % 2 == 0}
    live = {r.ref for w in range(writers) for r in Repo().refs().versions(f"w{w}")}
    assert kept == live
    if live:
        verify = run_dvx("verify", "--full", *sorted(live), check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    # Every failure is the clear "re-add" error (a DataCollectedError, exit 4), never anything else,
    failures = [(w, step, code, err) for w, step, code, err in steps if code != 0]
    assert all(code == 4 and "re-add" in err for _, _, code, err in failures), failures
    # and they are rare: the gc rarely deletes what a writer is about to use.
    committed = [step for _, step, code, _ in steps if step.startswith("commit") and code == 0]
    assert len(committed) >= writers * rounds * 3 // 4, failures
    assert sum(g["runs"] for g in gcs) >= 5 and sum(g["deleted"] for g in gcs) > 0, gcs
    # A normal gc afterwards finds nothing the surviving versions use to be garbage.
    report = collect(grace=0)
    assert not {o.key for o in report.condemned} & {k for ref in live for k in keys_of(dvx.version(ref))}


def test_commits_racing_an_aggressive_gc_never_produce_a_broken_version(tmp_path: Path):
    """Two writers each run 20 rounds of create → sync → commit (odd rounds' versions are deleted at once,
    so the next round deduplicates into packs being collected) while two gc loops run, one with no grace
    at all and one with a grace of a fraction of a second, each pausing at random between reading the
    leases and deleting; the writers pause at random between checking and referencing. Every committed
    version verifies completely; every failure is the "re-add" error. (With DVX_TEST_BREAK_GC=leases or
    =sweeps in the environment the gc loops are deliberately unsafe, and this test fails.)"""
    started = time.monotonic()
    outcome = _race(tmp_path, writers=2, rounds=20, gcs=2)
    _check_race(outcome, writers=2, rounds=20)
    assert time.monotonic() - started < 150


def test_commits_racing_an_aggressive_gc_on_s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from servers import new_s3_bucket

    monkeypatch.setenv("DVX_STORE", f"s3://{new_s3_bucket()}/race")
    outcome = _race(tmp_path, writers=2, rounds=4, gcs=2, pause=0.2)  # moto serves from this process
    _check_race(outcome, writers=2, rounds=4)
