"""Distributed ingest into one version (dvx/api/shared_drafts.py, docs/scale.md#distributed-ingest):
workers add disjoint parts of a shared draft through the store alone, one commit merges them.

The flow runs on a real dask.distributed LocalCluster of worker processes (the worked example in
docs/examples/dask_ingest.py), on a local store and on S3 (moto's server); races and crashes run in real
processes; the CLI through the installed `dvx` command."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, dvx_executable, read_tree, run_dvx, write_tree

import dvx
from dvx.api.garbage import LEASES, collect_garbage
from dvx.api.repo import Repo
from dvx.api.shared_drafts import SharedDraft
from dvx.chunks.pack import pack_key
from dvx.errors import ConflictError, NotFoundError, UsageError

DAY = 24 * 3600.0


def rand(seed: int | str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def shards(root: Path, count: int, files_each: int = 6) -> dict[str, dict[str, bytes]]:
    """`count` folders of distinct files (dataset folder → {relative path: bytes}), written under root."""
    out = {}
    for shard in range(count):
        files = {f"{i:02d}.bin": rand(f"{shard}-{i}", 3000 + 1000 * i) for i in range(files_each)}
        files["nested/labels.csv"] = f"shard,{shard}\n".encode()
        write_tree(root / f"shard{shard}", files)
        out[f"train/shard{shard}"] = files
    return out


def expected_tree(parts: dict[str, dict[str, bytes]]) -> dict[str, bytes]:
    return {f"{to}/{path}": data for to, files in parts.items() for path, data in files.items()}


def store_keys(store: str | None = None, prefix: str = "") -> set[str]:
    return set(Repo(store=store).store.walk(prefix))


def example_module(monkeypatch: pytest.MonkeyPatch):
    """docs/examples/dask_ingest.py as a module the worker processes can import too."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "docs" / "examples"))
    import dask_ingest

    return dask_ingest


def run_dask_flow(example, store: str, tmp_path: Path) -> None:
    """The worked example's flow on a LocalCluster of 2 processes: 4 folders ingested by the workers into
    one version, which then 3 readers fetch in parts."""
    from dask.distributed import Client, LocalCluster

    parts = shards(tmp_path / "src", 4)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        workers = {w["id"] for w in client.scheduler_info()["workers"].values()}
        assert len(workers) == 2
        result = example.ingest(client, "imagenet", {to: str(tmp_path / "src" / to.split("/")[1]) for to in parts},
                                store, message="four shards")
        assert result.ref == "imagenet@v1" and result.version.message == "four shards"
        read_back = example.parallel_get(client, result.ref, str(tmp_path / "parts"), 3, store)
    expected = expected_tree(parts)
    listed = [f.path for f in dvx.files("imagenet@v1", store=store)]
    assert sorted(listed) == sorted(expected) and len(listed) == len(set(listed))  # each file exactly once
    assert read_tree(dvx.get("imagenet@v1", tmp_path / "whole", store=store)) == expected
    paths = [p for reader in read_back for p in reader]
    assert sorted(paths) == sorted(expected) and all(read_back)  # the readers' parts: disjoint and complete
    assert read_tree(tmp_path / "parts") == expected
    assert dvx.verify(["imagenet@v1"], mode="full", store=store).ok
    # The parts and every lease are gone; the draft's header and outcome stay for late workers.
    drafts = store_keys(store, "drafts")
    assert {k.rsplit("/", 1)[1] for k in drafts} == {"draft.json", "commit.json"}
    assert not store_keys(store, LEASES)


def test_dask_workers_ingest_one_version_and_readers_get_it_in_parts(tmp_path: Path, monkeypatch):
    run_dask_flow(example_module(monkeypatch), str(tmp_path / "store"), tmp_path)


def test_dask_flow_on_s3_through_the_store_alone(tmp_path: Path, monkeypatch):
    """Workers share nothing but the draft id and the store URL (moto's S3 server; its credentials are
    in the environment the worker processes inherit)."""
    from servers import new_s3_bucket

    run_dask_flow(example_module(monkeypatch), f"s3://{new_s3_bucket()}/data", tmp_path)


