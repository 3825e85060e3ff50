"""The chunk layer: FastCDC chunking, xxh3-128 ids, zstd/raw codecs, the pack format and the chunk
store's ingest (dedup, packs) and verified reads."""

from __future__ import annotations

import itertools
import os
import random
import tempfile
import uuid
from pathlib import Path

import msgspec
import pytest
import xxhash
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvx.chunks import ChunkRef, ChunkStore, StoreConfig, chunk_id, load_config
from dvx.chunks import codec
from dvx.chunks.chunker import Chunker, ChunkerParams
from dvx.chunks.pack import TRAILER, TRAILER_MAGIC, decode_footer, encode_footer, footer_id, pack_key, split_pack
from dvx.chunks.store import CONFIG_KEY, SMALL_FILE, verify_chunk
from dvx.errors import IntegrityError, StoreError
from dvx.fs import open_store

MiB = 1 << 20
SMALL = ChunkerParams(min_size=256, avg_size=1024, max_size=4096)
HYPO = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


def make_chunk_store(root: Path | str, chunker: ChunkerParams = ChunkerParams(), pack_size: int = 32 * MiB,
                     jobs: int = 2) -> ChunkStore:
    store = open_store(str(root))
    config = StoreConfig(store_id=uuid.uuid4().hex, created="2026-01-01T00:00:00+00:00", chunker=chunker,
                         pack_size=pack_size)
    store.put_create(CONFIG_KEY, msgspec.json.encode(config, order="sorted"))
    return ChunkStore.open(store, jobs=jobs)


def ingest_bytes(cs: ChunkStore, data: bytes, folder: Path, name: str = "f.bin"):
    path = folder / name
    path.write_bytes(data)
    (item,), writer = cs.ingest([(name, str(path))])
    return item, writer


def read_back(cs: ChunkStore, refs) -> bytes:
    return b"".join(cs.read_chunks(refs))


def random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def compressible_bytes(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(1, 12)) for _ in range(20)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


# Small and large buffers, random and repetitive, including the empty buffer.
buffers = st.one_of(
    st.binary(max_size=20_000),
    st.builds(random_bytes, st.integers(0, 2**32), st.integers(0, 3 * MiB)),
    st.builds(compressible_bytes, st.integers(0, 2**32), st.integers(0, 2 * MiB)),
)


# -- chunking -----------------------------------------------------------------------------------------

@HYPO
@given(data=buffers)
def test_chunks_cover_the_buffer_within_size_bounds(data: bytes):
    """Default FastCDC cuts are contiguous, cover every byte and respect min/max (only the last may be short)."""
    p = ChunkerParams()
    chunks = [bytes(c) for c in Chunker(p).split_buffer(data)]
    assert b"".join(chunks) == data
    assert all(len(c) <= p.max_size for c in chunks)
    assert all(len(c) >= p.min_size for c in chunks[:-1])


@HYPO
@given(seed=st.integers(0, 2**32), size=st.integers(0, 200_000),
       block_size=st.sampled_from([300, 1000, 4096, 5000, 65_536, 1 << 20]),
       params=st.sampled_from([SMALL, ChunkerParams(min_size=4096, avg_size=16384, max_size=65536)]))
def test_chunking_in_blocks_equals_chunking_the_whole_buffer(tmp_path: Path, seed: int, size: int,
                                                             block_size: int, params: ChunkerParams):
    """split_file over a real file read in small blocks gives exactly the boundaries of split_buffer on
    the whole content (so memory stays bounded without changing chunk ids)."""
    data = random_bytes(seed, size) if seed % 3 else compressible_bytes(seed, size)
    chunker = Chunker(params)
    whole = [len(c) for c in chunker.split_buffer(data)]
    path = tmp_path / f"blocks-{uuid.uuid4().hex}"
    path.write_bytes(data)
    try:
        with open(path, "rb", buffering=0) as f:
            blocked = [bytes(c) for c in chunker.split_file(f, block_size=block_size)]
    finally:
        path.unlink()
    assert [len(c) for c in blocked] == whole
    assert b"".join(blocked) == data


