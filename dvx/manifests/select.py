"""Choosing files of a version: by glob, and split into N parts for N workers."""

from __future__ import annotations

import fnmatch
import heapq
from collections.abc import Sequence

from dvx.errors import UsageError
from dvx.manifests.model import FileEntry


def matches_glob(path: str, pattern: str) -> bool:
    """fnmatch on the whole path ('*' crosses '/'); a folder name selects everything under it."""
    pattern = pattern.strip("/")
    return fnmatch.fnmatchcase(path, pattern) or path.startswith(pattern + "/")


def split_parts(files: Sequence[FileEntry], count: int) -> list[list[FileEntry]]:
    """Deterministic split balanced by bytes: largest files first, each to the lightest part
    (ties broken by part number). Every file lands in exactly one part."""
    parts: list[list[FileEntry]] = [[] for _ in range(count)]
    heap = [(0, i) for i in range(count)]
    for entry in sorted(files, key=lambda f: (-f.size, f.path)):
        load, index = heapq.heappop(heap)
        parts[index].append(entry)
        heapq.heappush(heap, (load + max(entry.size, 1), index))
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


def select_files(files: Sequence[FileEntry], globs: Sequence[str] = (),
                 part: tuple[int, int] | None = None) -> list[FileEntry]:
    chosen = [f for f in files if not globs or any(matches_glob(f.path, g) for g in globs)]
    if part is not None:
        check_part(*part)
        chosen = split_parts(chosen, part[1])[part[0]]
    return chosen
