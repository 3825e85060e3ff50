"""Content-defined chunking (FastCDC 2020 via pyfastcdc) over files read in bounded blocks."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
from pyfastcdc import FastCDC

BLOCK_SIZE = 16 << 20


def _buffer(size: int):
    """A writable buffer of `size` bytes. Large ones are private anonymous mappings: the kernel supplies
    zeroed pages while `readinto` fills them, outside the GIL, instead of Python zeroing 16 MiB under it.
    (A shared mapping would be shmem-backed, and copying out of shmem pages into the page cache cost
    a third of all CPU time of a 1 GiB save.)"""
    if size < 1 << 20 or not hasattr(mmap, "MAP_PRIVATE"):
        return bytearray(size)
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):  # 2 MiB pages: 512× fewer page faults while readinto fills it
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return buffer


class ChunkerParams(msgspec.Struct, frozen=True, kw_only=True):
    """Fixed per store (in its config): changing them would break dedup against existing data."""

    algorithm: str = "fastcdc-2020"
    min_size: int = 16 << 10
    avg_size: int = 64 << 10
    max_size: int = 256 << 10
    normalized_chunking: int = 1
    seed: int = 0


@dataclass
class Chunker:
    params: ChunkerParams

    def __post_init__(self) -> None:
        p = self.params
        if p.algorithm != "fastcdc-2020":
            raise ValueError(f"unsupported chunker {p.algorithm}")
        self._cdc = FastCDC(p.avg_size, min_size=p.min_size, max_size=p.max_size,
                            normalized_chunking=p.normalized_chunking, seed=p.seed)

    def split_buffer(self, data: bytes | memoryview) -> Iterator[memoryview]:
        view = memoryview(data)
        for chunk in self._cdc.cut_buf(view):
            yield view[chunk.offset:chunk.offset + chunk.length]

    def split_path(self, path: str, block_size: int = BLOCK_SIZE) -> Iterator[memoryview]:
        """Chunks of the file at `path`; a small file is read in one call (the common case)."""
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size < block_size:
                data = os.read(fd, size + 1)
                if len(data) == size + 1 or len(data) < size:  # grew or shrank while read: go the long way
                    os.lseek(fd, 0, os.SEEK_SET)
                else:
                    if len(data) <= self.params.min_size:
                        if data:
                            yield memoryview(data)
                    else:
                        yield from self.split_buffer(data)
                    return
            with os.fdopen(os.dup(fd), "rb", buffering=0) as file:
                yield from self.split_file(file, block_size)
        finally:
            os.close(fd)

    def split_file(self, file, block_size: int = BLOCK_SIZE) -> Iterator[memoryview]:
        """Chunks of an open binary file, identical to chunking it whole, holding ~one block in memory.

        FastCDC restarts its rolling hash at every cut, so re-cutting from the start of a block's last
        (possibly truncated) chunk gives the same boundaries as one pass over the whole file.
        """
        remaining = os.fstat(file.fileno()).st_size
        tail = b""
        while True:
            # Size the buffer to what is left (+1 to notice a file that grew): small files cost
            # small buffers, and views into them may stay alive in the hashing batches.
            wanted = min(block_size, remaining + 1) if remaining > 0 else block_size
            buffer = _buffer(len(tail) + wanted)
            buffer[: len(tail)] = tail
            filled = len(tail)
            while filled < len(buffer):
                read = file.readinto(memoryview(buffer)[filled:])
                if not read:
                    break
                filled += read
            at_end = filled < len(buffer)
            remaining -= filled - len(tail)
            view = memoryview(buffer)[:filled]
            if not view:
                return
            cuts = list(self._cdc.cut_buf(view))
            if not at_end:
                last = cuts.pop()
                tail = bytes(view[last.offset:])
            for chunk in cuts:
                yield view[chunk.offset:chunk.offset + chunk.length]
            if at_end:
                return
