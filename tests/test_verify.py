"""`dvx verify`: presence checks by default, --full and --sample re-hash data; damage is reported per
version and per file, with exit code 5, and never stops the run."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

import pytest
from conftest import run_dvx, write_tree

EXIT_USAGE, EXIT_NOT_FOUND, EXIT_DAMAGED = 2, 3, 5
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _commit(tmp_path: Path, name: str, files: dict[str, bytes | str]) -> None:
    folder = write_tree(tmp_path / f"src-{name}-{len(list(tmp_path.iterdir()))}", files)
    run_dvx("dataset", "create", name)
    run_dvx("dataset", "add", str(folder))
    run_dvx("dataset", "commit", "-m", name)


def _manifest(isolated: dict, ref: str, kind: str = "dataset"):
    """The manifest of `ref`, read in-process (for chunk locations)."""
    from dvx.api.reading import resolve
    from dvx.api.repo import Repo

    repo = Repo(store=str(isolated["store"]))
    try:
        return resolve(repo, ref, kind).manifest
    finally:
        repo.close()


def _pack_file(isolated: dict, pack_id: str) -> Path:
    from dvx.chunks.pack import pack_key

    path = isolated["store"] / pack_key(pack_id)
    assert path.is_file()
    path.chmod(0o644)
    return path


def _flip(path: Path, offset: int) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _verify(*args: str, code: int = 0, cwd: Path | None = None) -> dict:
    proc = run_dvx("verify", *args, "--json", check=False, cwd=cwd)
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout)


def _problems(report: dict, version: str) -> list[dict]:
    return [p for p in report["problems"] if p["version"] == version]


def _version(report: dict, version: str) -> dict:
    (found,) = [v for v in report["versions"] if v["version"] == version]
    return found


def _assert_one_error_line(proc, code: int, *needles: str) -> None:
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dvx: error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


FILES = {
    "a.bin": _bytes(1, 40_000),
    "b.bin": _bytes(2, 3_000),
    "sub/c.txt": "some text\n" * 500,
    "empty.txt": b"",
    "copy/a.bin": _bytes(1, 40_000),  # same content as a.bin: shares its chunks
}


@pytest.fixture
def ds(tmp_path: Path, isolated) -> dict:
    _commit(tmp_path, "ds", FILES)
    return FILES


# -- intact ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [[], ["--full"], ["--sample", "100"]], ids=["exists", "full", "sample"])
def test_an_intact_version_exits_0_with_a_complete_report(ds, mode: list[str]):
    """Every mode: exit 0, `ok`, no problems, and a per-version entry with the documented fields."""
    report = _verify("ds@v1", *mode)
    name = {"--full": "full", "--sample": "sample"}.get(mode[0] if mode else "", "exists")
    assert set(report) == {"ok", "mode", "sample_percent", "seed", "versions", "problems"}
    assert report["ok"] is True and report["problems"] == [] and report["mode"] == name
    (entry,) = report["versions"]
    assert set(entry) == {"kind", "name", "version", "id", "mode", "ok", "files", "damaged_files", "chunks",
                          "chunks_total", "packs", "bytes_read", "seconds", "sample_digest", "problems"}
    assert (entry["kind"], entry["name"], entry["version"], entry["mode"]) == ("dataset", "ds", "ds@v1", name)
    assert HEX32.match(entry["id"]) and entry["ok"] is True and entry["problems"] == 0
    assert entry["files"] == len(FILES) and entry["damaged_files"] == 0 and entry["packs"] == 1
    assert entry["chunks_total"] >= len(FILES) - 2  # empty file: no chunk; the copy shares a.bin's
    assert isinstance(entry["seconds"], float) and entry["seconds"] >= 0
    if name == "exists":
        assert entry["chunks"] == 0 and entry["bytes_read"] == 0
        assert report["seed"] is None and report["sample_percent"] is None and entry["sample_digest"] is None
    else:
        assert entry["chunks"] == entry["chunks_total"] and entry["bytes_read"] > 0
    if name == "sample":
        assert report["sample_percent"] == 100 and isinstance(report["seed"], int)
        assert HEX32.match(entry["sample_digest"])
    human = run_dvx("verify", "ds@v1", *mode).stdout
    assert re.match(r"^ok\s+ds@v1\s+\(5 files, ", human), human


def test_a_bare_name_means_the_latest_version_and_several_refs_are_checked(tmp_path: Path, ds):
    _commit(tmp_path, "ds", {**FILES, "new.txt": "new"})
    report = _verify("ds", "ds@v1", "ds@v2")  # ds and ds@v2 are the same version: checked once
    assert [v["version"] for v in report["versions"]] == ["ds@v2", "ds@v1"]
    out = run_dvx("verify", "ds", "ds@v1").stdout
    assert "all 2 versions intact" in out


# -- missing and truncated packs: found without reading data ------------------------------------------------

@pytest.fixture
def two(tmp_path: Path, isolated) -> dict:
    """Datasets one (4 files) and two (2 files), committed separately: one pack each."""
    _commit(tmp_path, "one", {f"f{i}.bin": _bytes(10 + i, 20_000) for i in range(4)})
    _commit(tmp_path, "two", {"x.bin": _bytes(20, 20_000), "y.txt": "y"})
    one, two = _manifest(isolated, "one@v1"), _manifest(isolated, "two@v1")
    packs_one = {r.pack for f in one.files for r in f.chunks}
    packs_two = {r.pack for f in two.files for r in f.chunks}
    assert len(packs_one) == 1 and len(packs_two) == 1 and packs_one != packs_two
    return {"one": one, "two": two, "pack_one": packs_one.pop(), "pack_two": packs_two.pop()}


def test_a_deleted_pack_is_found_by_plain_verify_for_every_file_that_needs_it(two: dict, isolated):
    _pack_file(isolated, two["pack_one"]).unlink()
    report = _verify("one@v1", "two@v1", code=EXIT_DAMAGED)
    assert report["ok"] is False
    problems = _problems(report, "one@v1")
    assert sorted(p["path"] for p in problems) == ["f0.bin", "f1.bin", "f2.bin", "f3.bin"]
    for p in problems:
        assert p["pack"] == two["pack_one"] and p["kind"] == "dataset" and p["name"] == "one"
        assert p["what"] == f"pack {two['pack_one'][:12]}… is missing"
    assert _version(report, "one@v1")["damaged_files"] == 4 and not _version(report, "one@v1")["ok"]
    assert _version(report, "two@v1")["ok"] and _problems(report, "two@v1") == []

    proc = run_dvx("verify", "one@v1", "two@v1", check=False)
    assert proc.returncode == EXIT_DAMAGED
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("DAMAGED  one@v1  (4 files, 4 damaged")
    assert lines[1:5] == [f"    f{i}.bin: pack {two['pack_one'][:12]}… is missing" for i in range(4)]
    assert lines[5].startswith("ok       two@v1")
    assert lines[-1] == "1 of 2 versions damaged"
    # --full reports the same (and does not try to read the missing pack's chunks)
    full = _verify("one@v1", "two@v1", "--full", code=EXIT_DAMAGED)
    assert [(p["path"], p["what"]) for p in full["problems"]] == [(p["path"], p["what"]) for p in problems]
    assert _version(full, "two@v1")["ok"] and _version(full, "two@v1")["chunks"] > 0


def test_a_truncated_pack_is_found_by_plain_verify_for_the_files_past_the_cut(two: dict, isolated):
    pack = _pack_file(isolated, two["pack_one"])
    ends = {f.path: max(r.offset + r.length for r in f.chunks) for f in two["one"].files}
    cut = sorted(ends.values())[1] + 10  # the two files that end first are still whole
    pack.write_bytes(pack.read_bytes()[:cut])
    report = _verify("one@v1", code=EXIT_DAMAGED)
    problems = report["problems"]
    assert sorted(p["path"] for p in problems) == sorted(path for path, end in ends.items() if end > cut)
    assert len(problems) == 2
    for p in problems:
        assert p["what"] == f"pack {two['pack_one'][:12]}… is truncated (has {cut} bytes, needs {ends[p['path']]})"
    full = _verify("one@v1", "--full", code=EXIT_DAMAGED)  # the files before the cut still verify
    assert sorted(p["path"] for p in full["problems"]) == sorted(p["path"] for p in problems)
    assert full["versions"][0]["chunks"] > 0


# -- a flipped byte: only reading finds it ------------------------------------------------------------------

def _flip_chunk_of(isolated: dict, ref: str, path: str, index: int = 0):
    entry = next(f for f in _manifest(isolated, ref).files if f.path == path)
    chunk = entry.chunks[index]
    _flip(_pack_file(isolated, chunk.pack), chunk.offset + chunk.length // 2)
    return chunk


def test_a_flipped_byte_is_not_found_by_plain_verify_but_by_full(ds, isolated):
    chunk = _flip_chunk_of(isolated, "ds@v1", "a.bin")
    assert _verify("ds@v1")["ok"] is True  # a presence check: no data is read

    report = _verify("ds@v1", "--full", code=EXIT_DAMAGED)
    problems = report["problems"]
    # a.bin and copy/a.bin share the chunk: both are damaged; the other files verify
    assert [p["path"] for p in problems] == ["a.bin", "copy/a.bin"]
    for p in problems:
        assert (p["chunk"], p["pack"]) == (chunk.id, chunk.pack)
        assert p["what"].startswith(f"chunk {chunk.id[:12]}… is damaged")
    entry = report["versions"][0]
    assert entry["damaged_files"] == 2 and entry["chunks"] == entry["chunks_total"]

    proc = run_dvx("verify", "ds@v1", "--full", check=False)
    assert proc.returncode == EXIT_DAMAGED
    assert proc.stdout.splitlines()[0].startswith("DAMAGED  ds@v1  (5 files, 2 damaged, ")
    assert proc.stdout.splitlines()[1].startswith(f"    a.bin: chunk {chunk.id[:12]}… is damaged")


def test_sample_100_finds_the_flipped_byte(ds, isolated):
    chunk = _flip_chunk_of(isolated, "ds@v1", "sub/c.txt")
    report = _verify("ds@v1", "--sample", "100", code=EXIT_DAMAGED)
    assert [(p["path"], p["chunk"]) for p in report["problems"]] == [("sub/c.txt", chunk.id)]


def test_a_damaged_chunk_in_the_middle_of_a_large_file_is_found_and_the_rest_is_read(tmp_path: Path, isolated):
    """A file of several chunks: the damaged one is named, the other files (before and after it in the
    same pack) verify, and the file's later chunks are still read."""
    files = {"a.bin": _bytes(1, 20_000), "big.bin": _bytes(2, 600_000), "z.bin": _bytes(3, 20_000)}
    _commit(tmp_path, "big", files)
    entry = next(f for f in _manifest(isolated, "big@v1").files if f.path == "big.bin")
    assert len(entry.chunks) >= 3
    chunk = _flip_chunk_of(isolated, "big@v1", "big.bin", index=1)
    report = _verify("big", "--full", code=EXIT_DAMAGED)
    assert [(p["path"], p["chunk"]) for p in report["problems"]] == [("big.bin", chunk.id)]
    assert report["versions"][0]["chunks"] == report["versions"][0]["chunks_total"]
    assert report["versions"][0]["bytes_read"] >= sum(len(v) for v in files.values()) - 1  # random: stored raw
    # a second damaged chunk in the same pack (another file) is reported too; a.bin still verifies
    other = _flip_chunk_of(isolated, "big@v1", "z.bin")
    report = _verify("big", "--full", code=EXIT_DAMAGED)
    assert [(p["path"], p["chunk"]) for p in report["problems"]] == [("big.bin", chunk.id), ("z.bin", other.id)]


