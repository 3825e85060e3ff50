"""Manifests: file trees round trip through add/commit/get, the encoding is canonical and versioned,
decoding checks ids, format versions and paths, symlinks stay inside, diffs classify changes."""

from __future__ import annotations

import json
import os
import random
import stat
import tempfile
import uuid
from pathlib import Path

import msgspec
import pytest
import xxhash
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dvx
from dvx.api.reading import LIST_LIMIT_MAX, list_folder
from dvx.api.repo import Repo
from dvx.chunks import ChunkRef
from dvx.errors import DvxError, IntegrityError, NotFoundError, UsageError
from dvx.manifests import (
    EMPTY_DIGEST,
    FileEntry,
    Manifest,
    compress_manifest,
    decode_manifest,
    diff_files,
    encode_manifest,
    folders_of,
    paged,
    summarise,
    validate_path,
)
from dvx.manifests.model import validate_link
from dvx.manifests.paged import (
    FOLDER_SUMMARY_MAX,
    decode_root,
    encode_paged,
    summarise_folders,
)

HYPO = settings(max_examples=50, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Letters (ASCII and not), digits and a few punctuation marks that are legal in file names.
NAME_ALPHABET = "abcXYZ019_-. éÉßøΩжЖあ中ğ€"
names = st.text(NAME_ALPHABET, min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..", ".dvx", ".git") and len(n.encode()) < 200)

file_leaf = st.tuples(st.binary(max_size=3000), st.booleans())  # (content, executable)
trees = st.recursive(
    st.dictionaries(names, file_leaf, min_size=1, max_size=4),
    lambda children: st.dictionaries(names, st.one_of(file_leaf, children), min_size=1, max_size=4),
    max_leaves=15,
)


def flatten(tree: dict, prefix: str = "") -> dict[str, tuple[bytes, bool]]:
    out = {}
    for name, value in tree.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "/"))
        else:
            out[path] = value
    return out


def materialise(root: Path, files: dict[str, tuple[bytes, bool]]) -> None:
    for rel, (content, executable) in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(0o755 if executable else 0o644)


