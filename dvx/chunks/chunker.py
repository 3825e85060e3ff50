"""Content-defined chunking (FastCDC 2020 via pyfastcdc) over files read in bounded blocks."""

from __future__ import annotations

import functools
import mmap
import os
from collections.abc import Callable, Iterator

import msgspec

BLOCK_SIZE = 4 << 20


def _buffer(size: int):
    """A writable buffer of `size` bytes. Large ones are private anonymous mappings: the kernel supplies
    zeroed pages while `readinto` fills them, outside the GIL, instead of Python zeroing them under it.
    (A shared mapping would be shmem-backed, and copying out of shmem pages into the page cache cost
    a third of all CPU time of a 1 GiB save.)"""
    if size < 1 << 20 or not hasattr(mmap, "MAP_PRIVATE"):
        return bytearray(size)
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):  # 2 MiB pages: 512× fewer page faults while readinto fills it
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return buffer


class ReadBuffers:
    """One thread's ring of block buffers, reused from block to block and file to file: a fresh buffer
    per block cost more CPU than reading the data into it (the kernel zeroes every new page).

    A chunk cut from a buffer stays valid until the ring comes back to that buffer. A caller that keeps
    chunks longer (queued for writing) calls `hold(token)` while the buffer is in use; before refilling
    it, the ring calls `wait_for(token)` for the last token held, which must return only when every
    chunk held under that buffer's tokens is no longer needed (tokens are released in order)."""

    def __init__(self, count: int = 1, wait_for: Callable[[object], None] | None = None) -> None:
        self._buffers: list = [None] * count
        self._holds: list[object] = [None] * count
        self._next = 0
        self._current: int | None = None
        self._wait_for = wait_for

    def take(self, size: int):
        slot = self._next
        self._next = (slot + 1) % len(self._buffers)
        token, self._holds[slot] = self._holds[slot], None
        if token is not None and self._wait_for is not None:
            self._wait_for(token)
        buffer = self._buffers[slot]
        if buffer is None or len(buffer) < size:
            self._buffers[slot] = None  # let the smaller one go before the larger one is mapped
            buffer = self._buffers[slot] = _buffer(size)
        self._current = slot
        return buffer

    def hold(self, token: object) -> None:
        """Chunks just cut from the buffer in use stay needed until `token` is released."""
        if self._current is not None:
            self._holds[self._current] = token

    def release_current(self) -> None:
        self._current = None


class ChunkerParams(msgspec.Struct, frozen=True, kw_only=True):
    """Fixed per store (in its config): changing them would break dedup against existing data."""

    algorithm: str = "fastcdc-2020"
    # Normalized chunking level 2 keeps sizes close to the average, which lets the cutter skip the first
    # 32 KiB of every chunk: a quarter less cutting CPU than level 1 with 16 KiB, for the same dedup on
    # the benchmarks' edits (docs/benchmarks.md). Stores made before keep the settings they were made with.
    min_size: int = 32 << 10
    avg_size: int = 64 << 10
    max_size: int = 256 << 10
    normalized_chunking: int = 2
    seed: int = 0

    def problem(self) -> str | None:
        """Why FastCDC 2020 (pyfastcdc) cannot cut with these settings, or None."""
        if self.algorithm != "fastcdc-2020":
            return f"unsupported chunker {self.algorithm}"
        if not (64 <= self.min_size <= 1 << 20 and 256 <= self.avg_size <= 4 << 20
                and 1024 <= self.max_size <= 16 << 20 and self.min_size <= self.avg_size <= self.max_size):
            return (f"chunk sizes min {self.min_size}, avg {self.avg_size}, max {self.max_size} are out of "
                    "FastCDC's bounds")
        if not 0 <= self.normalized_chunking <= 3 or self.seed < 0:
            return f"normalized_chunking {self.normalized_chunking} or seed {self.seed} is out of bounds"
        return None


class Chunker:
    """Cuts buffers and files into content-defined chunks with the store's FastCDC parameters."""

    def __init__(self, params: ChunkerParams) -> None:
        self.params = params
        problem = params.problem()
        if problem:
            raise ValueError(problem)

    @functools.cached_property
    def _cdc(self):
        """The cutter, made on first use: commands that cut nothing don't load pyfastcdc."""
        from pyfastcdc import FastCDC

        p = self.params
        return FastCDC(p.avg_size, min_size=p.min_size, max_size=p.max_size,
                       normalized_chunking=p.normalized_chunking, seed=p.seed)

    def split_buffer(self, data: bytes | memoryview) -> Iterator[memoryview]:
        for chunk in self._cdc.cut_buf(data):
            yield chunk.data

    def split_path(self, path: str, block_size: int | None = None, reuse: ReadBuffers | None = None,
                   before_reading: Callable[[int], None] | None = None) -> Iterator[memoryview]:
        """Chunks of the file at `path`; a small file is read in one call (the common case). With
        `reuse`, blocks of a large file are read into its buffers (see ReadBuffers). `before_reading`
        gets the file's size once it is open."""
        block_size = block_size or BLOCK_SIZE
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if before_reading:
                before_reading(size)
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
                yield from self.split_file(file, block_size, reuse)
        finally:
            os.close(fd)

    def split_file(self, file, block_size: int | None = None,
                   reuse: ReadBuffers | None = None) -> Iterator[memoryview]:
        """Chunks of an open binary file, identical to chunking it whole, holding ~one block in memory.

        FastCDC restarts its rolling hash at every cut, so re-cutting from the start of a block's last
        (possibly truncated) chunk gives the same boundaries as one pass over the whole file.
        """
        block_size = block_size or BLOCK_SIZE
        remaining = os.fstat(file.fileno()).st_size
        tail = b""
        try:
            while True:
                # Size the buffer to what is left (+1 to notice a file that grew): small files cost
                # small buffers, and views into them may stay alive in the hashing batches.
                wanted = min(block_size, remaining + 1) if remaining > 0 else block_size
                capacity = len(tail) + wanted
                buffer = memoryview(reuse.take(capacity) if reuse else _buffer(capacity))[:capacity]
                buffer[: len(tail)] = tail
                filled = len(tail)
                while filled < capacity:
                    read = file.readinto(buffer[filled:])
                    if not read:
                        break
                    filled += read
                at_end = filled < capacity
                remaining -= filled - len(tail)
                if not filled:
                    return
                # One chunk behind the cutter: each chunk is handed on right after the cutter has read
                # it, while it is still in the CPU's cache.
                cuts = self._cdc.cut_buf(buffer[:filled])
                previous = next(cuts)
                for chunk in cuts:
                    yield previous.data
                    previous = chunk
                if at_end:
                    yield previous.data
                    return
                tail = bytes(previous.data)
        finally:
            if reuse:
                reuse.release_current()
