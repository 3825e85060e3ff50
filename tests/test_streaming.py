"""Streaming reads: what a ranged read fetches from the store, the local chunk cache (shared by dvx://,
dvx.open and dvx get), and sharding a version's files across workers (dvx.files / dvx get --part with a
shuffle seed)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import fsspec
import pytest
import xxhash

import dvx
import dvx.api.repo
from conftest import read_tree, run_dvx, write_tree
from dvx.api import Repo
from dvx.chunks.cache import ChunkCache
from dvx.fsspec_impl import DvxFileSystem

MiB = 1 << 20


def rand(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def commit_tree(name: str, files: dict[str, bytes | str], folder: Path, message: str = "test") -> dvx.Version:
    write_tree(folder, files)
    ds = dvx.Dataset.create(name)
    ds.add(folder)
    return ds.commit(message).version


def flush_chunk_cache() -> None:
    """Wait for the chunk cache's background writer (reads hand chunks to it and return)."""
    cache = Repo().chunk_cache()
    assert cache is not None and cache.flush(timeout=60)


def pack_bytes(log: list[tuple[str, int]]) -> int:
    return sum(n for key, n in log if key.startswith("packs/"))


def total_bytes(log: list[tuple[str, int]]) -> int:
    return sum(n for _key, n in log)


# -- what a ranged read costs ------------------------------------------------------------------------------

def test_ranged_read_fetches_only_the_covering_chunks(tmp_path, store_reads, isolated):
    """1 MiB from the middle of a 64 MiB file fetches at most 3 MiB (manifest and refs included); the same
    read again, from a new filesystem and file, fetches no pack bytes at all (local chunk cache)."""
    data = rand(7, 64 * MiB)
    commit_tree("big", {"blob.bin": data}, tmp_path / "src")
    store_reads.clear()
    middle = 31 * MiB + 12345

    with fsspec.open("dvx://big@v1/blob.bin", "rb") as f:
        f.seek(middle)
        assert f.read(MiB) == data[middle:middle + MiB]
    assert total_bytes(store_reads) <= 3 * MiB, store_reads
    assert MiB <= pack_bytes(store_reads) <= 2 * MiB
    assert any(key.startswith("manifests/") for key, _ in store_reads)

    store_reads.clear()
    DvxFileSystem.clear_instance_cache()
    with fsspec.open("dvx://big@v1/blob.bin", "rb") as f:
        f.seek(middle)
        assert f.read(MiB) == data[middle:middle + MiB]
    assert pack_bytes(store_reads) == 0, store_reads

    store_reads.clear()
    assert fsspec.filesystem("dvx").cat_file("big@v1/blob.bin", 10 * MiB, 10 * MiB + 1000) == \
        data[10 * MiB:10 * MiB + 1000]
    assert 0 < pack_bytes(store_reads) <= 2 * 256 * 1024 + 4096  # at most the two chunks around it

    flush_chunk_cache()
    cached = sum(p.stat().st_size for p in (isolated["cache"] / "chunks").rglob("*") if p.is_file())
    assert MiB <= cached <= 2 * MiB


def test_sequential_read_streams_whole_file(tmp_path, store_reads):
    """Reading a file front to back in small pieces returns exactly its bytes, reads every pack byte once
    (read-ahead, no re-reads), and leaves every chunk in the cache for the next reader."""
    data = rand(8, 6 * MiB + 333)
    commit_tree("seq", {"f.bin": data}, tmp_path / "src")
    store_reads.clear()
    out = bytearray()
    with fsspec.open("dvx://seq@v1/f.bin", "rb") as f:
        while piece := f.read(100_000):
            out += piece
    assert bytes(out) == data
    assert pack_bytes(store_reads) == len(data)  # random data is stored raw: pack bytes = file bytes

    store_reads.clear()
    with dvx.open("seq@v1/f.bin") as f:
        assert f.read() == data
    assert pack_bytes(store_reads) == 0