def snapshot(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Regular files under root: relative path → (bytes, owner-executable)."""
    out = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            full = Path(folder) / name
            rel = full.relative_to(root).as_posix()
            out[rel] = (full.read_bytes(), bool(full.stat().st_mode & stat.S_IXUSR))
    return out


# -- round trips through the real API -----------------------------------------------------------------------

@HYPO
@given(tree=trees)
def test_any_tree_round_trips_through_add_commit_get(tmp_path: Path, tree: dict):
    """Unicode names, nested folders, empty files and executable bits survive add → commit → get, both
    as a writable copy and as the read-only cached copy."""
    files = flatten(tree)
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        source, dest = Path(tmp) / "src", Path(tmp) / "dest"
        materialise(source, files)
        name = f"t{uuid.uuid4().hex[:12]}"
        ds = dvx.Dataset.create(name)
        ds.add(source)
        result = ds.commit("round trip")
        assert result.created and result.version.files == len(files)
        assert sorted(f.path for f in dvx.files(result.version.ref)) == sorted(files)
        assert snapshot(dvx.get(result.version.ref, dest)) == files
        cached = dvx.get(result.version.ref)
        assert snapshot(cached) == files


def synthetic_entry(path: str, rng: random.Random, link: str | None = None) -> FileEntry:
    if link is not None:
        return FileEntry(path=path, link=link)
    chunks = [ChunkRef(rng.randbytes(16).hex(), rng.randbytes(16).hex(), rng.randrange(1 << 40),
                       rng.randrange(1, 1 << 20), rng.randrange(1, 1 << 20), rng.choice([0, 1]))
              for _ in range(rng.randrange(0, 4))]
    return FileEntry(path=path, size=sum(c.size for c in chunks), digest=rng.randbytes(16).hex(),
                     executable=rng.random() < 0.3, chunks=chunks)


def synthetic_manifest(paths: list[str], seed: int, links: bool = True) -> Manifest:
    rng = random.Random(seed)
    entries = []
    for path in paths:
        if links and rng.random() < 0.15:
            entries.append(synthetic_entry(path, rng, link=path.rsplit("/", 1)[-1] + ".target"))
        else:
            entries.append(synthetic_entry(path, rng))
    return Manifest(kind="dataset", name="a/b", parents=[rng.randbytes(16).hex()], created="2026-01-02T03:04:05+00:00",
                    author="tester@host", message="msg ✓", metadata={"k": [1, "two", None]}, files=entries)


@settings(max_examples=50, deadline=None)
@given(tree=trees, seed=st.integers(0, 2**32))
def test_encode_decode_round_trip(tree: dict, seed: int):
    """encode → compress → decode gives back the same manifest (files in path order)."""
    manifest = synthetic_manifest(list(flatten(tree)), seed)
    manifest_id, data = encode_manifest(manifest)
    assert manifest_id == xxhash.xxh3_128_hexdigest(data)
    decoded = decode_manifest(compress_manifest(data), manifest_id)
    expected = sorted(manifest.files, key=lambda f: f.path)
    assert [msgspec.to_builtins(f) for f in decoded.files] == [msgspec.to_builtins(f) for f in expected]
    for field in ("kind", "name", "parents", "created", "author", "message", "metadata"):
        assert getattr(decoded, field) == getattr(manifest, field)


@settings(max_examples=50, deadline=None)
@given(tree=trees, seed=st.integers(0, 2**32), shuffle_seed=st.integers(0, 2**32))
def test_encoding_is_canonical(tree: dict, seed: int, shuffle_seed: int):
    """The same version in any file order encodes to the same bytes and id; files are stored sorted by
    path and the document carries format_version."""
    manifest = synthetic_manifest(list(flatten(tree)), seed)
    shuffled = msgspec.structs.replace(manifest, files=random.Random(shuffle_seed).sample(manifest.files,
                                                                                          len(manifest.files)))
    id_a, data_a = encode_manifest(manifest)
    id_b, data_b = encode_manifest(shuffled)
    assert (id_a, data_a) == (id_b, data_b)
    doc = json.loads(data_a)
    assert doc["format_version"] == 2
    assert [f["path"] for f in doc["files"]] == sorted(f.path for f in manifest.files)
    assert data_a == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_different_content_gives_a_different_id():
    """Changing any recorded field (here one digest, or the message) changes the manifest id."""
    manifest = synthetic_manifest(["a", "b/c"], 1, links=False)
    base_id, _ = encode_manifest(manifest)
    changed = msgspec.structs.replace(manifest, message="other")
    assert encode_manifest(changed)[0] != base_id
    files = [msgspec.structs.replace(f) for f in manifest.files]
    files[0].digest = "0" * 32
    assert encode_manifest(msgspec.structs.replace(manifest, files=files))[0] != base_id


# -- decode refuses bad documents -----------------------------------------------------------------------

def _stored(doc: dict) -> tuple[str, bytes]:
    """A hand-made document stored the way dvx stores manifests, with a matching id."""
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return xxhash.xxh3_128_hexdigest(data), compress_manifest(data)


def _valid_doc() -> dict:
    _, data = encode_manifest(synthetic_manifest(["x/y.txt", "z.bin"], 3, links=False))
    return json.loads(data)


def test_hand_made_valid_document_decodes():
    """Sanity check of the helpers below: an untouched document re-stored by hand decodes."""
    manifest_id, stored = _stored(_valid_doc())
    assert [f.path for f in decode_manifest(stored, manifest_id).files] == ["x/y.txt", "z.bin"]


@pytest.mark.parametrize("version", [0, 3, 99])
def test_other_format_versions_are_refused(version: int):
    """A manifest with an unknown format_version is refused (IntegrityError) even with a matching id."""
    doc = _valid_doc()
    doc["format_version"] = version
    manifest_id, stored = _stored(doc)
    with pytest.raises(IntegrityError, match="format_version"):
        decode_manifest(stored, manifest_id)


def _as_format_1(doc: dict) -> dict:
    """The same version written the way format 1 stored chunks: one [id, pack, offset, stored, raw, codec] row each."""
    ends: dict[int, int] = {}
    for entry in doc["files"]:
        columns = entry.pop("chunks", None)
        if columns is None:
            continue
        rows = []
        for i, pack in enumerate(columns["packs"]):
            offset = ends.get(pack, 0) + columns["offsets"][i]
            ends[pack] = offset + columns["lengths"][i]
            rows.append([columns["ids"][32 * i:32 * i + 32], pack, offset, columns["lengths"][i],
                         columns["sizes"][i], columns["codecs"][i]])
        entry["chunks"] = rows
    doc["format_version"] = 1
    return doc


def test_format_1_manifests_still_decode():
    """Manifests written by dvx before format 2 (chunk rows instead of columns) read back the same."""
    manifest = synthetic_manifest(["x/y.txt", "z.bin", "z2.bin"], 3, links=False)
    manifest_id, data = encode_manifest(manifest)
    current = decode_manifest(compress_manifest(data), manifest_id)
    old_id, old_stored = _stored(_as_format_1(json.loads(data)))
    old = decode_manifest(old_stored, old_id)
    assert [msgspec.to_builtins(f) for f in old.files] == [msgspec.to_builtins(f) for f in current.files]


def test_chunks_written_back_to_back_cost_a_zero_offset():
    """Offsets are stored as deltas from the previous chunk's end in the same pack, across files."""
    pack = "ab" * 16
    files = [FileEntry(path=f"f{i}", size=10, digest=f"{i:032x}",
                       chunks=[ChunkRef(f"{i:032x}", pack, 100 + 4 * i, 4, 10, 1)]) for i in range(3)]
    manifest = synthetic_manifest(["unused"], 1, links=False)
    manifest = msgspec.structs.replace(manifest, files=files)
    manifest_id, data = encode_manifest(manifest)
    assert [f["chunks"]["offsets"] for f in json.loads(data)["files"]] == [[100], [0], [0]]
    decoded = decode_manifest(compress_manifest(data), manifest_id)
    assert [f.chunks[0].offset for f in decoded.files] == [100, 104, 108]


@pytest.mark.parametrize("damage", ["short_ids", "short_column", "bad_pack", "negative_offset"])
def test_malformed_chunk_columns_are_refused(damage: str):
    """Columns of different lengths, unknown packs or offsets before the pack start are IntegrityErrors."""
    doc = _valid_doc()
    columns = next(f["chunks"] for f in doc["files"] if f.get("chunks"))
    if damage == "short_ids":
        columns["ids"] = columns["ids"][:-1]
    elif damage == "short_column":
        columns["sizes"].pop()
    elif damage == "bad_pack":
        columns["packs"][0] = len(doc["packs"])
    else:
        columns["offsets"][0] = -1 - 10**12
    manifest_id, stored = _stored(doc)
    with pytest.raises(IntegrityError):
        decode_manifest(stored, manifest_id)


def test_damaged_bytes_are_refused():
    """A flipped byte in the document (or bytes that are not zstd) fails the id check: IntegrityError."""
    manifest_id, data = encode_manifest(synthetic_manifest(["a", "b"], 4, links=False))
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    with pytest.raises(IntegrityError):
        decode_manifest(compress_manifest(bytes(damaged)), manifest_id)
    with pytest.raises(IntegrityError):
        decode_manifest(b"not a zstd frame", manifest_id)
    with pytest.raises(IntegrityError):
        decode_manifest(compress_manifest(data)[:-3], manifest_id)


@pytest.mark.parametrize("bad_path", ["../escape", "a/../../b", "/etc/passwd", "a\x00b", "a//b", "./a", "a/.",
                                      ""], ids=repr)
def test_unsafe_paths_in_a_stored_manifest_are_refused(bad_path: str):
    """Paths are checked on read: '..', absolute, NUL, empty or '.' parts never reach a checkout."""
    doc = _valid_doc()
    doc["files"][0]["path"] = bad_path
    manifest_id, stored = _stored(doc)
    with pytest.raises((UsageError, IntegrityError)):
        decode_manifest(stored, manifest_id)


def test_escaping_links_in_a_stored_manifest_are_refused():
    """A stored symlink whose target leaves the dataset is refused on read."""
    doc = _valid_doc()
    doc["files"][0]["link"] = "../../outside"
    manifest_id, stored = _stored(doc)
    with pytest.raises((UsageError, IntegrityError)):
        decode_manifest(stored, manifest_id)


def test_duplicate_paths_and_files_under_files_are_refused():
    """A path listed twice, or a path below another file, is not a valid tree."""
    doc = _valid_doc()
    doc["files"][1]["path"] = doc["files"][0]["path"]
    manifest_id, stored = _stored(doc)
    with pytest.raises(DvxError):
        decode_manifest(stored, manifest_id)
    doc = _valid_doc()
    doc["files"][1]["path"] = "x/y.txt/inner"
    manifest_id, stored = _stored(doc)
    with pytest.raises(DvxError):
        decode_manifest(stored, manifest_id)


def test_encode_refuses_unsafe_paths():
    """Paths are checked on write too: a manifest with '..' cannot be encoded."""
    manifest = synthetic_manifest(["ok"], 5, links=False)
    manifest.files[0].path = "../x"
    with pytest.raises(UsageError):
        encode_manifest(manifest)


@pytest.mark.parametrize("path", ["a", "a/b/c", "é/ж/中.txt", "a b/.hidden", "..a", "a.."])
def test_validate_path_accepts_normal_relative_paths(path: str):
    """Ordinary relative paths (Unicode, dots inside names) are accepted unchanged."""
    assert validate_path(path) == path


# -- symlinks ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, target", [("l", "x"), ("a/l", "../x"), ("a/b/l", "../../x"), ("a/l", "./b/../c"),
                                          ("a/l", "b/c")])
