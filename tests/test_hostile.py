"""Hostile input is refused with a clear one-line error and nothing is written outside the target:
hand-crafted manifests (stored with a valid id and a version record, then `dvx get`), decompression
bombs, pack footers with out-of-range entries, invalid or over-long names and references, malformed
dvx.toml files. The manifest decoder, the pack footer parser and the chunk codec are fuzzed with
Hypothesis: they return something valid or raise IntegrityError/UsageError, never another exception,
never hang, and never allocate more than a bound (measured with tracemalloc).

docs/reliability.md states these guarantees."""

from __future__ import annotations

import copy
import json
import os
import resource
import struct
import subprocess
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
import xxhash
import zstandard
from conftest import dvx_executable, run_dvx, run_dvx_in_process, write_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dvx
from dvx.chunks import codec
from dvx.chunks.codec import MAX_CHUNK_SIZE
from dvx.chunks.pack import (
    TRAILER,
    TRAILER_MAGIC,
    decode_footer,
    encode_footer,
    footer_id,
    index_key,
    pack_key,
    split_pack,
)
from dvx.errors import IntegrityError, UsageError
from dvx.fs.local import LocalStore
from dvx.manifests import (
    EMPTY_DIGEST,
    FileEntry,
    Manifest,
    compress_manifest,
    decode_manifest,
    encode_manifest,
)
from dvx.manifests.paged import page_key
from dvx.manifests.model import (
    check_link_chains,
    manifest_key,
    validate_link,
    validate_path,
)
from dvx.refs import Refs, VersionRecord, check_name, check_tag, parse_ref

EXIT_USAGE, EXIT_NOT_FOUND, EXIT_INTEGRITY = 2, 3, 5
# A 32-character chunk "id" that is a path: <cache>/chunks/../<id> is <cache>/../victim-…, beside the
# cache folder (tmp_path/victim-… under the test fixtures).
VICTIM_ID = "../victim-" + "x" * 22
FUZZ = {"deadline": timedelta(seconds=5),
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                  HealthCheck.function_scoped_fixture]}
# Examples per fuzz test (docs/reliability.md reports their sum).
FUZZ_EXAMPLES = 300


cli = run_dvx_in_process