@HYPO
@given(data=buffers)
def test_ingest_cuts_files_exactly_like_split_buffer(tmp_path: Path, data: bytes):
    """Whatever path ingest takes to read a file (one read, blocks), its chunk ids are those of
    split_buffer on the whole content, so dedup never depends on how a file was read."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        cs = make_chunk_store(Path(tmp) / "store", chunker=SMALL)
        item, _ = ingest_bytes(cs, data, Path(tmp))
        expected = [chunk_id(c) for c in Chunker(SMALL).split_buffer(data)]
        assert [r.id for r in item.chunks] == expected


def test_default_chunker_averages_about_64k():
    """On 8 MiB of random data the default parameters give chunks averaging 32–128 KiB."""
    data = random_bytes(7, 8 * MiB)
    sizes = [len(c) for c in Chunker(ChunkerParams()).split_buffer(data)]
    assert 32 << 10 <= sum(sizes) / len(sizes) <= 128 << 10


# -- ingest and read ----------------------------------------------------------------------------------

@HYPO
@given(data=buffers)
def test_ingest_then_read_returns_identical_bytes(tmp_path: Path, data: bytes):
    """Any content (empty, tiny, many chunks, compressible or not) reads back byte for byte, its digest is
    the xxh3-128 of the whole file and every chunk id is the xxh3-128 of that chunk's raw bytes."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        cs = make_chunk_store(Path(tmp) / "store")
        item, _ = ingest_bytes(cs, data, Path(tmp))
        assert item.size == len(data)
        assert item.digest == xxhash.xxh3_128_hexdigest(data)
        assert sum(r.size for r in item.chunks) == len(data)
        pieces = list(cs.read_chunks(item.chunks))
        assert b"".join(pieces) == data
        assert [chunk_id(p) for p in pieces] == [r.id for r in item.chunks]
        # A fresh ChunkStore (another process) finds the same data through the store alone.
        fresh = ChunkStore.open(open_store(str(Path(tmp) / "store")))
        assert read_back(fresh, item.chunks) == data


@HYPO
@given(files=st.lists(st.binary(max_size=30_000), min_size=1, max_size=6),
       pack_size=st.sampled_from([1, 5000, 32 * MiB]))