def test_links_inside_the_dataset_are_kept(path: str, target: str):
    """Relative targets that resolve inside the dataset are valid."""
    assert validate_link(path, target) == target


@pytest.mark.parametrize("path, target", [("l", "../x"), ("a/l", "../../x"), ("a/l", "/etc/passwd"),
                                          ("a/l", "b/../../../x"), ("l", ".."), ("a/b/l", "../../../x")])
def test_links_escaping_the_dataset_are_refused(path: str, target: str):
    """Absolute targets and targets climbing above the dataset root raise UsageError."""
    with pytest.raises(UsageError):
        validate_link(path, target)


# -- diff ---------------------------------------------------------------------------------------------

def entry(path: str, content: bytes = b"", executable: bool = False, link: str | None = None) -> FileEntry:
    if link is not None:
        return FileEntry(path=path, link=link)
    return FileEntry(path=path, size=len(content), digest=xxhash.xxh3_128_hexdigest(content), executable=executable)


def as_map(*entries: FileEntry) -> dict[str, FileEntry]:
    return {e.path: e for e in entries}


def test_diff_classifies_added_removed_modified_renamed():
    """diff_files reports each kind of change once, with old paths for renames and sizes."""
    old = as_map(entry("same", b"s"), entry("gone", b"g"), entry("changed", b"v1"), entry("old/name", b"moved"),
                 entry("mode", b"m"))
    new = as_map(entry("same", b"s"), entry("fresh", b"f!"), entry("changed", b"v2-longer"),
                 entry("new/name", b"moved"), entry("mode", b"m", executable=True))
    changes = {(c.kind, c.path, c.old_path) for c in diff_files(old, new)}
    assert changes == {("removed", "gone", None), ("added", "fresh", None), ("modified", "changed", None),
                       ("renamed", "new/name", "old/name"), ("modified", "mode", None)}
    counts = summarise(diff_files(old, new))
    assert (counts["added"], counts["removed"], counts["modified"], counts["renamed"]) == (1, 1, 2, 1)
    assert counts["bytes_added"] == 2 and counts["bytes_removed"] == 1