def one_error_line(proc, code: int, *fragments: str) -> str:
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}\n{proc.stderr}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dvx: error: "), proc.stderr
    assert len(lines[0]) < 400, f"error line too long ({len(lines[0])} characters)"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def tree_snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Every path under root (files, folders, links) with its size, except under the `skip` folders and
    the stat cache's SQLite files (which its own connection may checkpoint at any time)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root).as_posix()
        dirs[:] = [d for d in dirs if f"{rel_folder}/{d}".lstrip("./") not in skip]
        for name in dirs + files:
            if name.startswith("statcache.sqlite"):
                continue
            full = Path(folder) / name
            out[full.relative_to(root).as_posix()] = full.lstat().st_size
    return out


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def store_doc(store: Path, data: bytes) -> str:
    """Put a manifest document (JSON bytes) in the store under its valid id; returns the id."""
    manifest_id = xxhash.xxh3_128_hexdigest(data)
    target = store / manifest_key(manifest_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(compress_manifest(data))
    return manifest_id


def record_version(store: Path, name: str, manifest_id: str, files: int = 0) -> str:
    """A version record for `manifest_id`, written the way dvx writes one; returns its reference."""
    record = Refs(LocalStore(store)).allocate(VersionRecord(
        name=name, version=0, manifest=manifest_id, created="2026-01-01T00:00:00+00:00", author="mallory",
        message="hostile", files=files))
    return record.ref


def stored_doc(store: Path, ref: str) -> tuple[dict, dict]:
    """The root of a small version's manifest, and its only page turned into format 2's shape (a list
    of file objects with chunk columns) so that the cases below can damage one file at a time."""
    from dvx.api.reading import resolve
    from dvx.api.repo import Repo

    repo = Repo(store=str(store))
    try:
        manifest_id = resolve(repo, ref).record.manifest
    finally:
        repo.close()
    root = json.loads(zstandard.ZstdDecompressor().decompress((store / manifest_key(manifest_id)).read_bytes()))
    assert len(root["pages"]) == 1
    page = json.loads(zstandard.ZstdDecompressor().decompress((store / page_key(root["pages"][0]["id"])).read_bytes()))
    columns, chunks, files, at = page["files"], page["chunks"], [], 0
    for i, path in enumerate(columns["paths"]):
        held = columns["chunk_counts"][i]
        entry = {"path": path, "size": columns["sizes"][i], "digest": columns["digests"][32 * i:32 * i + 32]}
        if held:
            entry["chunks"] = {"ids": chunks["ids"][32 * at:32 * (at + held)],
                               **{k: chunks[k][at:at + held] for k in ("packs", "offsets", "lengths", "sizes", "codecs")}}
        at += held
        files.append(entry)
    return root, {"packs": page["packs"], "files": files}


def page_columns(doc: dict) -> dict:
    """A page document (format 3) from format 2's shape: the inverse of stored_doc's conversion, with
    no checks, so that whatever a case put there reaches the store as is."""
    files = sorted(doc["files"], key=lambda f: f["path"])
    chunk_columns = {k: [] for k in ("packs", "offsets", "lengths", "sizes", "codecs")}
    ids = ""
    for f in files:
        chunks = f.get("chunks") or {"ids": "", **{k: [] for k in chunk_columns}}
        ids += chunks["ids"]
        for k in chunk_columns:
            chunk_columns[k] += chunks[k]
    columns = {"paths": [f["path"] for f in files], "sizes": [f.get("size", 0) for f in files],
               "digests": "".join(f.get("digest", EMPTY_DIGEST) for f in files),
               "chunk_counts": [len(f.get("chunks", {}).get("packs", [])) for f in files]}
    links = [[i, f["link"]] for i, f in enumerate(files) if f.get("link") is not None]
    if links:
        columns["links"] = links
    return {"format_version": 3, "packs": doc["packs"], "files": columns, "chunks": {"ids": ids, **chunk_columns}}


def store_paged(base: dict, doc: dict, damage=None) -> str:
    """Store a (crafted) page under its valid id and a root listing it; returns the root's id. A
    "parents" key on the page goes to the root; `damage(page)` may then change the columns."""
    doc = copy.deepcopy(doc)
    root = copy.deepcopy(base["root"])
    root["parents"] = doc.pop("parents", root["parents"])
    page = page_columns(doc)
    if damage is not None:
        damage(page)
    data = canonical(page)
    page_id = xxhash.xxh3_128_hexdigest(data)
    target = base["store"] / page_key(page_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(compress_manifest(data))
    paths, sizes = page["files"]["paths"], page["files"]["sizes"]
    root["pages"] = [{"id": page_id, "first": paths[0], "files": len(paths), "bytes": sum(sizes)}]
    root["files"], root["bytes"] = len(paths), sum(sizes)
    return store_doc(base["store"], canonical(root))


@pytest.fixture
def base(tmp_path: Path, isolated) -> dict:
    """ds@v1 with a small file, a file in a folder and a 20 KB file."""
    src = write_tree(tmp_path / "src", {"a.txt": "alpha\n", "sub/b.txt": "beta\n", "c.bin": os.urandom(20_000)})
    ds = dvx.Dataset.create("ds")
    ds.add(src)
    ds.commit("v1")
    root, page = stored_doc(isolated["store"], "ds@v1")
    return {"store": isolated["store"], "root": root, "doc": page, "src": src}


def _file(doc: dict, path: str) -> dict:
    return next(f for f in doc["files"] if f["path"] == path)


def _link(path: str, target: str) -> dict:
    return {"path": path, "link": target, "digest": EMPTY_DIGEST}


def _mutate(doc: dict, case: str, tmp_path: Path) -> dict:
    doc = copy.deepcopy(doc)
    a = _file(doc, "a.txt")
    files = doc["files"]
    if case.startswith("path:"):
        a["path"] = case[len("path:"):].replace("{tmp}", str(tmp_path))
    elif case.startswith("link:"):
        files.append(_link("zz-link", case[len("link:"):].replace("{tmp}", str(tmp_path))))
    elif case == "duplicate path":
        files.append(copy.deepcopy(a))
    elif case == "link chain":
        files += [_link("d/up", ".."), _link("d/out", "up/../escaped")]
    elif case == "file under a link":
        files += [_link("l", "a.txt"), dict(copy.deepcopy(a), path="l/inner.txt")]
    elif case == "chunk id with slashes":
        # A chunk "id" that is a path: the local chunk cache would open (and, finding its hash wrong,
        # delete) <cache>/chunks/../<this>. It must never get that far.
        a["chunks"]["ids"] = VICTIM_ID
    elif case == "pack id with slashes":
        doc["packs"][0] = "../../../../../../../../etc/passwd"
    elif case == "parent id not hex":
        doc["parents"] = ["../../manifests/x"]
    elif case == "raw size above u32":
        a["chunks"]["sizes"] = [2**33]
        a["size"] = 2**33
    elif case == "raw size above max chunk":
        a["chunks"]["sizes"] = [MAX_CHUNK_SIZE + 1]
        a["size"] = MAX_CHUNK_SIZE + 1
    elif case == "stored length huge":
        a["chunks"]["lengths"] = [2**40]
    elif case == "offset past u64":
        a["chunks"]["offsets"] = [2**63]
    elif case == "size not the sum of chunks":
        a["size"] = 1
    elif case == "unknown codec":
        a["chunks"]["codecs"] = [9]
    elif case == "link with content":
        files.append(dict(_link("zz-link", "a.txt"), size=5))
    else:  # pragma: no cover
        raise AssertionError(case)
    return doc


HOSTILE_MANIFESTS = [
    "path:../escape.txt", "path:sub/../../escape.txt", "path:{tmp}/abs.txt", "path:C:\\escape.txt",
    "path:C:/escape.txt", "path:sub\\..\\..\\escape.txt", "path:a\x00b.txt", "path:sub//b2.txt", "path:./a.txt",
    "duplicate path", "file under a link",
    "link:../../outside", "link:/etc/passwd", "link:{tmp}", "link:..\\..\\outside", "link:C:/Windows", "link:",
    "link chain",
    "chunk id with slashes", "pack id with slashes", "parent id not hex",
    "raw size above u32", "raw size above max chunk", "stored length huge", "offset past u64",
    "size not the sum of chunks", "unknown codec", "link with content",
]


@pytest.mark.parametrize("case", HOSTILE_MANIFESTS, ids=repr)
def test_a_hostile_manifest_is_refused_and_nothing_is_written(case: str, base: dict, tmp_path: Path, isolated):
    """A crafted manifest stored under its valid id and given a version record: `dvx get` (to a folder
    and into the cache), `dvx ls` and `dvx verify` refuse it with exit 5 and one line naming the manifest;
    nothing is written anywhere (the victim file beside the cache survives)."""
    victim = tmp_path / VICTIM_ID[3:]
    victim.write_bytes(b"alpha\n")  # the size the crafted chunk claims: it would be read, then deleted
    (isolated["cache"] / "chunks").mkdir(parents=True, exist_ok=True)
    doc = _mutate(base["doc"], case, tmp_path)
    manifest_id = store_paged(base, doc)
    ref = record_version(base["store"], "ds", manifest_id, len(doc["files"]))
    before = tree_snapshot(tmp_path, skip=("store",))
    out = tmp_path / "out"
    for args in (["get", ref, "-o", str(out)], ["get", ref], ["ls", ref]):
        one_error_line(cli(*args), EXIT_INTEGRITY, manifest_id)
    proc = cli("verify", ref, "--full")  # verify reports damage on stdout
    assert proc.returncode == EXIT_INTEGRITY and "DAMAGED" in proc.stdout, proc.stdout + proc.stderr
    assert tree_snapshot(tmp_path, skip=("store",)) == before
    assert victim.read_bytes() == b"alpha\n"
    # The intact version next to it still reads.
    assert cli("get", "ds@v1", "-o", str(tmp_path / "good")).returncode == 0
    assert (tmp_path / "good" / "a.txt").read_text() == "alpha\n"


PAGE_DAMAGE = {
    "digest column short": lambda p: p["files"].update(digests=p["files"]["digests"][:-1]),
    "chunk counts disagree": lambda p: p["files"]["chunk_counts"].__setitem__(0, 2),
    "executable index out of range": lambda p: p["files"].update(executable=[99]),
    "link index out of range": lambda p: p["files"].update(links=[[99, "a.txt"]]),
    "size column short": lambda p: p["files"]["sizes"].pop(),
    "pack index out of range": lambda p: p["chunks"]["packs"].__setitem__(0, 9),
}


@pytest.mark.parametrize("case", PAGE_DAMAGE, ids=repr)
def test_a_page_with_inconsistent_columns_is_refused(case: str, base: dict, tmp_path: Path):
    """A page's columns that disagree with each other (lengths, indices) are refused with exit 5 and one
    line naming the manifest, by ls, get and dvx.open alike."""
    manifest_id = store_paged(base, base["doc"], PAGE_DAMAGE[case])
    ref = record_version(base["store"], "ds", manifest_id, len(base["doc"]["files"]))
    for args in (["ls", ref], ["get", ref, "-o", str(tmp_path / "out")], ["ls", ref, "sub"]):
        one_error_line(cli(*args), EXIT_INTEGRITY, manifest_id)
    assert not (tmp_path / "out").exists()


def test_the_chunk_cache_never_touches_files_outside_itself(tmp_path: Path, isolated):
    """Defence in depth: decode_manifest refuses non-hex chunk ids (above), but the chunk cache, which
    names its files by chunk id, must not open or delete <cache>/chunks/<id[:2]>/<id> for an id such as
    '../victim…', which is a file beside the cache folder."""
    from dvx.chunks.cache import ChunkCache

    root = isolated["cache"] / "chunks"
    root.mkdir(parents=True)
    cache = ChunkCache(root, 1 << 20)
    victim = isolated["cache"].parent / VICTIM_ID[3:]
    victim.write_bytes(b"alpha\n")
    assert not cache.contains(VICTIM_ID)
    assert cache.get(VICTIM_ID, 6) is None
    assert victim.read_bytes() == b"alpha\n"


def test_a_symlink_in_the_target_folder_is_never_written_through(base: dict, tmp_path: Path):
    """A folder of the target that is a symlink (left by an earlier get, or made by hand) pointing
    elsewhere: get refuses to write beyond it (exit 2, naming it) and the place it points to stays empty."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(elsewhere)
    proc = cli("get", "ds@v1", "-o", str(out))
    one_error_line(proc, EXIT_USAGE, str(out / "sub"), "symlink")
    assert list(elsewhere.iterdir()) == []


# -- decompression bombs ----------------------------------------------------------------------------------

def _bomb_frame(declared: int, body: bytes = b"a" * 1000) -> bytes:
    """A zstd frame whose header declares `declared` bytes of content but holds `body`'s blocks."""
    honest = zstandard.ZstdCompressor(write_content_size=True).compress(body)
    params = zstandard.get_frame_parameters(honest)
    assert params.content_size == len(body)
    header_len = zstandard.frame_header_size(honest)
    return b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + struct.pack("<Q", declared) + honest[header_len:]


def test_bomb_frames_are_what_they_claim():
    assert zstandard.frame_content_size(_bomb_frame(1 << 40)) == 1 << 40


def _limited_run(args: list[str], cwd: Path | None = None, limit: int = 2 << 30) -> subprocess.CompletedProcess:
    """The real dvx, with its address space capped: an attempt to allocate a bomb's declared size fails
    (as MemoryError, exit 70) instead of quietly reserving it."""

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([dvx_executable(), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          preexec_fn=cap, check=False)


@pytest.mark.parametrize("declared", [8 << 30, 1 << 40], ids=["8GiB", "1TB"])
def test_a_manifest_that_is_a_decompression_bomb_is_refused_before_allocating(declared: int, base: dict,
                                                                             tmp_path: Path):
    """The manifest object is a zstd frame declaring far more than its stored size allows."""
    fake_id = xxhash.xxh3_128_hexdigest(b"bomb%d" % declared)
    target = base["store"] / manifest_key(fake_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(_bomb_frame(declared))
    ref = record_version(base["store"], "ds", fake_id)
    proc = _limited_run(["get", ref, "-o", str(tmp_path / "out")])
    one_error_line(proc, EXIT_INTEGRITY, fake_id, "declares")
    assert not (tmp_path / "out").exists()


def _craft_pack(store: Path, payloads: list[tuple[str, bytes, int, int]]) -> str:
    """Write a pack (and its index segment) from (chunk id, payload, raw length, codec) rows."""
    body, entries = b"", []
    for cid, payload, raw, codec_id in payloads:
        entries.append((cid, len(body), len(payload), raw, codec_id))
        body += payload
    footer = encode_footer(entries)
    pack_id = footer_id(footer)
    for key, data in ((pack_key(pack_id), body + footer + TRAILER.pack(len(footer), TRAILER_MAGIC)),
                      (index_key(pack_id), footer)):
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        (store / key).write_bytes(data)
    return pack_id


@pytest.mark.parametrize("recorded", [1000, MAX_CHUNK_SIZE], ids=["recorded-1000", "recorded-16MiB"])
def test_a_chunk_that_is_a_decompression_bomb_is_refused(recorded: int, base: dict, tmp_path: Path):
    """A pack holds a zstd frame declaring 1 TB; the manifest records a plausible raw length. get fails
    with exit 5 naming the version and the file, allocating nothing near the declared size; the other
    file of the version comes out."""
    frame = _bomb_frame(1 << 40)
    cid = xxhash.xxh3_128_hexdigest(b"a" * 1000)
    pack_id = _craft_pack(base["store"], [(cid, frame, recorded, codec.ZSTD)])
    doc = copy.deepcopy(base["doc"])
    doc["packs"] = sorted(set(doc["packs"]) | {pack_id})
    for f in doc["files"]:
        if "chunks" in f:  # pack indexes shift with the new pack in the sorted list
            old = base["doc"]["packs"]
            f["chunks"]["packs"] = [doc["packs"].index(old[i]) for i in f["chunks"]["packs"]]
    doc["files"].append({"path": "zbomb.bin", "size": recorded, "digest": cid, "chunks": {
        "ids": cid, "packs": [doc["packs"].index(pack_id)], "offsets": [0], "lengths": [len(frame)],
        "sizes": [recorded], "codecs": [codec.ZSTD]}})
    ref = record_version(base["store"], "ds", store_paged(base, doc), len(doc["files"]))
    out = tmp_path / "out"
    proc = _limited_run(["get", ref, "-o", str(out)])
    one_error_line(proc, EXIT_INTEGRITY, ref, "zbomb.bin")
    assert not (out / "zbomb.bin").exists()
    assert not list(out.rglob("*.dvx-part"))
    proc = _limited_run(["get", ref, "-o", str(tmp_path / "ok"), "--glob", "a.txt"])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ok" / "a.txt").read_text() == "alpha\n"


def test_codec_refuses_raw_lengths_beyond_the_chunk_bound():
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(b"a" * 1000)
    for raw in (MAX_CHUNK_SIZE + 1, 2**32, 2**40, -1):
        with pytest.raises(IntegrityError, match="raw length"):
            codec.decode(codec.ZSTD, frame, raw)
    with pytest.raises(IntegrityError, match="declares"):
        codec.decode(codec.ZSTD, _bomb_frame(1 << 40), MAX_CHUNK_SIZE)
    assert codec.decode(codec.ZSTD, frame, 1000) == b"a" * 1000


# -- pack footers -----------------------------------------------------------------------------------------

def _pack(payloads: list[bytes], entries: list[tuple] | None = None) -> tuple[bytes, str]:
    body, rows = b"", []
    for p in payloads:
        rows.append((xxhash.xxh3_128_hexdigest(p), len(body), len(p), len(p), codec.RAW))
        body += p
    footer = encode_footer(entries if entries is not None else rows)
    return body + footer + TRAILER.pack(len(footer), TRAILER_MAGIC), footer_id(footer)


@pytest.mark.parametrize("entry, why", [
    ((0, 20, 20), "past the payload area"),          # runs into the footer
    ((1 << 40, 4, 4), "past the payload area"),       # far beyond the pack
    ((8, 4, 4), None),                                # a valid entry, for contrast
    ((0, 4, 5), "raw chunk"),                         # raw with stored != raw length
    ((0, 4, MAX_CHUNK_SIZE + 1), "out of bounds"),    # raw length above the chunk bound (codec zstd)
    ((2**64 - 4, 4, 4), "past the payload area"),     # offset + length overflows u64
], ids=["overlaps-footer", "beyond-end", "valid", "raw-mismatch", "raw-too-big", "u64-wrap"])
def test_footer_entries_out_of_range_are_refused(entry: tuple, why: str | None):
    """split_pack (verify, push/fetch) checks every entry against the payload area and the chunk bounds."""
    payloads = [b"abcd", b"efgh", b"ijkl"]
    offset, length, size = entry
    codec_id = codec.ZSTD if size > MAX_CHUNK_SIZE else codec.RAW
    rows = [(xxhash.xxh3_128_hexdigest(b"abcd"), offset, length, size, codec_id)]
    data, pack_id = _pack(payloads, rows)
    if why is None:
        assert [r.offset for r in split_pack(data, pack_id)] == [8]
    else:
        with pytest.raises(IntegrityError, match=why):
            split_pack(data, pack_id)


# -- names, tags, references ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, code", [
    (["get", "a" * 201], EXIT_USAGE),
    (["get", "a/" * 99 + "a"], EXIT_USAGE),                 # 199 characters, 397 once stored
    (["dataset", "create", "a/" * 99 + "a"], EXIT_USAGE),
    (["dataset", "create", "x" * 100_000], EXIT_USAGE),
    (["get", "ds@" + "v" * 5000], EXIT_USAGE),
    (["get", "ds@v" + "9" * 5000], EXIT_USAGE),             # int() of 5000 digits would raise ValueError
    (["get", "ds@v99999999999"], EXIT_NOT_FOUND),
    (["get", "ds@"], EXIT_USAGE),
    (["get", "ds@@v1"], EXIT_USAGE),
    (["get", "../ds"], EXIT_USAGE),
    (["get", "ds/../../etc"], EXIT_USAGE),
    (["get", "données"], EXIT_USAGE),
    (["get", "ds\\x"], EXIT_USAGE),
    (["tag", "ds@v1", "t" * 101], EXIT_USAGE),
    (["tag", "ds@v1", "v2"], EXIT_USAGE),
    (["tag", "ds@v1", "../x"], EXIT_USAGE),
    (["dataset", "create", "ok", "--parent", "x" * 300], EXIT_USAGE),
], ids=lambda v: repr(v)[:40] if isinstance(v, list) else str(v))
def test_invalid_and_over_long_names_and_references(args: list[str], code: int, base: dict, tmp_path: Path):
    """Each is refused with its documented code and one short line; nothing appears in the store's refs."""
    refs_before = tree_snapshot(base["store"] / "refs")
    one_error_line(cli(*args), code)
    assert tree_snapshot(base["store"] / "refs") == refs_before


def test_name_rules_count_slashes_as_stored():
    check_name("a" * 200)
    check_name("a/" * 40 + "a" * 40)  # 120 characters, 200 once each '/' is stored as %2F
    for bad in ("a" * 201, "a/" * 40 + "a" * 41, "", "a//b", "/a", "a/", "a/./b", "a/../b", "-a", ".a", "a b"):
        with pytest.raises(UsageError):
            check_name(bad)
    with pytest.raises(UsageError):
        check_tag("t" * 101)
    with pytest.raises(UsageError):
        parse_ref("a@" + "b" * 101)


# -- dvx.toml ---------------------------------------------------------------------------------------------

MALFORMED_TOML = [
    pytest.param(b'format_version = 1\n[store\nurl = "x"\n', id="syntax"),
    pytest.param(b'[stores]\nx = 1\n', id="stores-entry-not-a-table"),
    pytest.param(b'\xff\xfe[store]\n', id="not-utf8"),
    pytest.param(b'[store]\nurl = 5\n', id="url-not-a-string"),
    pytest.param(b'[store]\nurl = ""\n', id="url-empty"),
    pytest.param(b'store = "x"\n', id="store-not-a-table"),
    pytest.param(b'transfer = 5\n', id="transfer-not-a-table"),
    pytest.param(b'[transfer]\njobs = "many"\n', id="jobs-not-a-number"),
    pytest.param(b'[cache]\nmax_size = "lots"\n', id="cache-size-invalid"),
    pytest.param(b'[cache]\nmax_size = -5\n', id="cache-size-negative"),
    pytest.param(b'cache = [1, 2]\n', id="cache-not-a-table"),
    pytest.param(b'format_version = 99\n', id="format-version-from-the-future"),
]


@pytest.mark.parametrize("content", MALFORMED_TOML)
def test_a_malformed_dvx_toml_exits_2_naming_the_file(content: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every command, with or without DVX_STORE set, exits 2 with one line that names dvx.toml (the first
    command runs as a real process, the others in-process)."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "dvx.toml").write_bytes(content)
    one_error_line(run_dvx("dataset", "list", cwd=project, check=False), EXIT_USAGE, str(project / "dvx.toml"))
    monkeypatch.chdir(project)
    for args in (["get", "x"], ["store"], ["dataset", "create", "x"]):
        one_error_line(cli(*args), EXIT_USAGE, str(project / "dvx.toml"))
    monkeypatch.delenv("DVX_STORE")
    one_error_line(cli("get", "x"), EXIT_USAGE, str(project / "dvx.toml"))


# -- path and link rules (unit level) ---------------------------------------------------------------------

@pytest.mark.parametrize("path", ["C:\\x", "C:/x", "c:x", "a\\b", "Z:", "\\\\server\\share", "a/b\\c"], ids=repr)
def test_drive_letters_and_backslashes_are_not_portable_paths(path: str):
    """Refused on write and read: on Windows they are separators or a root outside the target."""
    with pytest.raises(UsageError):
        validate_path(path)


@pytest.mark.parametrize("path", ["ab:c", "a/C:/x", "1:x", "é:x", ":b/c"], ids=repr)
def test_colons_elsewhere_stay_allowed(path: str):
    """Only a drive letter at the very start is refused: 'ab:c' or 'a/C:/x' are ordinary names on POSIX."""
    assert validate_path(path) == path


def test_link_chains_are_followed_through_each_other():
    check_link_chains({"d/up": "..", "d/in": "up/sub"})  # both stay inside
    check_link_chains({"a": "b", "b": "a"})  # a loop never escapes (the OS reports ELOOP)
    with pytest.raises(UsageError, match="through other links"):
        check_link_chains({"d/up": "..", "d/out": "up/.."})
    with pytest.raises(UsageError, match="through other links"):
        check_link_chains({"x/y/l1": "..", "x/y/l2": "l1/..", "x/y/l3": "l2/.."})
    for target in ("", "C:/x", "..\\x"):
        with pytest.raises(UsageError):
            validate_link("l", target)


def test_add_refuses_link_chains_and_unportable_names(tmp_path: Path):
    """The same rules at add time: the add fails before storing anything (exit 2, naming the path)."""
    chain = tmp_path / "chain"
    (chain / "d").mkdir(parents=True)
    (chain / "d" / "up").symlink_to("..")
    (chain / "d" / "out").symlink_to("up/..")
    backslash = write_tree(tmp_path / "bs", {"a\\b.txt": "x"})
    drive = write_tree(tmp_path / "drive", {"c:x.txt": "x"})
    cli("dataset", "create", "ds")
    for folder, needle in ((chain, "d/out"), (backslash, "a\\\\b.txt"), (drive, "c:x.txt")):
        one_error_line(cli("dataset", "add", str(folder)), EXIT_USAGE, needle)
    assert cli("dataset", "status").stdout.strip().endswith("no changes")


# -- fuzzing ----------------------------------------------------------------------------------------------

def _bounded(call, limit: int):
    """Run `call` under tracemalloc; fail if its peak Python allocation passes `limit` bytes."""
    tracemalloc.start()
    try:
        return call()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < limit, f"peak allocation {peak} bytes"


def _valid_manifests() -> list[tuple[int, dict]]:
    """A few valid documents: chunked files in two packs (with a negative offset delta), an empty file,
    an executable, links (one through another), nested folders; plus the same in format 1."""
    p1, p2 = "1" * 32, "2" * 32
    def c(n: int) -> str:
        return xxhash.xxh3_128_hexdigest(b"%d" % n)

    from dvx.chunks import ChunkRef

    files = [
        FileEntry(path="a/x.bin", size=30, digest=c(100),
                  chunks=[ChunkRef(c(1), p1, 0, 10, 10, 0), ChunkRef(c(2), p2, 0, 8, 20, 1)]),
        FileEntry(path="a/y.bin", size=10, digest=c(1), chunks=[ChunkRef(c(1), p1, 0, 10, 10, 0)]),
        FileEntry(path="b/empty", size=0, digest=EMPTY_DIGEST),
        FileEntry(path="b/run.sh", size=5, digest=c(3), executable=True, chunks=[ChunkRef(c(3), p2, 8, 5, 5, 0)]),
        FileEntry(path="b/up", link=".."),
        FileEntry(path="b/via", link="up/a/x.bin"),
        FileEntry(path="é/日本.txt", size=10, digest=c(1), chunks=[ChunkRef(c(1), p1, 0, 10, 10, 0)]),
    ]
    manifest = Manifest(kind="dataset", name="fuzz/ds", parents=["3" * 32], created="2026-01-01T00:00:00+00:00",
                        author="a@b", message="m", metadata={"k": [1, {"n": None}]}, files=files)
    v2 = json.loads(encode_manifest(manifest)[1])
    v1 = copy.deepcopy(v2)
    v1["format_version"] = 1
    ends: dict[int, int] = {}
    for entry in v1["files"]:
        cols = entry.pop("chunks", None)
        if cols:
            rows = []
            for i, pack in enumerate(cols["packs"]):
                offset = ends.get(pack, 0) + cols["offsets"][i]
                ends[pack] = offset + cols["lengths"][i]
                rows.append([cols["ids"][32 * i:32 * i + 32], pack, offset, cols["lengths"][i], cols["sizes"][i],
                             cols["codecs"][i]])
            entry["chunks"] = rows
    return [(2, v2), (1, v1)]


VALID_MANIFESTS = _valid_manifests()

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(-3, 40),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from(["../x", "/abs", "C:\\x", "C:/x", "a\x00b", "", ".", "..", "a//b", "up/..", "0" * 32,
                     "1" * 32, "g" * 32, EMPTY_DIGEST, "dataset", "model", "a/x.bin", "b/up"]),
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)


def _locations(value, prefix=()):
    """Every (container path) in a JSON value: where a mutation can apply."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _locations(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _locations(item, prefix + (index,))


@st.composite
def mutated_manifests(draw) -> bytes:
    """A valid document with 1-4 structural mutations: a value replaced (by anything, or by a number
    near a bound), a key removed or added, a list element duplicated, removed or the list cut short."""
    _, doc = draw(st.sampled_from(VALID_MANIFESTS))
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 4))):
        locations = list(_locations(doc))
        where = draw(st.sampled_from(locations))
        if not where:
            continue
        parent = doc
        for step in where[:-1]:
            parent = parent[step]
        last = where[-1]
        action = draw(st.sampled_from(["replace", "bound", "delete", "add", "duplicate", "truncate"]))
        if action == "replace":
            parent[last] = draw(json_values)
        elif action == "bound":
            parent[last] = draw(st.sampled_from([-1, 0, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64,
                                                 MAX_CHUNK_SIZE, MAX_CHUNK_SIZE + 1, 10**30]))
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
        elif action == "duplicate" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
        elif action == "truncate" and isinstance(parent, list):
            del parent[last:]
    return json.dumps(doc, sort_keys=draw(st.booleans()), ensure_ascii=draw(st.booleans())).encode(
        "utf-8", "surrogatepass")


def _decodes_validly_or_refuses(data: bytes) -> None:
    """decode_manifest on `data` stored under its valid id: a valid Manifest (re-encodable) or a
    refusal; bounded allocation."""
    manifest_id = xxhash.xxh3_128_hexdigest(data)
    stored = compress_manifest(data)
    try:
        manifest = _bounded(lambda: decode_manifest(stored, manifest_id), 32 << 20)
    except (IntegrityError, UsageError):
        return
    assert isinstance(manifest, Manifest)
    encode_manifest(manifest)  # everything decode let through satisfies the write-side checks too
    for f in manifest.files:
        assert f.size == sum(c.size for c in f.chunks)
        assert all(0 <= c.size <= MAX_CHUNK_SIZE and 0 <= c.offset and len(c.id) == 32 for c in f.chunks)


@settings(max_examples=FUZZ_EXAMPLES, **FUZZ)
@given(data=mutated_manifests())
def test_fuzz_manifest_decoder_with_structured_mutations(data: bytes):
    _decodes_validly_or_refuses(data)


@settings(max_examples=FUZZ_EXAMPLES, **FUZZ)
@given(data=st.one_of(st.binary(max_size=2000), st.text(max_size=500).map(str.encode),
                      json_values.map(lambda v: json.dumps(v).encode())))
def test_fuzz_manifest_decoder_with_arbitrary_documents(data: bytes):
    """Arbitrary bytes or JSON, stored under a matching id (so they get past the hash check)."""
    _decodes_validly_or_refuses(data)


@settings(max_examples=FUZZ_EXAMPLES, **FUZZ)
@given(stored=st.one_of(st.binary(max_size=2000), st.builds(_bomb_frame, st.integers(0, 2**64 - 1))),
       manifest_id=st.sampled_from(["0" * 32, "zz", ""]))
def test_fuzz_manifest_decoder_with_arbitrary_stored_bytes(stored: bytes, manifest_id: str):
    """Arbitrary stored objects (not zstd, truncated frames, frames declaring any size)."""
    try:
        _bounded(lambda: decode_manifest(stored, manifest_id), 32 << 20)
    except (IntegrityError, UsageError):
        pass


def _footer_location(data: bytes) -> str:
    """The id split_pack will compare with: that of the footer the trailer points at (or a dummy)."""
    if len(data) >= TRAILER.size:
        footer_len, _ = TRAILER.unpack_from(data, len(data) - TRAILER.size)
        if footer_len <= len(data) - TRAILER.size:
            start = len(data) - TRAILER.size - footer_len
            return footer_id(data[start:start + footer_len])
    return "0" * 32


def _splits_validly_or_refuses(data: bytes) -> None:
    try:
        refs = _bounded(lambda: split_pack(data, _footer_location(data)), 8 << 20)
    except (IntegrityError, UsageError):
        return
    footer_len = TRAILER.unpack_from(data, len(data) - TRAILER.size)[0]
    payload_end = len(data) - TRAILER.size - footer_len
    for ref in refs:
        assert 0 <= ref.offset and ref.offset + ref.length <= payload_end
        assert ref.codec in codec.CODEC_NAMES and 0 <= ref.size <= MAX_CHUNK_SIZE


@st.composite
def mutated_packs(draw) -> bytes:
    """A valid pack with one or more mutations of its footer fields (count, entry offset/lengths/codec,
    trailer length), a cut or an extension."""
    payloads = draw(st.lists(st.binary(min_size=0, max_size=40), min_size=0, max_size=5))
    data = bytearray(_pack(payloads)[0])
    footer_len = TRAILER.unpack_from(data, len(data) - TRAILER.size)[0]
    start = len(data) - TRAILER.size - footer_len
    count = len(payloads)

    def put(fmt: str, at: int, value: int) -> None:
        if 0 <= at and at + struct.calcsize(fmt) <= len(data):  # earlier cuts may have removed it
            struct.pack_into(fmt, data, at, value)

    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["count", "entry", "trailer", "cut", "extend", "flip"]))
        if action == "count":
            put("<I", start + 10, draw(st.integers(0, 2**32 - 1)))
        elif action == "entry" and count:
            entry = start + 14 + 33 * draw(st.integers(0, count - 1))
            field, fmt = draw(st.sampled_from([(16, "<Q"), (24, "<I"), (28, "<I"), (32, "<B")]))
            limit = {"<Q": 2**64 - 1, "<I": 2**32 - 1, "<B": 255}[fmt]
            put(fmt, entry + field, draw(st.integers(0, limit)))
        elif action == "trailer":
            put("<Q", len(data) - TRAILER.size, draw(st.integers(0, 2**64 - 1)))
        elif action == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif action == "extend":
            data.extend(draw(st.binary(max_size=50)))
        elif action == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data)


@settings(max_examples=FUZZ_EXAMPLES, **FUZZ)
@given(data=mutated_packs())
def test_fuzz_pack_footer_parser_with_structured_mutations(data: bytes):
    _splits_validly_or_refuses(data)


@settings(max_examples=FUZZ_EXAMPLES, **FUZZ)
@given(data=st.binary(max_size=600))
def test_fuzz_pack_footer_parser_with_arbitrary_bytes(data: bytes):
    _splits_validly_or_refuses(data)
    try:  # as an index segment, under its own id
        refs = _bounded(lambda: list(decode_footer(data, footer_id(data))), 8 << 20)
    except IntegrityError:
        return
    assert len(data) == 14 + 33 * len(refs)


@settings(max_examples=FUZZ_EXAMPLES, **FUZZ)
@given(codec_id=st.integers(0, 255), raw_size=st.one_of(st.integers(-5, 5000), st.integers(0, 2**64)),
       payload=st.one_of(st.binary(max_size=300),
                         st.binary(max_size=3000).map(zstandard.ZstdCompressor().compress),
                         st.builds(_bomb_frame, st.integers(0, 2**64 - 1))))
def test_fuzz_chunk_codec(codec_id: int, raw_size: int, payload: bytes):
    """Any codec byte, recorded raw length and payload: at most raw_size bytes out, or IntegrityError."""
    try:
        # Reading a chunk allocates its recorded raw length, which decode holds to MAX_CHUNK_SIZE.
        out = _bounded(lambda: codec.decode(codec_id, payload, raw_size), MAX_CHUNK_SIZE + (1 << 20))
    except IntegrityError:
        return
    assert len(out) <= max(raw_size, 0) or (codec_id == codec.RAW and out == payload)


FUZZ_TESTS = 6  # the @given tests above: FUZZ_TESTS * FUZZ_EXAMPLES inputs per run
