"""Paged manifests at a scaled-down size (issue 8, item 1): 20,000 files in 200 folders. Reading one
folder or one file fetches the root and only the pages that can hold it, and a version that changes a few
files shares almost all of its manifest bytes with its parent. benchmarks/scale.py runs the full size."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest
from conftest import run_dvx_in_process

import dvx
from dvx.api.reading import list_folder
from dvx.api.repo import Repo
from dvx.manifests import manifest_key
from dvx.manifests.paged import PAGE_MAX_FILES, page_key, split_pages

FILES, FOLDERS = 20_000, 200
# 100 of 1,000,000 at full size; here 10 of 20,000 (0.05 %) so that most pages stay untouched.
CHANGED = 10


def _write(folder: Path, index: int, rng: random.Random) -> None:
    (folder / f"folder{index % FOLDERS:03d}" / f"f{index:06d}.bin").write_bytes(rng.randbytes(64))


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> dict:
    """big@v1 with 20,000 files; big@v2 with CHANGED of them changed (one store for the module)."""
    root = tmp_path_factory.mktemp("pages")
    env = {"DVX_STORE": str(root / "store"), "DVX_STATE_DIR": str(root / "state"),
           "DVX_CACHE_DIR": str(root / "cache")}
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    src = root / "src"
    rng = random.Random(8)
    for i in range(FOLDERS):
        (src / f"folder{i:03d}").mkdir(parents=True)
    for i in range(FILES):
        _write(src, i, rng)
    ds = dvx.Dataset.create("big")
    ds.add(src)
    v1 = ds.commit("first").version
    for i in rng.sample(range(FILES), CHANGED):
        _write(src, i, rng)
    ds = dvx.Dataset.create("big")
    ds.sync(src)
    v2 = ds.commit("a few changed").version
    yield {"v1": v1, "v2": v2, "root": root, "env": env}
    mp.undo()


@pytest.fixture
def env(versions, monkeypatch) -> dict:
    for key, value in versions["env"].items():
        monkeypatch.setenv(key, value)
    return versions


def page_reads(log: list[tuple[str, int]]) -> list[str]:
    return [key for key, _ in log if key.startswith("pages/")]


def manifest_reads(log: list[tuple[str, int]]) -> int:
    return sum(1 for key, _ in log if key.startswith("manifests/"))


def test_pages_are_cut_by_path_so_a_few_changes_touch_few_pages(env):
    repo = Repo()
    one, two = repo.manifest_root(env["v1"].id), repo.manifest_root(env["v2"].id)
    assert one.file_count == two.file_count == FILES
    assert 40 <= len(one.pages) <= 160  # about one page per 256 files
    assert max(p.files for p in one.pages) < PAGE_MAX_FILES
    old = {p.id for p in one.pages}
    new_pages = [p for p in two.pages if p.id not in old]
    assert len(new_pages) <= CHANGED  # only pages holding a changed file are new
    size = {p.id: (env["root"] / "store" / page_key(p.id)).stat().st_size for p in one.pages + two.pages}
    v2_bytes = sum(size[p.id] for p in two.pages) + (env["root"] / "store" / manifest_key(env["v2"].id)).stat().st_size
    new_bytes = sum(size[p.id] for p in new_pages) + (env["root"] / "store" / manifest_key(env["v2"].id)).stat().st_size
    root_size = (env["root"] / "store" / manifest_key(env["v2"].id)).stat().st_size
    print(f"\n[pages] root {root_size} B; v1 {len(one.pages)} pages; v2 shares {len(two.pages) - len(new_pages)}/{len(two.pages)}, "
          f"new manifest bytes {new_bytes}/{v2_bytes} ({new_bytes / v2_bytes:.1%})")
    assert new_bytes < 0.4 * v2_bytes


def test_ls_of_a_folder_reads_the_root_and_only_its_pages(env, store_reads):
    rows = dvx.ls("big@v2", "folder123")
    assert len(rows) == FILES // FOLDERS
    assert len(page_reads(store_reads)) <= 3
    assert sum(1 for key, _ in store_reads if key.startswith("manifests/")) == 1


def test_get_of_a_folder_glob_reads_only_its_pages(env, store_reads, tmp_path):
    out = dvx.get("big@v2", tmp_path / "out", glob=["folder123/*"])
    assert len(list((out / "folder123").iterdir())) == FILES // FOLDERS
    assert len(page_reads(store_reads)) <= 3


def test_open_of_one_file_reads_one_page(env, store_reads):
    with dvx.open("big@v2/folder123/f000123.bin") as f:
        assert len(f.read()) == 64
    assert len(page_reads(store_reads)) == 1


def test_the_cli_lists_a_folder_of_a_paged_version(env):
    proc = run_dvx_in_process("ls", "big@v2", "folder007", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("folder007/") >= FILES // FOLDERS


def test_the_whole_version_reads_back_and_a_missing_file_is_not_found(env, tmp_path):
    listed = dvx.files("big@v1")
    assert len(listed) == FILES and [f.path for f in listed] == sorted(f.path for f in listed)
    with pytest.raises(dvx.NotFoundError):
        dvx.open("big@v1/folder123/nope.bin")


def test_page_cuts_depend_on_paths_only():
    """Removing one file moves no cut except its own; changing content moves none."""
    from dvx.manifests import FileEntry

    files = [FileEntry(path=f"d/{i:05d}") for i in range(5_000)]
    cuts = {page[-1].path for page, _ in split_pages(files)}
    for gone in ("d/02500", sorted(cuts)[3]):
        fewer = [f for f in files if f.path != gone]
        assert {page[-1].path for page, _ in split_pages(fewer)} == cuts - {gone}
    bigger = [FileEntry(path=f.path, size=7) if i % 7 == 0 else f for i, f in enumerate(files)]
    assert {page[-1].path for page, _ in split_pages(bigger)} == cuts


def test_reads_on_s3_make_a_handful_of_requests(tmp_path, monkeypatch, store_calls):
    """On S3 (moto), `ls` of a folder, `dvx.open` of a file and `get --glob` of a folder each make a small,
    fixed number of requests: resolve the version, the root, the pages they need, the chunks."""
    from servers import new_s3_bucket

    monkeypatch.setenv("DVX_STORE", f"s3://{new_s3_bucket()}/pages")
    src = tmp_path / "src"
    rng = random.Random(3)
    for i in range(40):
        (src / f"folder{i:02d}").mkdir(parents=True)
    for i in range(4_000):
        (src / f"folder{i % 40:02d}" / f"f{i:06d}.bin").write_bytes(rng.randbytes(32))
    ds = dvx.Dataset.create("s3big")
    ds.add(src)
    ds.commit("on s3")
    counts = {}
    for what, action in (("ls", lambda: dvx.ls("s3big@v1", "folder07")),
                         ("open", lambda: dvx.open("s3big@v1/folder07/f000007.bin").read()),
                         ("get", lambda: dvx.get("s3big@v1", tmp_path / "out", glob=["folder07/*"]))):
        store_calls.clear()
        action()
        counts[what] = [c for c in store_calls]
    print("\n[s3 requests]", {k: len(v) for k, v in counts.items()})
    for what, calls in counts.items():
        pages = [key for _, key in calls if key.startswith("pages/")]
        assert len(pages) <= 2, (what, calls)
        assert len(calls) <= 12, (what, calls)


def test_reusing_a_parents_pages_gives_the_same_manifest_as_building_every_page(env):
    """A commit takes the parent's unchanged pages as they are; the result must be byte for byte what a
    full re-split and re-encoding gives (for changes, additions and removals, at page edges too)."""
    from dvx.manifests import Manifest
    from dvx.manifests.paged import encode_paged

    repo = Repo()
    parent = repo.read_manifest(env["v1"].id)
    files = {f.path: f for f in parent.files}
    root = repo.manifest_root(env["v1"].id)
    edges = [p.first for p in root.pages[1:6]]  # first files of pages: removing one merges two pages
    for path in edges[:2]:
        del files[path]
    some = sorted(files)[::997]
    for path in some:
        files[path] = type(files[path])(path=path, size=0)
    files["folder050/zz-new.bin"] = type(files[some[0]])(path="folder050/zz-new.bin")
    files["zzz-last.bin"] = type(files[some[0]])(path="zzz-last.bin")  # after the parent's last page
    manifest = Manifest(kind="dataset", name="big", parents=[env["v1"].id], created="2026-01-01T00:00:00+00:00",
                        author="t", files=list(files.values()))
    reused = encode_paged(manifest, reuse=repo.reusable_pages([env["v1"].id]))
    fresh = encode_paged(manifest)
    assert reused.id == fresh.id
    assert [ref for ref, _ in reused.pages] == [ref for ref, _ in fresh.pages]
    assert sum(1 for _, data in reused.pages if data == b"") > len(reused.pages) // 2


def test_the_root_listing_reads_only_the_root(env, store_reads):
    """The top of a version lists its folders from the root's folder summary: one manifest object read and
    no page, for list_folder and for `ls` alike, with the same rows as a listing of every file."""
    listing = list_folder(Repo(), "big@v2")
    assert (listing["total"], listing["folders"], listing["files"]) == (FOLDERS, FOLDERS, 0)
    assert [e["name"] for e in listing["entries"]] == [f"folder{i:03d}" for i in range(FOLDERS)]
    assert {e["files"] for e in listing["entries"]} == {FILES // FOLDERS}
    assert manifest_reads(store_reads) == 1 and page_reads(store_reads) == []
    print("\n[root listing reads]", [key for key, _ in store_reads])
    store_reads.clear()
    rows = dvx.ls("big@v2")
    assert manifest_reads(store_reads) == 1 and page_reads(store_reads) == []
    files = Repo().read_manifest(Repo().resolve("big@v2").manifest).files
    expected = {}
    for f in files:
        row = expected.setdefault(f.path.split("/")[0], {"path": f.path.split("/")[0] + "/", "type": "folder",
                                                           "size": 0, "files": 0})
        row["size"] += f.size
        row["files"] += 1
    assert rows == [expected[k] for k in sorted(expected)]


def test_a_window_of_a_folder_reads_at_most_two_pages(env, store_reads):
    """A window of 50 of a 100-file folder reads the root and at most two pages, wherever it starts, also
    in a folder that begins inside a page and ends in the next one (its files are found by position)."""
    root = Repo().manifest_root(env["v2"].id)
    straddling = next(f"folder{i:03d}" for i in range(FOLDERS)
                      if len(root.pages_under(f"folder{i:03d}/")) == 2
                      and root.pages[root.pages_under(f"folder{i:03d}/")[0]].first < f"folder{i:03d}/")
    pages = {}
    for folder in ("folder123", straddling):
        every = sorted(f.path for f in dvx.files("big@v2") if f.path.startswith(folder + "/"))
        for offset in (0, 25, 50, 75, 99):
            store_reads.clear()
            listing = list_folder(Repo(), "big@v2", folder, offset=offset, limit=50)
            assert [e["path"] for e in listing["entries"]] == every[offset:offset + 50]
            assert [e["name"] for e in listing["entries"]] == [p.split("/")[1] for p in every[offset:offset + 50]]
            assert (listing["total"], listing["folders"], listing["files"]) == (len(every), 0, len(every))
            assert manifest_reads(store_reads) == 1
            assert len(page_reads(store_reads)) <= 2, (folder, offset, page_reads(store_reads))
            pages[folder, offset] = len(page_reads(store_reads))
        store_reads.clear()
        assert list_folder(Repo(), "big@v2", folder, offset=len(every))["entries"] == []
        assert page_reads(store_reads) == []
    print("\n[folder windows of 50: pages read]", pages)


def test_old_roots_without_a_summary_list_the_same(env, monkeypatch):
    """A root without the folder summary (as written before it existed) lists the same entries, read
    from every file under the folder."""
    from dvx.manifests import paged

    def without_summary(stored, manifest_id):
        return msgspec.structs.replace(decode(stored, manifest_id), folders=None)

    decode = paged.decode_root
    expected = {(folder, offset): list_folder(Repo(), "big@v2", folder, offset=offset, limit=70)
                for folder in ("", "folder007") for offset in (0, 60, 150)}
    expected_ls = dvx.ls("big@v2"), dvx.ls("big@v2", "folder007")
    monkeypatch.setattr("dvx.api.repo.decode_root", without_summary)
    assert Repo().manifest_root(env["v2"].id).folders is None
    for (folder, offset), listing in expected.items():
        assert list_folder(Repo(), "big@v2", folder, offset=offset, limit=70) == listing
    assert (dvx.ls("big@v2"), dvx.ls("big@v2", "folder007")) == expected_ls


def test_a_summary_that_disagrees_with_the_pages_is_refused(env, monkeypatch):
    """A root whose summary says a folder holds files directly that its pages do not hold is refused
    once the pages are read (IntegrityError), not listed wrongly."""
    from dvx.manifests import paged

    def lying(stored, manifest_id):
        root = decode(stored, manifest_id)
        folders = [msgspec.structs.replace(f, files=f.files - 1) if f.path == "folder000" else f
                   for f in root.folders]
        return msgspec.structs.replace(root, folders=folders)

    decode = paged.decode_root
    monkeypatch.setattr("dvx.api.repo.decode_root", lying)
    with pytest.raises(dvx.IntegrityError, match="folder summary that does not match its pages"):
        list_folder(Repo(), "big@v2", "", offset=FOLDERS)
    with pytest.raises(dvx.IntegrityError, match="folder summary that does not match its pages"):
        dvx.ls("big@v2")