def test_read_batches_merge_near_chunks_of_one_pack_and_respect_the_limit():
    from dvx.api.integrity import _batches
    from dvx.chunks import ChunkRef
    from dvx.chunks.store import MERGE_GAP

    def ref(pack: str, offset: int, length: int) -> ChunkRef:
        return ChunkRef(f"{pack}{offset:031x}"[:32], pack, offset, length, length, 0)

    refs = [ref("a", 0, 100), ref("a", 100, 100), ref("a", 200 + MERGE_GAP + 1, 50), ref("b", 0, 10)]
    batches = [(pack, [(s.start, s.end, len(s.members)) for s in spans]) for pack, spans in _batches(refs, 1 << 30)]
    assert batches == [("a", [(0, 200, 2), (MERGE_GAP + 201, MERGE_GAP + 251, 1)]), ("b", [(0, 10, 1)])]
    small = [[(s.start, s.end) for s in spans] for _, spans in _batches(refs, 120)]
    assert small == [[(0, 100)], [(100, 200)], [(MERGE_GAP + 201, MERGE_GAP + 251)], [(0, 10)]]


# -- manifests and version records ------------------------------------------------------------------------

def test_a_damaged_or_missing_manifest_is_found_by_plain_verify(tmp_path: Path, ds, isolated):
    _commit(tmp_path, "other", {"o.txt": "o"})
    (manifest,) = (isolated["store"] / "manifests").rglob(
        f"{_verify('ds@v1')['versions'][0]['id']}.json.zst")
    _flip(manifest, len(manifest.read_bytes()) // 2)
    report = _verify("ds@v1", "other@v1", code=EXIT_DAMAGED)
    (problem,) = report["problems"]
    assert problem["path"] is None and problem["version"] == "ds@v1"
    assert re.match(r"^manifest [0-9a-f]{12}… is damaged", problem["what"]), problem["what"]
    assert _version(report, "other@v1")["ok"]
    out = run_dvx("verify", "ds@v1", check=False).stdout.splitlines()
    assert out[0].startswith("DAMAGED  ds@v1") and re.match(r"^    manifest [0-9a-f]{12}… is damaged", out[1])

    manifest.unlink()
    (problem,) = _verify("ds@v1", "--full", code=EXIT_DAMAGED)["problems"]
    assert problem["path"] is None and re.match(r"^manifest [0-9a-f]{12}… is missing$", problem["what"])


# -- sampling -------------------------------------------------------------------------------------------

def test_sample_with_a_seed_is_reproducible(tmp_path: Path, isolated):
    """The same seed checks the same chunks; the seed used is reported, so a run without one can be
    repeated exactly; the share is rounded up."""
    _commit(tmp_path, "many", {f"f{i:02}.bin": _bytes(100 + i, 2_000) for i in range(20)})
    first = _verify("many", "--sample", "50", "--seed", "7")
    again = _verify("many", "--sample", "50", "--seed", "7")
    other = _verify("many", "--sample", "50", "--seed", "8")
    assert first["seed"] == 7 and first["sample_percent"] == 50
    (a,), (b,), (c,) = first["versions"], again["versions"], other["versions"]
    assert a["chunks"] == 10 and a["chunks_total"] == 20
    assert a["sample_digest"] == b["sample_digest"] != c["sample_digest"]
    unseeded = _verify("many", "--sample", "50")
    replay = _verify("many", "--sample", "50", "--seed", str(unseeded["seed"]))
    assert unseeded["versions"][0]["sample_digest"] == replay["versions"][0]["sample_digest"]
    assert _verify("many", "--sample", "1")["versions"][0]["chunks"] == 1  # at least one chunk
    assert _verify("many", "--sample", "12.5")["versions"][0]["chunks"] == 3
    out = run_dvx("verify", "many", "--sample", "50", "--seed", "7").stdout
    assert out.strip() == "ok       many@v1  (20 files, 10 of 20 chunks checked, seed 7)"


# -- pins -----------------------------------------------------------------------------------------------

def test_without_ref_in_a_project_the_pins_are_verified(tmp_path: Path, two: dict, isolated):
    run_dvx("model", "register", "m", str(write_tree(tmp_path / "ckpt", {"w.bin": _bytes(5, 9_000)})))
    _assert_one_error_line(run_dvx("verify", check=False), EXIT_USAGE, "dvx pin")  # no project
    run_dvx("init")
    _assert_one_error_line(run_dvx("verify", check=False), EXIT_USAGE, "pinned")  # nothing pinned
    run_dvx("pin", "one@v1")
    run_dvx("pin", "m@v1", "--model")
    report = _verify()
    assert [(v["kind"], v["version"]) for v in report["versions"]] == [("dataset", "one@v1"), ("model", "m@v1")]
    assert report["ok"] and all(v["ok"] for v in report["versions"])
    assert [v["version"] for v in _verify("--model")["versions"]] == ["m@v1"]
    assert "m@v1  [model]" in run_dvx("verify").stdout

    # a bare pinned NAME means the pinned version, NAME@latest the latest
    run_dvx("dataset", "create", "one")
    run_dvx("dataset", "add", str(write_tree(tmp_path / "more", {"n.txt": "n"})))
    run_dvx("dataset", "commit", "-m", "v2")
    assert [v["version"] for v in _verify("one")["versions"]] == ["one@v1"]
    assert [v["version"] for v in _verify("one@latest")["versions"]] == ["one@v2"]

    _pack_file(isolated, two["pack_one"]).unlink()
    report = _verify(code=EXIT_DAMAGED)
    assert not _version(report, "one@v1")["ok"] and _version(report, "m@v1")["ok"]
    assert len(_problems(report, "one@v1")) == 4
    # a pin whose version is not in the store (another store's, or deleted) is a version-level problem
    toml = isolated["work"] / "dvx.toml"
    pinned_id = _version(report, "m@v1")["id"]
    toml.write_text(toml.read_text().replace(pinned_id, "0" * 32))
    report = _verify("--model", code=EXIT_DAMAGED)
    (problem,) = report["problems"]
    assert (problem["version"], problem["path"]) == ("m@v1", None) and "not in this store" in problem["what"]
    assert report["versions"][0]["id"] is None


# -- models -----------------------------------------------------------------------------------------------

def test_a_model_version(tmp_path: Path, isolated):
    ckpt = write_tree(tmp_path / "ckpt", {"weights.bin": _bytes(7, 50_000), "config.json": '{"layers": 3}'})
    run_dvx("model", "register", "m", str(ckpt))
    report = _verify("--model", "m@v1", "--full")
    assert report["ok"] and report["versions"][0]["kind"] == "model" and report["versions"][0]["files"] == 2
    assert _verify("m@v1")["versions"][0]["kind"] == "model"  # no dataset named m: the model
    entry = next(f for f in _manifest(isolated, "m@v1", "model").files if f.path.endswith("weights.bin"))
    chunk = entry.chunks[0]
    _flip(_pack_file(isolated, chunk.pack), chunk.offset + 3)
    assert _verify("--model", "m@v1")["ok"]
    (problem,) = _verify("--model", "m@v1", "--full", code=EXIT_DAMAGED)["problems"]
    assert (problem["kind"], problem["version"], problem["path"]) == ("model", "m@v1", entry.path)


# -- usage --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["ds", "--full", "--sample", "5"], "--full"),
    (["ds", "--sample", "0"], "--sample"),
    (["ds", "--sample", "100.5"], "--sample"),
    (["ds", "--sample", "nan"], "--sample"),
    (["ds", "--sample", "lots"], "lots"),
    (["ds", "--seed", "3"], "--seed"),
    (["no such name"], "no such name"),
])
def test_usage_errors_exit_2(ds, args: list[str], needle: str):
    _assert_one_error_line(run_dvx("verify", *args, check=False), EXIT_USAGE, needle)