def test_diff_of_identical_maps_is_empty_and_empty_files_are_not_renames():
    """No change → empty diff; an empty file disappearing while another appears is removed + added,
    since all empty files share one digest."""
    files = as_map(entry("a", b"1"), entry("b", b""))
    assert diff_files(files, dict(files)) == []
    changes = {(c.kind, c.path) for c in diff_files(as_map(entry("e1")), as_map(entry("e2")))}
    assert changes == {("removed", "e1"), ("added", "e2")}
    assert entry("e1").digest == EMPTY_DIGEST


def test_diff_sees_link_target_changes():
    """A symlink retargeted is a modification; a file turned into a link too."""
    changes = diff_files(as_map(entry("l", link="a"), entry("f", b"x")),
                         as_map(entry("l", link="b"), entry("f", link="a")))
    assert {(c.kind, c.path) for c in changes} == {("modified", "l"), ("modified", "f")}


contents = st.sampled_from([b"", b"a", b"b", b"cc", b"ddd"])
file_maps = st.dictionaries(st.sampled_from(["p", "q", "r", "s/t", "s/u", "v"]), contents, max_size=6)


@settings(max_examples=50, deadline=None)
@given(old=file_maps, new=file_maps)
def test_diff_accounts_for_every_path(old: dict, new: dict):
    """Every path only in new is added or a rename target; every path only in old is removed or a rename
    source (used once); common paths are modified exactly when their content differs."""
    old_map = as_map(*(entry(p, c) for p, c in old.items()))
    new_map = as_map(*(entry(p, c) for p, c in new.items()))
    changes = diff_files(old_map, new_map)
    added = {c.path for c in changes if c.kind == "added"}
    removed = {c.path for c in changes if c.kind == "removed"}
    modified = {c.path for c in changes if c.kind == "modified"}
    renamed = {c.path: c.old_path for c in changes if c.kind == "renamed"}
    assert added | set(renamed) == set(new) - set(old)
    assert not added & set(renamed)
    assert removed | set(renamed.values()) == set(old) - set(new)
    assert len(set(renamed.values())) == len(renamed) and not removed & set(renamed.values())
    assert modified == {p for p in set(old) & set(new) if old[p] != new[p]}
    for target, source in renamed.items():
        assert old[source] == new[target] != b""
    assert len(changes) == len(added) + len(removed) + len(modified) + len(renamed)


