"""Choosing files of a version: by glob, and split into N parts for N workers."""

from __future__ import annotations

import fnmatch
import heapq
from collections.abc import Sequence

import xxhash

from dvx.errors import UsageError
from dvx.manifests.model import FileEntry


def matches_glob(path: str, pattern: str) -> bool:
    """fnmatch on the whole path ('*' crosses '/'); a folder name selects everything under it."""
    pattern = pattern.strip("/")
    return fnmatch.fnmatchcase(path, pattern) or path.startswith(pattern + "/")


def shuffle_key(seed: int, path: str) -> int:
    """A file's place in the order fixed by `seed`: xxh3-64 of "<seed>:<path>" (UTF-8), as an unsigned
    int. Plain arithmetic on the path, so any process, platform or Python version gets the same order."""
    return xxhash.xxh3_64_intdigest(f"{seed}:{path}".encode("utf-8", "surrogateescape"))


def shuffled(files: Sequence[FileEntry], seed: int) -> list[FileEntry]:
    """`files` in the pseudo-random order fixed by `seed` (ties, which need a hash collision, by path)."""
    return sorted(files, key=lambda f: (shuffle_key(seed, f.path), f.path))


def split_parts(files: Sequence[FileEntry], count: int, seed: int | None = None) -> list[list[FileEntry]]:
    """Deterministic split balanced by bytes; every file lands in exactly one part.

    Without a seed: largest files first, each to the lightest part (ties broken by part number), and
    each part sorted by path. With a seed: the files in that seed's shuffled order, each to the part
    with the fewest bytes so far (same tie-break), each part kept in the shuffled order. Every part is
    then within one largest file of the others in bytes, and a different seed gives a different split."""
    parts: list[list[FileEntry]] = [[] for _ in range(count)]
    heap = [(0, i) for i in range(count)]
    order = sorted(files, key=lambda f: (-f.size, f.path)) if seed is None else shuffled(files, seed)
    for entry in order:
        load, index = heapq.heappop(heap)
        parts[index].append(entry)
        heapq.heappush(heap, (load + max(entry.size, 1), index))
    if seed is not None:
        return parts
    return [sorted(p, key=lambda f: f.path) for p in parts]


def parse_part(text: str) -> tuple[int, int]:
    """'I/N' with 0 <= I < N (I is a 0-based worker rank)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"invalid part {text!r}: use I/N, e.g. 0/4 for the first of four workers") from None
    check_part(index, count)
    return index, count


def check_part(index: int, count: int) -> None:
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"invalid part {index}/{count}: need 0 <= I < N (I is the 0-based worker rank)")


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        try:
            seed = int(str(seed).strip())
        except ValueError:
            raise UsageError(f"invalid shuffle seed {seed!r}: use a whole number, e.g. the epoch") from None
    return seed


def select_files(files: Sequence[FileEntry], globs: Sequence[str] = (),
                 part: tuple[int, int] | None = None, shuffle_seed: int | None = None) -> list[FileEntry]:
    """Files matching `globs` (all without), then worker part[0]'s share of part[1] parts.

    Without `shuffle_seed` the result is sorted by path (the split is the historical one). With it,
    the split depends on the seed and the result comes in that seed's shuffled order."""
    chosen = [f for f in files if not globs or any(matches_glob(f.path, g) for g in globs)]
    seed = None if shuffle_seed is None else check_seed(shuffle_seed)
    if part is not None:
        check_part(*part)
        chosen = split_parts(chosen, part[1], seed)[part[0]]
    elif seed is not None:
        chosen = shuffled(chosen, seed)
    return chosen