@pytest.mark.parametrize("ref", ["nosuch", "ds@v9", "ds@notatag"])
def test_unknown_refs_exit_3_before_anything_is_checked(ds, ref: str):
    _assert_one_error_line(run_dvx("verify", "ds@v1", ref, check=False), EXIT_NOT_FOUND, ref.partition("@")[2] or ref)
    _assert_one_error_line(run_dvx("verify", "--model", "ds@v1", check=False), EXIT_NOT_FOUND)


# -- the API: full mode streams a file over several windows ---------------------------------------------------

def test_full_mode_streams_files_over_small_windows(tmp_path: Path, isolated, monkeypatch: pytest.MonkeyPatch):
    """With a window smaller than one file, a file's digest is computed over several windows and damage
    in one of its later chunks is still pinned to that chunk."""
    import importlib

    from dvx.api.repo import Repo
    from dvx.api.integrity import _windows, verify

    # (the module by its import name: the attribute dvx.api.integrity is the porcelain function)
    monkeypatch.setattr(importlib.import_module("dvx.api.integrity"), "WINDOW_BYTES", 50_000)
    _commit(tmp_path, "w", {"big.bin": _bytes(1, 400_000), "e.txt": b"", "s.txt": "small"})
    files = _manifest(isolated, "w@v1").files
    windows = list(_windows([f for f in files if f.link is None], 50_000))
    assert len(windows) > 2
    for window in windows:
        sizes = [f.chunks[i].size for _, f, a, b in window for i in range(a, b)]
        assert sum(sizes) <= 50_000 or len(sizes) == 1
    big = next(f for f in files if f.path == "big.bin")
    covered = [(a, b) for w in windows for _, f, a, b in w if f.path == "big.bin"]
    assert covered[0][0] == 0 and covered[-1][1] == len(big.chunks)
    assert all(x[1] == y[0] for x, y in itertools.pairwise(covered))

    repo = Repo(store=str(isolated["store"]))
    try:
        report = verify(repo, ["w@v1"], mode="full")
        assert report.ok and report.versions[0].chunks == len(big.chunks) + 1
    finally:
        repo.close()
    last = big.chunks[-1]
    _flip(_pack_file(isolated, last.pack), last.offset)
    repo = Repo(store=str(isolated["store"]))
    try:
        report = verify(repo, ["w@v1"], mode="full")
        assert [(p.path, p.chunk) for p in report.problems] == [("big.bin", last.id)]
        assert report.to_dict()["problems"][0]["chunk"] == last.id
    finally:
        repo.close()