def test_stored_manifest_is_zstd_of_the_canonical_json():
    """On the store a manifest is one zstd frame of its canonical JSON, so any zstd tool can read it."""
    _, data = encode_manifest(synthetic_manifest(["a"], 6, links=False))
    assert zstandard.ZstdDecompressor().decompress(compress_manifest(data), max_output_size=len(data)) == data


def test_stat_cache_skips_files_still_within_their_timestamp_tick(tmp_path):
    """Racy-file rule: a file whose mtime lies within one timestamp tick of the scan is not cached
    (a second write in that tick would go unnoticed). The tick is 2 s for whole-second timestamps and
    50 ms for sub-second ones; files older than that are cached."""
    from dvx.manifests import CachedContent, ScannedFile, StatCache

    cache = StatCache(tmp_path / "stat.sqlite", "store-1")
    scan_time = 1_700_000_000.0
    ns = int(scan_time * 1e9)

    def scanned(name: str, mtime_ns: int) -> ScannedFile:
        return ScannedFile(name, str(tmp_path / name), 3, mtime_ns, mtime_ns, 1, False)

    files = {
        "fine_fresh": scanned("fine_fresh", ns - 10_000_000 + 123),          # 10 ms before: racy
        "fine_settled": scanned("fine_settled", ns - 200_000_000 + 123),     # 200 ms before: safe
        "coarse_fresh": scanned("coarse_fresh", ns - 1_000_000_000),         # 1 s, whole seconds: racy
        "coarse_settled": scanned("coarse_settled", ns - 3_000_000_000),     # 3 s, whole seconds: safe
    }
    content = CachedContent(3, "0" * 32, [])
    cache.record([(f, content) for f in files.values()], since=scan_time)
    hits = cache.lookup(list(files.values()))
    assert {files[n].local for n in ("fine_settled", "coarse_settled")} == set(hits)
    cache.close()


# -- format 3 roots: the folder summary, and folder listings ---------------------------------------------

def _summary_by_brute_force(files: list[FileEntry]) -> list[dict]:
    """Every folder holding a file at any depth, with the files and bytes under it, counted file by file."""
    out = []
    for folder in sorted(folders_of(f.path for f in files)):
        under = [f for f in files if f.path.startswith(folder + "/")]
        out.append({"path": folder, "files": len(under), "bytes": sum(f.size for f in under)})
    return out


@settings(max_examples=50, deadline=None)
@given(tree=trees, seed=st.integers(0, 2**32))
def test_the_root_summarises_every_folder(tree: dict, seed: int):
    """A format 3 root lists every folder with the files and bytes under it at any depth, in path order,
    and reads back as ManifestRoot.folders."""
    manifest = synthetic_manifest(list(flatten(tree)), seed)
    encoded = encode_paged(manifest)
    expected = _summary_by_brute_force(manifest.files)
    assert json.loads(encoded.data)["folders"] == expected
    root = decode_root(compress_manifest(encoded.data), encoded.id)
    assert [msgspec.to_builtins(f) for f in root.folders] == expected