def test_overlapping_parts_fail_naming_the_paths_and_parts_and_nothing_is_written(tmp_path: Path):
    write_tree(tmp_path / "a", {"same.txt": "from a", "a.txt": "a"})
    write_tree(tmp_path / "b", {"same.txt": "from b", "b.txt": "b"})
    write_tree(tmp_path / "c", {"a.txt/inside": "a file where a.txt is a file"})
    draft = SharedDraft.create("overlap")
    for folder in "abc":
        SharedDraft.open(draft.id).add(tmp_path / folder)
    part_ids = [p.id for p in draft.parts()]
    before = store_keys()
    with pytest.raises(ConflictError) as failure:
        draft.commit()
    message = str(failure.value)
    assert "same.txt" in message and "a.txt (a file) and a.txt/inside" in message
    assert all(part_id[:8] in message for part_id in part_ids) and "Nothing was written" in message
    assert store_keys() == before  # no manifest, no version, no commit record
    with pytest.raises(NotFoundError):
        dvx.log("overlap")
    assert draft.status()["state"] == "open"
    draft.discard()
    assert not store_keys(prefix=f"drafts/{draft.id}/parts") and not store_keys(prefix=LEASES)
    with pytest.raises(ConflictError, match="discarded"):
        draft.add(tmp_path / "a")


def test_parts_replace_parent_files_and_remove_applies_to_the_parents(tmp_path: Path):
    """A part's file replaces the parent's file at that path; `remove` drops parent files only (a file a
    part adds at a removed path is kept, whatever the order)."""
    write_tree(tmp_path / "v1", {"keep.txt": "keep", "old.txt": "old", "gone/x": "x", "readd.txt": "v1"})
    first = dvx.Dataset.create("parented")
    first.add(tmp_path / "v1")
    first.commit()
    write_tree(tmp_path / "new", {"old.txt": "replaced", "readd.txt": "part"})
    draft = SharedDraft.create("parented", message="second")
    assert draft.header.parent_refs == ["parented@v1"]
    worker = SharedDraft.open(draft.id)
    assert worker.remove("gone", "readd.txt") == ["gone/x", "readd.txt"]
    worker.add(tmp_path / "new")
    with pytest.raises(NotFoundError, match="no file of parented@v1 matches"):
        worker.remove("nothing-*")
    result = draft.commit(tags=["fresh"])
    assert (result.ref, result.version.parents, result.version.tags) == ("parented@v2", ["parented@v1"], ["fresh"])
    assert read_tree(dvx.get("parented@v2", tmp_path / "out")) == {
        "keep.txt": b"keep", "old.txt": b"replaced", "readd.txt": b"part"}


def test_adds_after_the_commit_are_refused_and_a_part_that_missed_the_freeze_is_taken_back(
        tmp_path: Path, monkeypatch):
    write_tree(tmp_path / "a", {"a.txt": "a"})
    write_tree(tmp_path / "late", {"late.txt": "late"})
    draft = SharedDraft.create("late")
    SharedDraft.open(draft.id).add(tmp_path / "a")

    # The commit closes the draft and freezes its parts, then stops (as if it crashed).
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(SharedDraft, "_fix_manifest", stop)
        draft.commit()
    late = SharedDraft.open(draft.id)
    late._check_open = lambda: None  # as if it had checked before the commit began
    with pytest.raises(ConflictError, match="being committed without this part") as failure:
        late.add(tmp_path / "late")
    assert "not in any version" in str(failure.value)
    assert len(draft.parts()) == 1  # the late part was taken back, its lease released
    assert len(store_keys(prefix=LEASES)) == 1
    result = draft.commit()  # resumes the interrupted commit
    assert [f.path for f in dvx.files(result.ref)] == ["a.txt"]
    with pytest.raises(ConflictError, match=f"committed as {result.ref}"):
        SharedDraft.open(draft.id).add(tmp_path / "late")
    with pytest.raises(ConflictError, match=f"committed as {result.ref}"):
        draft.commit()
    with pytest.raises(ConflictError, match="nothing to discard"):
        draft.discard()
    with pytest.raises(UsageError, match="no parts"):
        SharedDraft.create("late").commit()


