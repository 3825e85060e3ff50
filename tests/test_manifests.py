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
from dvx.chunks import ChunkRef
from dvx.errors import DvxError, IntegrityError, UsageError
from dvx.manifests import (
    EMPTY_DIGEST,
    FileEntry,
    Manifest,
    compress_manifest,
    decode_manifest,
    diff_files,
    encode_manifest,
    summarise,
    validate_path,
)
from dvx.manifests.model import validate_link

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
    manifest_id, data = encode_manifest(synthetic_manifest(["a"], 6, links=False))
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
