#!/usr/bin/env python3
"""Streaming reads through dvx:// on a 1 GiB random file committed to a local store.

    python benchmarks/streaming.py                  # 1 GiB, 3 repeats, medians
    python benchmarks/streaming.py --size 256MiB --repeat 5

Measures, each as a whole process (Python start-up and imports included) and as the read loop alone:
  - the bytes fetched from the store for one 1 MiB read from the middle of the file (empty chunk cache),
    and for the same read again (warm chunk cache: no pack bytes);
  - a sequential read of the whole file through fsspec.open("dvx://…") in 4 MiB reads: with an empty
    chunk cache (cold: packs are read, and the cache is filled behind the read as fast as its disk
    allows), again right after (what the cold read left cached), and with every chunk cached beforehand;
  - `cat file > /dev/null` of the original file, the baseline (the page cache is warm for both);
  - `dvx get -o DIR` with empty caches, for reference.
Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import write_random_file  # noqa: E402
from harness import format_bytes, log, median, remove_tree, run_command  # noqa: E402
from tools import Executable, byte_compile_dvx  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30
NAME = "bench/stream"

# Runs in a fresh interpreter: counts the bytes that reach the store (a proxy around the Store that
# dvx's Repo opens), reads through dvx:// and prints JSON.
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import fsspec
import dvx.api.repo as repo_module

log = []
real_open = repo_module.open_store

class Counting:
    def __init__(self, inner):
        self._inner = inner
    def read(self, key):
        data = self._inner.read(key)
        log.append((key, len(data)))
        return data
    def read_ranges(self, key, ranges):
        blobs = self._inner.read_ranges(key, ranges)
        log.append((key, sum(map(len, blobs))))
        return blobs
    def read_versioned(self, key):
        data, token = self._inner.read_versioned(key)
        log.append((key, len(data or b"")))
        return data, token
    def __getattr__(self, name):
        return getattr(self._inner, name)

repo_module.open_store = lambda *a, **k: Counting(real_open(*a, **k))
mode, url = sys.argv[1], sys.argv[2]
start = time.perf_counter()
read = 0
with fsspec.open(url, "rb") as f:
    if mode == "range":
        f.seek(f.size // 2)
        read = len(f.read(1 << 20))
    else:
        while block := f.read(4 << 20):
            read += len(block)
seconds = time.perf_counter() - start
print(json.dumps({"read": read, "seconds": seconds, "total": time.perf_counter() - t0,
                  "fetched": sum(n for _, n in log),
                  "packs": sum(n for k, n in log if k.startswith("packs/")),
                  "manifests": sum(n for k, n in log if k.startswith("manifests/")),
                  "requests": len(log)}))
"""