def test_many_files_round_trip_across_pack_boundaries(tmp_path: Path, files: list[bytes], pack_size: int):
    """Several files ingested together (small chunks, packs sealed often or rarely) each read back intact,
    and results come back in the order the files were given."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        cs = make_chunk_store(Path(tmp) / "store", chunker=SMALL, pack_size=pack_size)
        sources = []
        for i, data in enumerate(files):
            path = Path(tmp) / f"f{i}"
            path.write_bytes(data)
            sources.append((i, str(path)))
        items, _ = cs.ingest(sources)
        assert [item.source for item in items] == list(range(len(files)))
        for item, data in zip(items, files):
            assert read_back(cs, item.chunks) == data


@HYPO
@given(seeds=st.lists(st.integers(0, 2**32), min_size=2, max_size=6),
       sizes=st.lists(st.integers(0, 400_000), min_size=6, max_size=6),
       block=st.sampled_from([5000, 40_000, 150_000]),
       pack_size=st.sampled_from([1, 64_000, 32 * MiB]))
def test_files_larger_than_a_block_round_trip_through_reused_read_buffers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seeds: list[int], sizes: list[int], block: int,
        pack_size: int):
    """Ingest reads large files into a small ring of buffers per worker and writes raw chunks straight
    from them: with blocks far smaller than the files, every buffer is refilled many times while its
    chunks wait to be written. Every file must still read back intact (random data is stored raw, so
    a buffer refilled too early would show as a damaged chunk)."""
    monkeypatch.setattr("dvx.chunks.chunker.BLOCK_SIZE", block)
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        cs = make_chunk_store(Path(tmp) / "store", chunker=SMALL, pack_size=pack_size, jobs=2)
        files = []
        for i, seed in enumerate(seeds):
            data = random_bytes(seed, sizes[i]) + compressible_bytes(seed, sizes[-1 - i] // 4)
            path = Path(tmp) / f"f{i}"
            path.write_bytes(data)
            files.append((i, str(path), data))
        items, _ = cs.ingest([(i, path) for i, path, _ in files])
        fresh = ChunkStore.open(open_store(str(Path(tmp) / "store")))
        for item, (_, _, data) in zip(items, files):
            assert item.digest == xxhash.xxh3_128_hexdigest(data)
            assert read_back(fresh, item.chunks) == data


@pytest.mark.parametrize("jobs", [2, 3])
def test_small_and_large_files_mixed_round_trip_with_one_worker_at_a_time_on_small_files(tmp_path: Path,
                                                                                          jobs: int):
    """Small files are worked on by one worker at a time (the turn passes when its holder opens a large
    file or runs out): a mix of both, in any order, comes back whole and in the order given, and the
    workers' files interleave as they should (no worker starves on the turn)."""
    cs = make_chunk_store(tmp_path / "store", jobs=jobs)
    rng = random.Random(9)
    sources, contents = [], []
    for i in range(300):
        large = i % 60 == 7
        data = rng.randbytes(rng.randint(SMALL_FILE + 1, 3 * MiB) if large else rng.randint(0, 20_000))
        path = tmp_path / f"f{i:03d}"
        path.write_bytes(data)
        sources.append((i, str(path)))
        contents.append(data)
    items, _ = cs.ingest(sources)
    assert [item.source for item in items] == list(range(300))
    for item, data in zip(items, contents):
        assert item.size == len(data) and read_back(cs, item.chunks) == data
        assert item.digest == xxhash.xxh3_128_hexdigest(data)