COMMITTER = r'''
import os, sys, time
from dvx.api import shared_drafts
from dvx.api.shared_drafts import SharedDraft
from dvx.errors import ConflictError

draft_id, barrier, me, count, crash = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
if crash == "after-version":  # die right after the version is allocated, before it is recorded
    real = shared_drafts.write_version
    def write_then_die(*args, **kwargs):
        real(*args, **kwargs)
        os._exit(9)
    shared_drafts.write_version = write_then_die
draft = SharedDraft.open(draft_id)
open(os.path.join(barrier, f"ready-{me}"), "w").close()
while len(os.listdir(barrier)) < count:
    time.sleep(0.001)
try:
    print("made", draft.commit().ref)
except ConflictError as exc:
    print("refused", exc)
'''


def start_committers(tmp_path: Path, draft_id: str, count: int, crash: str = "") -> list[subprocess.Popen]:
    script = tmp_path / "committer.py"
    script.write_text(COMMITTER)
    barrier = tmp_path / f"barrier-{draft_id}"
    barrier.mkdir()
    return [subprocess.Popen([sys.executable, str(script), draft_id, str(barrier), str(k), str(count), crash],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(count)]


def test_racing_commits_make_one_version_and_a_crashed_commit_is_finished_not_repeated(tmp_path: Path):
    """Three processes commit one draft at the same moment: one version, the others are told which.
    A commit that dies right after allocating its version is finished by the next commit, without a
    second version."""
    write_tree(tmp_path / "a", {"a.bin": rand(1, 50_000)})
    write_tree(tmp_path / "b", {"b.bin": rand(2, 50_000)})
    draft = SharedDraft.create("raced")
    SharedDraft.open(draft.id).add(tmp_path / "a")
    SharedDraft.open(draft.id).add(tmp_path / "b")
    outputs = []
    for proc in start_committers(tmp_path, draft.id, 3):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    assert sorted(o.split()[0] for o in outputs) == ["made", "refused", "refused"], outputs
    assert all("raced@v1" in o for o in outputs), outputs
    assert [v.ref for v in dvx.log("raced")] == ["raced@v1"]

    crashed = SharedDraft.create("raced")
    write_tree(tmp_path / "c", {"c.bin": rand(3, 50_000)})
    SharedDraft.open(crashed.id).add(tmp_path / "c")
    [proc] = start_committers(tmp_path, crashed.id, 1, crash="after-version")
    proc.communicate(timeout=120)
    assert proc.returncode == 9
    assert [v.ref for v in dvx.log("raced")] == ["raced@v2", "raced@v1"]
    assert crashed.status()["state"] == "closing"  # its commit record names the dead process
    result = crashed.commit()  # that process is gone: taken over, its version found and recorded
    assert result.ref == "raced@v2"
    assert [v.ref for v in dvx.log("raced")] == ["raced@v2", "raced@v1"]
    assert crashed.status()["state"] == "committed" and not store_keys(prefix=LEASES)
    assert sorted(read_tree(dvx.get("raced@v2", tmp_path / "out"))) == ["a.bin", "b.bin", "c.bin"]


def test_gc_keeps_an_uncommitted_parts_packs_and_commit_releases_every_lease(tmp_path: Path):
    write_tree(tmp_path / "a", {"a.bin": rand(4, 120_000)})
    write_tree(tmp_path / "gone", {"gone.bin": rand(5, 120_000)})
    draft = SharedDraft.create("collected")
    SharedDraft.open(draft.id).add(tmp_path / "a")
    # A worker that died mid-add: its packs are stored and leased, its part never written.
    crashed = SharedDraft.open(draft.id)
    crashed._publish = lambda part, lease: None
    crashed.add(tmp_path / "gone")
    [part] = draft.parts()
    packs = {pack_key(c.pack) for f in part.files for c in f.chunks}
    t = time.time()
    repo = Repo()
    report = collect_garbage(repo, grace=DAY, now=t + DAY + 60)
    assert not report.condemned and packs <= {o.key for o in report.kept_by_leases}
    assert {h["name"] for h in report.leases} == {"collected"} and len(report.leases) == 2
    result = draft.commit()
    assert not store_keys(prefix=LEASES)  # the part's lease and the dead worker's lease alike
    report = collect_garbage(repo, grace=DAY, now=t + DAY + 60)
    condemned = {o.key for o in report.condemned}
    assert not packs & condemned and any(k.startswith("packs/") for k in condemned)  # the dead worker's pack
    assert dvx.verify([result.ref], mode="full").ok


def test_cli_flow_two_machines_add_commit_and_readers_get_parts(tmp_path: Path):
    parts = shards(tmp_path / "src", 2)
    created = json.loads(run_dvx("dataset", "create", "cli/shared", "--shared", "-m", "from the cli", "--json").stdout)
    draft_id = created["draft"]
    assert created["name"] == "cli/shared" and created["parents"] == []
    plain = run_dvx("dataset", "create", "cli/plain", "--shared")
    assert len(plain.stdout.split()) == 1 and "opened shared draft" in plain.stderr  # the id alone on stdout
    adders = []
    for k, to in enumerate(parts):  # two "machines": their own state and cache folders
        env = dict(os.environ, DVX_STATE_DIR=str(tmp_path / f"state{k}"), DVX_CACHE_DIR=str(tmp_path / f"cache{k}"))
        adders.append(subprocess.Popen([dvx_executable(), "dataset", "add", str(tmp_path / "src" / f"shard{k}"),
                                        "--to", to, "--draft", draft_id, "--json"], env=env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for proc in adders:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert json.loads(out)["files"] == 7
    status = json.loads(run_dvx("dataset", "status", "--draft", draft_id, "--json").stdout)
    assert status["state"] == "open" and len(status["parts"]) == 2
    committed = run_dvx("dataset", "commit", "--draft", draft_id, "--tag", "v-one")
    assert committed.stdout.startswith("cli/shared@v1  ")
    again = run_dvx("dataset", "commit", "--draft", draft_id, check=False)
    assert again.returncode == 4 and again.stderr.startswith("dvx: error: ") and "cli/shared@v1" in again.stderr
    late = run_dvx("dataset", "add", str(tmp_path / "src"), "--draft", draft_id, check=False)
    assert late.returncode == 4 and "committed as cli/shared@v1" in late.stderr
    bad = run_dvx("dataset", "add", str(tmp_path / "src"), "--draft", "nope", check=False)
    assert bad.returncode == 2 and "invalid shared draft id" in bad.stderr
    both = run_dvx("dataset", "add", str(tmp_path / "src"), "--draft", draft_id, "--dataset", "x", check=False)
    assert both.returncode == 2
    expected = expected_tree(parts)
    seen: list[str] = []
    for index in range(3):  # three readers, each its own part
        out = tmp_path / f"reader{index}"
        run_dvx("get", "cli/shared@v-one", "-o", str(out), "--part", f"{index}/3")
        tree = read_tree(out)
        assert tree and all(expected[path] == data for path, data in tree.items())
        seen += tree
    assert sorted(seen) == sorted(expected)
    discarded = json.loads(run_dvx("dataset", "discard", "--draft", plain.stdout.strip(), "--json").stdout)
    assert discarded == {"discarded": "cli/plain", "draft": plain.stdout.strip()}


def test_an_add_that_died_leaves_only_a_lease_that_expires(tmp_path: Path):
    """Without commit or discard, a dead worker's lease stops protecting its packs after a week."""
    write_tree(tmp_path / "a", {"a.bin": rand(6, 100_000)})
    draft = SharedDraft.create("abandoned")
    worker = SharedDraft.open(draft.id)
    worker._publish = lambda part, lease: None
    worker.add(tmp_path / "a")
    assert not draft.parts()
    [name] = Repo().store.list(LEASES)
    lease = json.loads(Repo().store.read(f"{LEASES}/{name}"))
    assert lease["by"].endswith(f"(shared draft {draft.id})")  # so that commit or discard release it
    t = time.time()
    report = collect_garbage(Repo(), grace=DAY, now=t + 8 * DAY)
    assert report.expired_leases == 1 and any(o.key.startswith("packs/") for o in report.condemned)