# Fills the chunk cache with every chunk of the file, synchronously (not timed).
PREFILL = r"""
import sys
from dvx.api import Repo
from dvx.api.reading import resolve
repo = Repo()
chunk_store, cache = repo.chunk_store(), repo.chunk_cache()
for entry in resolve(repo, sys.argv[1]).manifest.files:
    for ref, data in zip(entry.chunks, chunk_store.read_chunks(entry.chunks, fill=False)):
        cache.put(ref.id, data)
"""


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([KMG]i?B)?", text.strip(), re.I)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}")
    unit = (match.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(match.group(1)) * {"": 1, "K": 1 << 10, "M": MiB, "G": GiB}[unit]


def dvx_executable() -> str:
    beside = Path(sys.executable).with_name("dvx")
    return str(beside) if beside.exists() else "dvx"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=GiB, help="file size (default 1GiB)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)

    byte_compile_dvx(Executable("dvx", dvx_executable()))
    root = Path(tempfile.mkdtemp(prefix="dvx-stream-bench-", dir=args.workdir))
    try:
        return run(root, args)
    finally:
        remove_tree(root)


def run(root: Path, args: argparse.Namespace) -> int:
    source = root / "source"
    log(f"writing {format_bytes(args.size)} of random data")
    write_random_file(source / "blob.bin", args.size)
    base_env = {**os.environ, "DVX_STORE": str(root / "store"), "DVX_STATE_DIR": str(root / "state"),
                "DVX_CACHE_DIR": str(root / "cache-commit"), "PYTHONDONTWRITEBYTECODE": "1"}
    base_env.pop("DVX_CHUNK_CACHE_MAX_SIZE", None)
    dvx = dvx_executable()
    log("committing it to a local store")
    run_command([dvx, "dataset", "create", NAME], cwd=root, env=base_env)
    run_command([dvx, "dataset", "add", str(source)], cwd=root, env=base_env)
    run_command([dvx, "dataset", "commit", "-m", "bench"], cwd=root, env=base_env)
    url = f"dvx://{NAME}@v1/blob.bin"

    def child(mode: str, cache: Path) -> tuple[float, dict]:
        env = {**base_env, "DVX_CACHE_DIR": str(cache)}
        result = run_command([sys.executable, "-c", CHILD, mode, url], cwd=root, env=env)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        expected = min(MiB, args.size - args.size // 2) if mode == "range" else args.size
        if report["read"] != expected:
            raise RuntimeError(f"{mode} read {report['read']} bytes, expected {expected}")
        return result.seconds, report

    rows: dict[str, list[tuple[float, dict]]] = {k: [] for k in ("range-cold", "range-warm", "seq-cold", "seq-warm",
                                                                   "seq-full", "cat", "get")}
    for repeat in range(1, args.repeat + 1):
        cache = root / f"cache-{repeat}"
        log(f"repeat {repeat}/{args.repeat}: 1 MiB from the middle, empty chunk cache")
        rows["range-cold"].append(child("range", cache))
        log(f"repeat {repeat}/{args.repeat}: the same read, warm chunk cache")
        rows["range-warm"].append(child("range", cache))
        remove_tree(cache)
        log(f"repeat {repeat}/{args.repeat}: sequential dvx:// read, empty chunk cache")
        rows["seq-cold"].append(child("seq", cache))
        log(f"repeat {repeat}/{args.repeat}: sequential dvx:// read, warm chunk cache")
        rows["seq-warm"].append(child("seq", cache))
        log(f"repeat {repeat}/{args.repeat}: sequential dvx:// read, every chunk cached beforehand")
        run_command([sys.executable, "-c", PREFILL, f"{NAME}@v1"], cwd=root, env={**base_env, "DVX_CACHE_DIR": str(cache)})
        rows["seq-full"].append(child("seq", cache))
        remove_tree(cache)
        log(f"repeat {repeat}/{args.repeat}: cat > /dev/null")
        result = run_command(["sh", "-c", f"cat '{source / 'blob.bin'}' > /dev/null"], cwd=root)
        rows["cat"].append((result.seconds, {}))
        log(f"repeat {repeat}/{args.repeat}: dvx get -o, empty caches")
        out = root / f"get-{repeat}"
        result = run_command([dvx, "get", f"{NAME}@v1", "-o", str(out)], cwd=root,
                             env={**base_env, "DVX_CACHE_DIR": str(cache)})
        rows["get"].append((result.seconds, {}))
        remove_tree(out)
        remove_tree(cache)

    print(report(rows, args))
    return 0


def report(rows: dict[str, list[tuple[float, dict]]], args: argparse.Namespace) -> str:
    size = args.size
    cat = median([s for s, _ in rows["cat"]])

    def rate(seconds: float) -> str:
        return f"{size / seconds / 1e6:,.0f} MB/s"

    lines = [f"dvx streaming benchmark: {format_bytes(size)} random file, local store, "
             f"{args.repeat} repeats, medians (whole process; 'loop' = the read loop alone)", ""]
    for key, label in (("range-cold", "1 MiB read from the middle, empty chunk cache"),
                       ("range-warm", "the same read again, warm chunk cache")):
        samples = rows[key]
        lines.append(f"{label}:")
        lines.append(f"    fetched from the store {format_bytes(median([r['fetched'] for _, r in samples]))}"
                     f" in {median([r['requests'] for _, r in samples]):.0f} reads"
                     f" (pack bytes {format_bytes(median([r['packs'] for _, r in samples]))},"
                     f" manifest {format_bytes(median([r['manifests'] for _, r in samples]))});"
                     f" {median([s for s, _ in samples]):.2f} s process,"
                     f" {median([r['seconds'] for _, r in samples]) * 1000:.1f} ms read")
    lines.append("")
    header = f"{'sequential read of the whole file':44} {'process':>9} {'rate':>11} {'vs cat':>7} {'loop':>9} {'loop rate':>11}"
    lines.append(header)
    for key, label in (("cat", "cat file > /dev/null (baseline)"), ("seq-cold", "dvx:// 4 MiB reads, empty chunk cache"),
                       ("seq-warm", "dvx:// 4 MiB reads, after the cold read"),
                       ("seq-full", "dvx:// 4 MiB reads, every chunk cached"), ("get", "dvx get -o DIR, empty caches")):
        samples = rows[key]
        seconds = median([s for s, _ in samples])
        loop = median([r["seconds"] for _, r in samples]) if samples and samples[0][1] else None
        lines.append(f"{label:44} {seconds:8.2f}s {rate(seconds):>11} {seconds / cat:6.2f}x "
                     + (f"{loop:8.2f}s {rate(loop):>11}" if loop else f"{'':>9} {'':>11}"))
    cold = rows["seq-cold"]
    lines.append("")
    lines.append(f"pack bytes read by the cold sequential read: {format_bytes(median([r['packs'] for _, r in cold]))}; "
                 f"by the one after it: {format_bytes(median([r['packs'] for _, r in rows['seq-warm']]))} "
                 "(the cache takes what its disk can write behind the first read); "
                 f"with every chunk cached: {format_bytes(median([r['packs'] for _, r in rows['seq-full']]))}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