def test_a_file_that_grows_after_it_is_opened_still_gets_its_whole_content_digest(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch):
    """A file no larger than the minimum chunk when opened is one chunk, whose id is the file's digest;
    if it turns out longer (still being written), the digest still covers every byte read."""
    import dvx.chunks.chunker as chunker_module

    cs = make_chunk_store(tmp_path / "store")
    path = tmp_path / "growing.log"
    data = random_bytes(21, 300_000)
    path.write_bytes(data)
    inode = path.stat().st_ino
    real_fstat = os.fstat

    def fstat_when_opened(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        if st.st_ino != inode:
            return st
        fields = list(st)
        fields[6] = 100  # st_size: the size before the writer appended the rest
        return os.stat_result(fields)

    monkeypatch.setattr(chunker_module.os, "fstat", fstat_when_opened)
    (item,), _ = cs.ingest([("g", str(path))])
    monkeypatch.undo()
    assert len(item.chunks) > 1 and item.size == len(data)
    assert item.digest == xxhash.xxh3_128_hexdigest(data)
    assert read_back(cs, item.chunks) == data


def test_an_index_segment_deleted_between_listing_and_reading_is_skipped(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    """A gc may delete a condemned pack's index segment while a writer loads the index: the writer goes
    on without it (it would not dedup against garbage) instead of failing with "object is missing"."""
    cs = make_chunk_store(tmp_path / "store")
    (tmp_path / "a.bin").write_bytes(random_bytes(30, 300_000))
    (item,), _ = cs.ingest([("a", str(tmp_path / "a.bin"))])
    fresh = ChunkStore.open(cs.store)
    real_list = fresh.store.list
    monkeypatch.setattr(fresh.store, "list", lambda prefix: real_list(prefix) + (
        ["0" * 32 + ".idx"] if prefix == "index" else []))
    index = fresh.index()
    assert all(ref.id in index for ref in item.chunks) and "0" * 32 not in {r.pack for r in index.values()}


def test_a_failing_worker_stops_the_one_waiting_for_the_small_file_turn(tmp_path: Path):
    """A worker waiting for the small-file turn while the other fails (a file vanished) stops too: the
    ingest raises the failure instead of hanging."""
    cs = make_chunk_store(tmp_path / "store", jobs=2)
    sources = []
    for i in range(400):
        path = tmp_path / f"f{i:03d}"
        path.write_bytes(random_bytes(i, 3000))
        sources.append((i, str(path)))
    sources.insert(250, (999, str(tmp_path / "vanished")))
    with pytest.raises(StoreError, match="vanished"):
        cs.ingest(sources)


def test_ingesting_the_same_file_twice_stores_nothing_new(tmp_path: Path):
    """Dedup: the second ingest of identical content writes 0 bytes and no pack, in the same process and
    from a fresh ChunkStore reading the store's index."""
    cs = make_chunk_store(tmp_path / "store")
    data = random_bytes(1, 3 * MiB)
    first, w1 = ingest_bytes(cs, data, tmp_path, "a")
    assert w1.stored_bytes >= len(data) * 0.95 and w1.packs_written == 1
    second, w2 = ingest_bytes(cs, data, tmp_path, "b")
    assert (w2.stored_bytes, w2.packs_written) == (0, 0)
    assert [r.id for r in second.chunks] == [r.id for r in first.chunks]
    fresh = ChunkStore.open(open_store(str(tmp_path / "store")))
    third, w3 = ingest_bytes(fresh, data, tmp_path, "c")
    assert (w3.stored_bytes, w3.packs_written) == (0, 0)
    assert read_back(fresh, third.chunks) == data


def test_repeated_content_inside_one_file_is_stored_once(tmp_path: Path):
    """A file made of the same 1 MiB block eight times stores about one block, plus the chunks that
    straddle each seam until the cut points fall back into step (two or three chunks per seam)."""
    cs = make_chunk_store(tmp_path / "store")
    block = random_bytes(2, MiB)
    item, writer = ingest_bytes(cs, block * 8, tmp_path)
    assert writer.stored_bytes < 2 * MiB
    assert read_back(cs, item.chunks) == block * 8


def test_overwriting_1mib_in_a_16mib_file_stores_only_nearby_chunks(tmp_path: Path):
    """Content-defined chunking: changing 1 MiB in the middle of a 16 MiB file re-stores that MiB plus at
    most a couple of neighbouring chunks, not the file."""
    cs = make_chunk_store(tmp_path / "store")
    data = bytearray(random_bytes(3, 16 * MiB))
    first, _ = ingest_bytes(cs, bytes(data), tmp_path, "v1")
    data[8 * MiB: 9 * MiB] = random_bytes(4, MiB)
    second, writer = ingest_bytes(cs, bytes(data), tmp_path, "v2")
    old_ids = {r.id for r in first.chunks}
    new = [r for r in second.chunks if r.id not in old_ids]
    new_raw = sum(r.size for r in new)
    max_chunk = ChunkerParams().max_size
    assert MiB <= new_raw <= MiB + 2 * max_chunk
    assert writer.stored_bytes <= MiB + 2 * max_chunk
    assert len(new) <= MiB // ChunkerParams().min_size
    assert read_back(cs, second.chunks) == bytes(data)


def test_inserting_and_deleting_bytes_in_20_places_restores_only_the_chunks_around_them(tmp_path: Path):
    """Edits that shift the rest of the file (inserted or deleted rows) cost the chunks they touch and
    the next one or two, until the cut points are back in step: about 90 KiB per edit on average over
    six such files with the default parameters (about 105 KiB with level 1 and a 16 KiB minimum)."""
    cs = make_chunk_store(tmp_path / "store")
    rng = random.Random(5)
    data = bytearray(rng.randbytes(16 * MiB))
    first, _ = ingest_bytes(cs, bytes(data), tmp_path, "v1")
    for pos in sorted(rng.sample(range(len(data)), 20), reverse=True):
        if rng.random() < 0.5:
            data[pos:pos] = rng.randbytes(rng.randint(1, 5000))
        else:
            del data[pos:pos + rng.randint(1, 5000)]
    second, writer = ingest_bytes(cs, bytes(data), tmp_path, "v2")
    assert writer.stored_bytes <= 20 * 3 * ChunkerParams().avg_size
    assert read_back(cs, second.chunks) == bytes(data)


def test_compressible_chunks_use_zstd_and_random_ones_stay_raw(tmp_path: Path):
    """Text-like data is stored as zstd frames (smaller than raw); random data is stored raw."""
    cs = make_chunk_store(tmp_path / "store")
    text = b"".join(b"row %d,label_%d,0.%06d\n" % (i, i % 10, i * 7919 % 1000000) for i in range(40_000))
    text_item, text_writer = ingest_bytes(cs, text, tmp_path, "t.csv")
    assert {r.codec for r in text_item.chunks} == {codec.ZSTD}
    assert text_writer.stored_bytes < len(text) / 2
    noise = random_bytes(5, 2 * MiB)
    noise_item, _ = ingest_bytes(cs, noise, tmp_path, "n.bin")
    assert {r.codec for r in noise_item.chunks} == {codec.RAW}
    assert all(r.length == r.size for r in noise_item.chunks)
    assert read_back(cs, text_item.chunks) == text and read_back(cs, noise_item.chunks) == noise


def test_compressibility_is_judged_afresh_for_each_file(tmp_path: Path):
    """A run of incompressible chunks in one file (media, random) must not make the next file in the
    same ingest skip compression: the text file after a random one is still stored as zstd."""
    cs = make_chunk_store(tmp_path / "store")
    (tmp_path / "noise.bin").write_bytes(random_bytes(12, 2 * MiB))
    text = b"".join(b"line %d of a very regular text file\n" % i for i in range(30_000))
    (tmp_path / "text.txt").write_bytes(text)
    (noise, prose), _ = cs.ingest([("n", str(tmp_path / "noise.bin")), ("t", str(tmp_path / "text.txt"))])
    assert {r.codec for r in noise.chunks} == {codec.RAW}
    assert {r.codec for r in prose.chunks} == {codec.ZSTD}
    assert read_back(cs, prose.chunks) == text


def test_compressible_data_after_a_long_incompressible_run_in_one_file_is_compressed_again(tmp_path: Path):
    """Inside one file (a tar of JPEGs then CSVs), a run of incompressible chunks makes dvx try only every
    16th chunk, and only that chunk's start first: once the data turns compressible, the chunks after
    the next try are zstd again, and at most that stretch (16 chunks) stays raw."""
    cs = make_chunk_store(tmp_path / "store")
    text = b"".join(b"row %d,%d,a fairly regular csv line\n" % (i, i * 7) for i in range(150_000))
    data = random_bytes(13, 8 * MiB) + text
    (tmp_path / "mixed.tar").write_bytes(data)
    (item,), _ = cs.ingest([("m", str(tmp_path / "mixed.tar"))])
    boundary = 8 * MiB
    starts = list(itertools.accumulate([0] + [r.size for r in item.chunks]))
    tail = [r for r, start in zip(item.chunks, starts) if start >= boundary]
    raw_tail = [r for r in tail if r.codec == codec.RAW]
    assert len(tail) > 40 and tail[-1].codec == codec.ZSTD
    assert len(raw_tail) <= 16
    assert all(r.codec == codec.ZSTD for r in tail[tail.index(raw_tail[-1]) + 1:]) if raw_tail else True
    assert read_back(cs, item.chunks) == data


def test_packs_are_sealed_at_pack_size(tmp_path: Path):
    """With a 1 MiB pack size, 5 MiB of new data lands in several packs, each readable on its own."""
    cs = make_chunk_store(tmp_path / "store", pack_size=MiB)
    data = random_bytes(6, 5 * MiB)
    item, writer = ingest_bytes(cs, data, tmp_path)
    packs = {r.pack for r in item.chunks}
    assert writer.packs_written == len(packs) >= 4
    for pack in packs:
        raw = cs.store.read(pack_key(pack))
        refs = split_pack(raw, pack)
        assert {r.id for r in refs} <= {r.id for r in item.chunks}
    assert read_back(cs, item.chunks) == data


def test_unreadable_source_file_is_a_store_error(tmp_path: Path):
    """A path that cannot be read fails the ingest with a DvxError naming the path."""
    cs = make_chunk_store(tmp_path / "store")
    with pytest.raises(StoreError, match="nope"):
        cs.ingest([("x", str(tmp_path / "nope"))])


def test_store_config_is_created_once_and_shared(tmp_path: Path):
    """load_config(create=True) initialises an empty store; later calls (any client) read the same config."""
    store = open_store(str(tmp_path / "s"))
    assert load_config(store, create=False) is None
    first = load_config(store, create=True)
    again = load_config(open_store(str(tmp_path / "s")), create=True)
    assert first == again
    assert first.chunker == ChunkerParams() and first.hash == "xxh3-128"


@pytest.mark.parametrize("chunker", [
    {"algorithm": "rabin"}, {"avg_size": 0}, {"min_size": 1 << 30}, {"max_size": 100},
    {"min_size": 70_000, "avg_size": 65_536}, {"normalized_chunking": 9}, {"seed": -1},
])
def test_a_store_config_with_chunker_settings_fastcdc_cannot_use_is_refused_on_open(tmp_path: Path, chunker: dict):
    """Settings FastCDC would reject are named when the store is opened, not as a crash in the first add."""
    store = open_store(str(tmp_path / "s"))
    config = msgspec.to_builtins(load_config(store, create=True))
    config["chunker"].update(chunker)
    store.delete(CONFIG_KEY)
    store.put_create(CONFIG_KEY, msgspec.json.encode(config))
    with pytest.raises(IntegrityError, match="config.json"):
        ChunkStore.open(open_store(str(tmp_path / "s")))


# -- pack format ----------------------------------------------------------------------------------------

entries_strategy = st.lists(
    st.tuples(st.binary(min_size=16, max_size=16).map(bytes.hex), st.integers(0, 2**63 - 1),
              st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.sampled_from([codec.RAW, codec.ZSTD])),
    max_size=40)


@settings(max_examples=50, deadline=None)
@given(entries=entries_strategy)
def test_footer_round_trip(entries):
    """encode_footer → decode_footer gives back every entry, with the pack id = xxh3-128 of the footer."""
    footer = encode_footer(entries)
    pack_id = footer_id(footer)
    assert pack_id == xxhash.xxh3_128_hexdigest(footer)
    refs = list(decode_footer(footer, pack_id))
    assert [(r.id, r.offset, r.length, r.size, r.codec) for r in refs] == entries
    assert all(r.pack == pack_id for r in refs)


@settings(max_examples=50, deadline=None)
@given(payloads=st.lists(st.binary(max_size=300), max_size=10))
def test_split_pack_reads_a_whole_pack(payloads):
    """A pack (payloads, footer, trailer) is self-describing: split_pack finds every chunk by offset."""
    body, entries = b"", []
    for p in payloads:
        entries.append((chunk_id(p), len(body), len(p), len(p), codec.RAW))
        body += p
    footer = encode_footer(entries)
    pack = body + footer + TRAILER.pack(len(footer), TRAILER_MAGIC)
    refs = split_pack(pack, footer_id(footer))
    assert [pack[r.offset:r.offset + r.length] for r in refs] == payloads


@settings(max_examples=50, deadline=None)
@given(entries=entries_strategy.filter(bool), data=st.data())
def test_damaged_footer_is_an_integrity_error(entries, data):
    """Flipping any byte of a footer (or an index segment) is detected against the pack id."""
    footer = bytearray(encode_footer(entries))
    pack_id = footer_id(bytes(footer))
    at = data.draw(st.integers(0, len(footer) - 1))
    footer[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(IntegrityError):
        list(decode_footer(bytes(footer), pack_id))


def test_bad_trailer_and_truncated_pack_are_integrity_errors():
    """A pack with a wrong trailer magic, an impossible footer length or fewer bytes than a trailer is refused."""
    footer = encode_footer([(chunk_id(b"x"), 0, 1, 1, codec.RAW)])
    pid = footer_id(footer)
    good = b"x" + footer + TRAILER.pack(len(footer), TRAILER_MAGIC)
    assert len(split_pack(good, pid)) == 1
    with pytest.raises(IntegrityError):
        split_pack(good[:-1] + b"\x02", pid)
    with pytest.raises(IntegrityError):
        split_pack(b"x" + footer + TRAILER.pack(10**6, TRAILER_MAGIC), pid)
    with pytest.raises(IntegrityError):
        split_pack(good[-5:], pid)
    with pytest.raises(IntegrityError):
        split_pack(good[:1] + good[2:], pid)  # one footer byte missing


def test_footer_with_another_format_version_is_refused():
    """A footer written by a future pack format is refused even when its id matches."""
    footer = bytearray(encode_footer([]))
    footer[8] = 2  # format_version u16 little-endian, right after the 8-byte magic
    with pytest.raises(IntegrityError, match="format_version"):
        list(decode_footer(bytes(footer), footer_id(bytes(footer))))


# -- verified reads -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["raw", "zstd"])
def test_a_flipped_byte_in_a_stored_chunk_is_an_integrity_error(tmp_path: Path, kind: str):
    """Every read re-hashes: one flipped byte inside a chunk's payload in its pack raises IntegrityError."""
    cs = make_chunk_store(tmp_path / "store")
    data = random_bytes(8, 300_000) if kind == "raw" else compressible_bytes(8, 300_000)
    item, _ = ingest_bytes(cs, data, tmp_path)
    victim = item.chunks[len(item.chunks) // 2]
    assert victim.codec == (codec.RAW if kind == "raw" else codec.ZSTD)
    pack_file = tmp_path / "store" / pack_key(victim.pack)
    blob = bytearray(pack_file.read_bytes())
    blob[victim.offset + victim.length // 2] ^= 0x55
    pack_file.chmod(0o644)
    pack_file.write_bytes(bytes(blob))
    fresh = ChunkStore.open(open_store(str(tmp_path / "store")))
    with pytest.raises(IntegrityError):
        read_back(fresh, item.chunks)
    # Chunks before the damaged one still verify.
    assert read_back(fresh, item.chunks[:1]) == data[:item.chunks[0].size]


def test_a_zstd_payload_whose_raw_size_is_understated_is_refused():
    """verify_chunk refuses a frame that inflates beyond the recorded raw length."""
    data = b"A" * 100_000
    codec_id, payload = codec.encode(data, 3)
    assert codec_id == codec.ZSTD
    honest = ChunkRef(chunk_id(data), "p" * 32, 0, len(payload), len(data), codec_id)
    assert verify_chunk(honest, bytes(payload)) == data
    lying = ChunkRef(chunk_id(data), "p" * 32, 0, len(payload), 1000, codec_id)
    with pytest.raises(IntegrityError):
        verify_chunk(lying, bytes(payload))


@pytest.mark.parametrize("content_size_in_header", [True, False])
def test_decode_never_produces_more_than_the_recorded_raw_size(content_size_in_header: bool):
    """The recorded raw length is a hard bound on decompression (BRIEF §4.6): a frame that would inflate
    1 MiB is refused when the manifest says 1000 bytes, whether or not its header declares the size."""
    data = b"\0" * MiB
    frame = zstandard.ZstdCompressor(write_content_size=content_size_in_header).compress(data)
    try:
        out = codec.decode(codec.ZSTD, frame, 1000)
    except IntegrityError:
        return
    assert len(out) <= 1000, f"decode produced {len(out)} bytes for a recorded raw size of 1000"


def test_garbage_zstd_payload_and_unknown_codec_are_integrity_errors():
    """Bytes that are not a zstd frame, and codec numbers this dvx does not know, are IntegrityErrors."""
    with pytest.raises(IntegrityError):
        codec.decode(codec.ZSTD, b"definitely not zstd", 100)
    with pytest.raises(IntegrityError):
        codec.decode(7, b"abc", 3)