def test_a_failed_range_request_is_reported_for_its_chunks_and_the_run_goes_on(tmp_path: Path, isolated,
                                                                             monkeypatch: pytest.MonkeyPatch):
    """A store error while reading one pack (the pack passed the presence check) marks that pack's chunks
    as unreadable, per file; the other pack's files still verify."""
    from dvx.api.repo import Repo
    from dvx.api.integrity import verify
    from dvx.chunks.pack import pack_key
    from dvx.errors import StoreError

    _commit(tmp_path, "one", {f"f{i}.bin": _bytes(10 + i, 20_000) for i in range(2)})
    _commit(tmp_path, "two", {"x.bin": _bytes(20, 20_000)})
    (bad,) = {r.pack for f in _manifest(isolated, "one@v1").files for r in f.chunks}
    repo = Repo(store=str(isolated["store"]))
    original = repo.store.read_ranges

    def flaky(key: str, ranges):
        if key == pack_key(bad):
            raise StoreError("connection reset")
        return original(key, ranges)

    monkeypatch.setattr(repo.store, "read_ranges", flaky)
    try:
        report = verify(repo, ["one@v1", "two@v1"], mode="full")
    finally:
        repo.close()
    assert not report.ok
    assert sorted({p.path for p in report.problems}) == ["f0.bin", "f1.bin"]
    assert all("could not be read" in p.what and "connection reset" in p.what for p in report.problems)
    assert report.versions[1].ok and report.versions[1].chunks > 0