def test_the_summary_is_left_out_past_its_cap():
    """Up to FOLDER_SUMMARY_MAX folders are listed (ancestors count too); past it the field is absent and
    the root reads back with folders None, as roots written before the summary existed do."""
    at_cap = [FileEntry(path=f"d{i:05d}/f") for i in range(FOLDER_SUMMARY_MAX)]
    assert len(summarise_folders(at_cap)) == FOLDER_SUMMARY_MAX
    assert summarise_folders([*at_cap, FileEntry(path="e/f")]) is None
    assert summarise_folders([FileEntry(path="d00000/deeper/f"), *at_cap[1:]]) is None  # an ancestor more
    manifest = msgspec.structs.replace(synthetic_manifest(["x"], 1, links=False),
                                       files=[*at_cap, FileEntry(path="e/f")])
    encoded = encode_paged(manifest)
    assert "folders" not in json.loads(encoded.data)
    assert decode_root(compress_manifest(encoded.data), encoded.id).folders is None


def _root_doc() -> dict:
    """A format 3 root whose folders are a (3 files), a/b (1) and e (1), with g.txt at the top."""
    manifest = synthetic_manifest(["a/b/c.txt", "a/d.txt", "a/d2.txt", "e/f.txt", "g.txt"], 7, links=False)
    return json.loads(encode_paged(manifest).data)


def test_roots_without_a_summary_still_decode():
    """Format 3 roots written before the summary existed have no `folders` field: no summary, no error."""
    doc = _root_doc()
    assert [f["path"] for f in doc["folders"]] == ["a", "a/b", "e"]
    del doc["folders"]
    manifest_id, stored = _stored(doc)
    root = decode_root(stored, manifest_id)
    assert root.folders is None and root.file_count == 5


def _set(index: int, field: str, value):
    def damage(folders: list) -> None:
        folders[index][field] = value
    return damage


_HOSTILE_SUMMARIES = {
    "out of order": (lambda folders: folders.reverse(), "out of path order"),
    "listed twice": (lambda folders: folders.insert(1, dict(folders[0])), "out of path order"),
    "empty folder": (_set(1, "files", 0), "empty folder"),
    "negative bytes": (_set(2, "bytes", -1), "negative folder size"),
    "more files than the version": (_set(2, "files", 10**6), "more files or bytes than the version"),
    "more bytes than the version": (_set(0, "bytes", 10**15), "more files or bytes than the version"),
    "missing parent": (lambda folders: folders.pop(0), "without its parent folder"),
    "child larger than parent": (_set(1, "files", 4), "fewer files or bytes than the folders inside"),
    "not a list": (lambda folders: folders.clear() or folders.append("a"), "unreadable"),
    "missing field": (lambda folders: folders[0].pop("bytes"), "unreadable"),
}
_BAD_FOLDER_PATHS = ["../a", "a/..", "/a", "a/", "", "a//b", "a\\b", "C:x", "a/./b", "a\x00b"]


@pytest.mark.parametrize("case", [*_HOSTILE_SUMMARIES, *(f"path {p!r}" for p in _BAD_FOLDER_PATHS)])
def test_a_hostile_folder_summary_is_refused(case: str):
    """A root whose folder summary is out of order, holds an invalid path, an empty or negative folder,
    counts that do not add up, or a folder without its parent is refused with IntegrityError."""
    doc = _root_doc()
    if case.startswith("path "):
        bad = _BAD_FOLDER_PATHS[[f"path {p!r}" for p in _BAD_FOLDER_PATHS].index(case)]
        doc["folders"] = [{"path": bad, "files": 1, "bytes": 0}]
        message = "invalid folder"
    else:
        damage, message = _HOSTILE_SUMMARIES[case]
        damage(doc["folders"])
    manifest_id, stored = _stored(doc)
    with pytest.raises(IntegrityError, match=message):
        decode_root(stored, manifest_id)


def _listing_by_brute_force(sizes: dict[str, int], folder: str) -> list[tuple]:
    """(type, name, path, files, size) of the entries directly inside `folder`, from every file."""
    prefix = folder + "/" if folder else ""
    children: dict[str, list[int]] = {}
    direct = []
    for path in sorted(sizes):
        if not path.startswith(prefix):
            continue
        head, sep, _ = path[len(prefix):].partition("/")
        if sep:
            counts = children.setdefault(head, [0, 0])
            counts[0] += 1
            counts[1] += sizes[path]
        else:
            direct.append(path)
    return ([("folder", name, f"{prefix}{name}/", files, size) for name, (files, size) in sorted(children.items())]
            + [("file", path[len(prefix):], path, None, sizes[path]) for path in direct])