def test_get_reads_no_pack_when_every_chunk_is_cached(tmp_path, store_reads):
    """dvx get uses the chunk cache: after a streaming read of every file, `get` touches no pack."""
    files = {"a.bin": rand(1, 3 * MiB), "dir/b.bin": rand(2, 200_000), "c.txt": "small", "empty": b""}
    commit_tree("cached", files, tmp_path / "src")
    fs = fsspec.filesystem("dvx")
    for path in files:
        fs.cat(f"cached@v1/{path}")

    store_reads.clear()
    dvx.get("cached@v1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    assert pack_bytes(store_reads) == 0 and not any(k.startswith("packs/") for k, _ in store_reads)
    assert any(k.startswith("manifests/") for k, _ in store_reads)


def test_get_fills_the_cache_only_when_asked(tmp_path, isolated, monkeypatch):
    """By default `get` reads from the chunk cache but doesn't fill it (its copy is the local copy);
    DVX_CHUNK_CACHE_GET=1 makes it fill too."""
    commit_tree("g", {"a.bin": rand(3, MiB)}, tmp_path / "src")
    chunks = isolated["cache"] / "chunks"
    dvx.get("g@v1", tmp_path / "one")
    assert not any(p.is_file() for p in chunks.rglob("*")) if chunks.exists() else True
    monkeypatch.setenv("DVX_CHUNK_CACHE_GET", "1")
    dvx.get("g@v1", tmp_path / "two")
    flush_chunk_cache()
    assert sum(p.stat().st_size for p in chunks.rglob("*") if p.is_file()) == MiB


def test_cache_can_be_turned_off(tmp_path, isolated, monkeypatch, store_reads):
    monkeypatch.setenv("DVX_CHUNK_CACHE_MAX_SIZE", "0")
    data = rand(4, 2 * MiB)
    commit_tree("off", {"f.bin": data}, tmp_path / "src")
    for _ in range(2):
        store_reads.clear()
        assert fsspec.filesystem("dvx", skip_instance_cache=True).cat_file("off@v1/f.bin", 0, MiB) == data[:MiB]
        assert pack_bytes(store_reads) >= MiB
    assert not (isolated["cache"] / "chunks").exists()
    assert Repo().chunk_cache() is None


def test_bad_cache_setting_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("DVX_CHUNK_CACHE_MAX_SIZE", "lots")
    with pytest.raises(dvx.UsageError):
        Repo()
    monkeypatch.delenv("DVX_CHUNK_CACHE_MAX_SIZE")
    monkeypatch.setenv("DVX_CHUNK_CACHE_GET", "sometimes")
    with pytest.raises(dvx.UsageError):
        Repo()


def test_damaged_cache_file_is_refetched(tmp_path, isolated, store_reads):
    data = rand(5, 300_000)
    commit_tree("dmg", {"f.bin": data}, tmp_path / "src")
    fs = fsspec.filesystem("dvx")
    assert fs.cat("dmg@v1/f.bin") == data
    flush_chunk_cache()
    files = sorted(p for p in (isolated["cache"] / "chunks").rglob("*") if p.is_file())
    assert files
    victim = files[0]
    victim.write_bytes(b"\0" * victim.stat().st_size)  # same size, wrong content
    files[-1].write_bytes(b"short")
    store_reads.clear()
    assert fsspec.filesystem("dvx", skip_instance_cache=True).cat("dmg@v1/f.bin") == data
    assert 0 < pack_bytes(store_reads) < len(data)
    flush_chunk_cache()
    assert xxhash.xxh3_128_hexdigest(victim.read_bytes()) == victim.name  # replaced by the good chunk


# -- the chunk cache itself -----------------------------------------------------------------------------------

def _chunk(seed: int, size: int = 1000) -> tuple[str, bytes]:
    data = rand(seed, size)
    return xxhash.xxh3_128_hexdigest(data), data


def test_chunk_cache_round_trip_and_verification(tmp_path):
    cache = ChunkCache(tmp_path / "chunks", 10 * MiB)
    cid, data = _chunk(1)
    assert not cache.available() and cache.get(cid, len(data)) is None
    cache.put(cid, data)
    assert cache.available() and cache.contains(cid)
    assert cache.get(cid, len(data)) == data
    assert cache.get(cid, len(data) + 1) is None and not cache.contains(cid)  # wrong size: dropped
    cache.put(cid, data)
    cache.path(cid).write_bytes(b"x" * len(data))
    assert cache.get(cid, len(data)) is None and not cache.contains(cid)  # wrong content: dropped
    assert not list((tmp_path / "chunks" / ".tmp").iterdir())


def test_chunk_cache_evicts_least_recently_used(tmp_path):
    cache = ChunkCache(tmp_path / "chunks", 10_000)
    chunks = [_chunk(i) for i in range(9)]
    now = time.time()
    for age, (cid, data) in enumerate(chunks):
        cache.put(cid, data)
        os.utime(cache.path(cid), (now - 10_000 + age * 100, now - 10_000 + age * 100))
    assert cache.get(chunks[0][0], 1000) == chunks[0][1]  # a hit refreshes the oldest one
    for seed in (9, 10, 11):  # 12 000 bytes: over the limit
        cache.put(*_chunk(seed))
    cache.evict()
    total, _files = cache.usage()
    assert total <= 9_000
    assert cache.contains(chunks[0][0])  # recently used
    assert not cache.contains(chunks[1][0]) and not cache.contains(chunks[2][0])  # the oldest went first
    assert cache.contains(_chunk(11)[0])


def test_chunk_cache_bounds_itself_while_filling(tmp_path):
    cache = ChunkCache(tmp_path / "chunks", 2 * MiB)
    cache._check_every = 256 * 1024  # check often, to keep the test small
    for seed in range(60):
        cache.put(*_chunk(seed, 64 * 1024))
    assert cache.usage()[0] <= 2 * MiB + 256 * 1024


def test_chunk_cache_leftover_temp_files_are_cleaned(tmp_path):
    cache = ChunkCache(tmp_path / "chunks", MiB)
    cache.put(*_chunk(1))
    stale = tmp_path / "chunks" / ".tmp" / "x.partial"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = tmp_path / "chunks" / ".tmp" / "y.partial"
    fresh.write_bytes(b"being written")
    assert cache.usage()[0] == 1000
    assert not stale.exists() and fresh.exists()


def test_writes_happen_behind_the_reader(tmp_path, monkeypatch):
    """put_later returns at once; a waiting chunk is served from memory; past MAX_PENDING bytes waiting,
    chunks are not cached rather than slowing the reader; flush() waits for the writer."""
    import dvx.chunks.cache as cache_module

    monkeypatch.setattr(cache_module, "MAX_PENDING", 2500)
    gate = threading.Event()
    real_put = ChunkCache.put

    def slow_put(self, cid, data):
        gate.wait(30)
        real_put(self, cid, data)

    monkeypatch.setattr(ChunkCache, "put", slow_put)
    cache = ChunkCache(tmp_path / "chunks", MiB)
    (a, a_data), (b, b_data), (c, c_data) = _chunk(1), _chunk(2), _chunk(3)
    assert cache.put_later(a, a_data) and cache.put_later(b, b_data)
    assert not cache.put_later(c, c_data)  # 3000 bytes would be waiting: not cached
    assert cache.contains(a) and cache.get(a, 1000) == a_data and cache.present([a, b, c]) == {a, b}
    assert not cache.path(a).exists() and not cache.flush(timeout=0.2)
    gate.set()
    assert cache.flush(timeout=30)
    assert cache.path(a).read_bytes() == a_data and cache.path(b).exists() and not cache.contains(c)
    assert cache.present([a, b, c] + [_chunk(i)[0] for i in range(10, 400)]) == {a, b}  # the listing way


def test_read_plan_mixes_cache_and_store_in_order():
    """Cached runs are read from the cache, the rest from the store, in file order; a short cached run
    between store chunks is read from the store with them rather than splitting that read."""
    from dvx.chunks.pack import ChunkRef
    from dvx.chunks.store import _plan_reads

    refs = [ChunkRef(f"{i:032x}", "p" * 32, i * 65536, 65536, 65536, 0) for i in range(10)]

    class Cache:
        def present(self, ids):
            return {refs[i].id for i in (0, 1, 4, 7, 8, 9)}

    plan = [(pack, [int(r.id, 16) for r in members]) for pack, members in _plan_reads(refs, Cache())]
    assert plan == [(None, [0, 1]), ("p" * 32, [2, 3, 4, 5, 6]), (None, [7, 8, 9])]


def test_chunk_cache_is_safe_for_concurrent_processes(tmp_path):
    """Several processes filling and reading one cache with the same chunks never see a partial chunk."""
    script = (
        "import random, sys, xxhash\n"
        "from dvx.chunks.cache import ChunkCache\n"
        "cache = ChunkCache(sys.argv[1], 1 << 30)\n"
        "for round in range(3):\n"
        "    for seed in range(40):\n"
        "        data = random.Random(seed).randbytes(200_000)\n"
        "        cid = xxhash.xxh3_128_hexdigest(data)\n"
        "        got = cache.get(cid, len(data))\n"
        "        assert got is None or got == data\n"
        "        cache.put(cid, data) if round % 2 else cache.put_later(cid, data)\n"
        "print('ok')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "chunks")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err
    cache = ChunkCache(tmp_path / "chunks", 1 << 30)
    assert cache.usage()[0] == 40 * 200_000
    assert not list((tmp_path / "chunks" / ".tmp").iterdir())


# -- sharding ----------------------------------------------------------------------------------------------------

@pytest.fixture
def shards(tmp_path) -> dict[str, bytes]:
    files = {f"train/{i:03d}.bin": rand(i, 100 + (i * 37) % 900) for i in range(60)}
    files.update({f"val/{i}.txt": f"v{i}".encode() for i in range(7)})
    commit_tree("shards", files, tmp_path / "src")
    return files


def _parts(n: int, seed: int | None, glob=None) -> list[list[str]]:
    return [[f.path for f in dvx.files("shards@v1", glob=glob, part=(i, n), shuffle_seed=seed)] for i in range(n)]


@pytest.mark.parametrize("n", [1, 3, 8])
def test_every_file_in_exactly_one_part(shards, n):
    for seed in (None, 0, 1, 12345):
        parts = _parts(n, seed)
        flat = [p for part in parts for p in part]
        assert sorted(flat) == sorted(shards) and len(flat) == len(set(flat))
        sizes = [sum(len(shards[p]) for p in part) for part in parts]
        assert max(sizes) - min(sizes) <= max(len(v) for v in shards.values())  # balanced by bytes


def test_split_is_stable_per_seed_and_changes_with_it(shards):
    assert _parts(4, 7) == _parts(4, 7)
    assert _parts(4, 7) != _parts(4, 8)
    assert sorted(map(sorted, _parts(4, 7))) != sorted(map(sorted, _parts(4, 8)))  # not just the order
    # Within a part the files come in the seed's shuffled order; without a seed, sorted by path.
    seeded = _parts(1, 3)[0]
    assert sorted(seeded) == sorted(shards) and seeded != sorted(seeded)
    assert _parts(1, None)[0] == sorted(shards)
    assert [f.path for f in dvx.files("shards@v1", shuffle_seed=3)] == seeded
    assert _parts(3, 5, glob=["val/"]) != _parts(3, 6, glob=["val/"])


def test_no_seed_keeps_the_historical_split(shards):
    """Without a seed the split is the one dvx always made: largest files first to the lightest part."""
    from dvx.manifests.select import split_parts

    files = [type("F", (), {"path": p, "size": len(v)})() for p, v in shards.items()]
    expected = [[f.path for f in part] for part in split_parts(files, 3)]
    assert _parts(3, None) == expected
    order = sorted(files, key=lambda f: (-f.size, f.path))
    assert order[0].path in expected[0] and order[1].path in expected[1] and order[2].path in expected[2]


def test_cli_get_part_with_seed_matches_the_api(shards, tmp_path):
    for seed in (None, 11):
        for i in range(3):
            out = tmp_path / f"part-{seed}-{i}"
            args = ["get", "shards@v1", "--part", f"{i}/3", "-o", str(out), "--json"]
            if seed is not None:
                args += ["--shuffle-seed", str(seed)]
            assert json.loads(run_dvx(*args).stdout)["path"] == str(out)
            got = read_tree(out)
            assert sorted(got) == sorted(_parts(3, seed)[i])
            assert all(got[p] == shards[p] for p in got)
    cached = Path(json.loads(run_dvx("get", "shards@v1", "--part", "1/3", "--shuffle-seed", "11",
                                     "--json").stdout)["path"])
    assert sorted(read_tree(cached)) == sorted(_parts(3, 11)[1])
    plain = Path(json.loads(run_dvx("get", "shards@v1", "--part", "1/3", "--json").stdout)["path"])
    assert plain != cached and sorted(read_tree(plain)) == sorted(_parts(3, None)[1])


def test_seed_without_part_and_bad_seeds(shards):
    proc = run_dvx("get", "shards@v1", "--shuffle-seed", "3", check=False)
    assert proc.returncode == 2 and "--part" in proc.stderr
    proc = run_dvx("get", "shards@v1", "--part", "0/2", "--shuffle-seed", "x", check=False)
    assert proc.returncode == 2
    with pytest.raises(dvx.UsageError):
        dvx.files("shards@v1", part=(0, 2), shuffle_seed="not a number")
    assert [f.path for f in dvx.files("shards@v1", part=(0, 2), shuffle_seed="4")] == _parts(2, 4)[0]