def _listed(entries: list[dict]) -> list[tuple]:
    return [(e["type"], e["name"], e["path"], e.get("files"), e["size"]) for e in entries]


@HYPO
@given(tree=trees, windows=st.lists(st.tuples(st.integers(0, 20), st.integers(1, 8)), min_size=1, max_size=4))
def test_folder_listings_match_a_listing_of_every_file(tmp_path: Path, monkeypatch, tree: dict, windows: list):
    """list_folder, with the root's folder summary and without one (a root as written before it
    existed), lists every folder as a listing made from every file does, in any window; ls gives the
    same rows either way. Pages hold ~2 files here, so windows and folders span pages."""
    monkeypatch.setattr(paged, "PAGE_SPLIT", 2)
    files = flatten(tree)
    sizes = {path: len(content) for path, (content, _) in files.items()}
    refs = {}
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        materialise(Path(tmp), files)
        for summarised in (True, False):
            ds = dvx.Dataset.create(f"t{uuid.uuid4().hex[:12]}")
            ds.add(tmp)
            with monkeypatch.context() as patched:
                if not summarised:
                    patched.setattr(paged, "summarise_folders", lambda files: None)
                refs[summarised] = ds.commit("listing").version
    repo = Repo()
    for summarised, version in refs.items():
        assert (repo.manifest_root(version.id).folders is not None) == summarised
    folders = ["", *sorted(folders_of(files))]
    for folder in folders:
        expected = _listing_by_brute_force(sizes, folder)
        for summarised, version in refs.items():
            whole = list_folder(Repo(), version.ref, folder, limit=LIST_LIMIT_MAX)
            assert _listed(whole["entries"]) == expected
            assert whole["total"] == len(expected) == whole["folders"] + whole["files"]
            assert whole["folders"] == sum(1 for e in expected if e[0] == "folder")
            for offset, limit in windows:
                window = list_folder(Repo(), version.ref, folder, offset=offset, limit=limit)
                assert window["entries"] == whole["entries"][offset:offset + limit]
                assert (window["offset"], window["limit"], window["total"]) == (offset, limit, whole["total"])
        assert dvx.ls(refs[True].ref, folder) == dvx.ls(refs[False].ref, folder)
    for path in sorted(files)[:3]:
        for version in refs.values():
            with pytest.raises(NotFoundError, match="is a file"):
                list_folder(Repo(), version.ref, path)
        assert dvx.ls(refs[True].ref, path) == dvx.ls(refs[False].ref, path)


def test_list_folder_refuses_bad_windows_and_missing_folders():
    """offset < 0 and limit outside 1..LIST_LIMIT_MAX are usage errors; a missing folder is NotFoundError
    naming the version and the path; "/" is the top."""
    source = Path("src")
    materialise(source, {"a/b.txt": (b"x", False), "c.txt": (b"yy", False)})
    ds = dvx.Dataset.create("w")
    ds.add(source)
    ref = ds.commit("w").version.ref
    for offset, limit in ((-1, 10), (0, 0), (0, LIST_LIMIT_MAX + 1)):
        with pytest.raises(UsageError):
            list_folder(Repo(), ref, "", offset, limit)
    with pytest.raises(NotFoundError, match=r"w@v1 has no folder 'nope/deeper'"):
        list_folder(Repo(), ref, "nope/deeper")
    with pytest.raises(NotFoundError, match=r"w@v1: 'c.txt' is a file"):
        list_folder(Repo(), ref, "c.txt/")
    with pytest.raises(UsageError):
        list_folder(Repo(), ref, "../a")
    top = list_folder(Repo(), ref, "/")
    assert (top["folder"], top["total"], top["folders"], top["files"]) == ("", 2, 1, 1)
    assert [e["name"] for e in top["entries"]] == ["a", "c.txt"]
    assert top["entries"][0] == {"type": "folder", "name": "a", "path": "a/", "files": 1, "size": 1}
    assert list_folder(Repo(), ref, "/a/")["entries"][0]["path"] == "a/b.txt"
    assert list_folder(Repo(), ref, offset=5)["entries"] == []


def test_windows_over_a_folder_with_files_around_its_subfolders(monkeypatch):
    """Every window of a folder (and of the top) whose own files sort before, between and after its
    subfolders, with pages of ~2 files: the files found reading pages from the front and from the back
    are numbered right."""
    monkeypatch.setattr(paged, "PAGE_SPLIT", 2)
    files = {f"a/{name}": (b"x" * (i % 5), False) for i, name in enumerate(
        [*(f"0{i:02d}" for i in range(9)), *(f"m/{i:02d}" for i in range(12)), *(f"n{i:02d}" for i in range(5)),
         *(f"p/q/{i:02d}" for i in range(7)), *(f"z{i:02d}" for i in range(31))])}
    files.update({f"{name}": (b"y", False) for name in ("0.txt", "b.txt", "zz0", "zz1", "zz2")})
    files.update({f"m/{i}": (b"", False) for i in range(6)})
    sizes = {path: len(content) for path, (content, _) in files.items()}
    materialise(Path("src"), files)
    ds = dvx.Dataset.create("around")
    ds.add(Path("src"))
    ref = ds.commit("around").version.ref
    assert len(Repo().manifest_root(Repo().resolve(ref).manifest).pages) > 20
    for folder in ("a", ""):
        expected = _listing_by_brute_force(sizes, folder)
        for limit in (1, 4, 17, len(expected)):
            for offset in range(len(expected) + 1):
                listing = list_folder(Repo(), ref, folder, offset=offset, limit=limit)
                assert _listed(listing["entries"]) == expected[offset:offset + limit], (folder, offset, limit)


@settings(max_examples=60, deadline=None)
@given(folder_sizes=st.lists(st.integers(1, 700), min_size=1, max_size=12),
       file_size=st.sampled_from([0, 4096, 300_000]))
def test_checkout_tasks_cover_every_file_once_and_run_side_by_side_in_different_folders(
        folder_sizes: list[int], file_size: int):
    """Checkout's tasks: every file exactly once, each task within its file and byte bounds, and two
    tasks that run at the same time (neighbours in the list) are in different folders whenever more
    than one folder still has tasks left: one folder's creates are serialised by its lock."""
    import importlib

    co = importlib.import_module("dvx.manifests.checkout")  # the module (the package exports the function)

    files = [FileEntry(path=f"d{d:02d}/f{i:04d}", size=file_size, digest="0" * 32, chunks=[])
             for d, count in enumerate(folder_sizes) for i in range(count)]
    batches = co._batches(files)
    assert sorted(e.path for b in batches for e in b) == [f.path for f in files]
    for batch in batches:
        assert 1 <= len(batch) <= co._BATCH_FILES
        assert sum(e.size for e in batch) < co._BATCH_BYTES + file_size
    folder = [b[0].path.split("/")[0] for b in batches]
    for at in range(len(batches) - 1):
        if len(set(folder[at:])) > 1 and all(len(b) >= co._FOLDER_BATCH_FILES for b in batches[at:at + 2]):
            assert folder[at] != folder[at + 1], (at, folder)


def test_checkout_makes_every_folder_before_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Folders first, then files (as restic restores): on ext4 the new folders then spread over block
    groups; made one by one between their files, 20,000 small files restored 2-3x slower here."""
    src = tmp_path / "src"
    for folder in ("b", "a/x", "a/y", "c"):
        (src / folder).mkdir(parents=True)
        for i in range(3):
            (src / folder / f"f{i}.txt").write_text(f"{folder} {i}\n")
    (src / "top.txt").write_text("top\n")
    ds = dvx.Dataset.create("folders")
    ds.add(src)
    ds.commit("v1")
    events: list[str] = []
    real_open, real_mkdir = os.open, Path.mkdir

    def spy_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and str(path).startswith(str(tmp_path / "out")):
            events.append("file")
        return real_open(path, flags, *args, **kwargs)

    def spy_mkdir(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "out")):
            events.append("folder")
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(Path, "mkdir", spy_mkdir)
    dvx.get("folders@v1", tmp_path / "out")
    monkeypatch.undo()
    assert events.count("file") == 13
    assert "folder" not in events[events.index("file"):]
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.txt")) == sorted(
        p.relative_to(src).as_posix() for p in src.rglob("*.txt"))
