"""The local chunk cache: verified raw chunks on local disk, shared by processes, bounded in bytes.

    <root>/<id[0:2]>/<id>      one chunk's raw (decoded) bytes, named by its id (xxh3-128 of those bytes)
    <root>/.tmp/               chunks being written (temp file + rename, so readers never see half a chunk)

Content-addressed, so one cache serves every store (the same id is the same bytes wherever it came
from). Every read re-hashes the bytes and drops a file that doesn't match, so a damaged or truncated
cache file costs a re-fetch, never wrong data. A file's mtime is its last use: hits refresh it (at most
once an hour, so a busy cache isn't rewriting metadata on every read) and eviction deletes the oldest files until the cache is under 90 % of its limit.

Safe for concurrent processes without a lock: files are only ever created by an atomic rename of a
complete file and only deleted whole; a reader that loses a race with eviction sees a miss.

Writing is behind the reader (`put_later`): one background thread per process and cache folder writes
the chunks, so a read never waits for the cache's disk. Chunks still waiting are served from memory.
When more than MAX_PENDING bytes wait (the disk can't keep up with a long sequential read), further
chunks are not cached: the cache never slows a read down. Waiting chunks are written before the
process exits.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import xxhash

_TMP = ".tmp"
_TOUCH_AFTER = 3600.0  # seconds: a hit refreshes the file's mtime only if it is older than this
_TMP_MAX_AGE = 3600.0  # leftovers of an interrupted write older than this are deleted by eviction
_EVICT_TO = 0.9  # eviction stops at this fraction of the limit, so the next writes don't evict again
_LIST_FROM = 256  # present(): from this many ids on, list sub-folders instead of one stat per id
MAX_PENDING = 64 << 20  # bytes waiting to be written, per process and cache folder
_EXIT_FLUSH_SECONDS = 30.0


_HEX32 = re.compile(r"[0-9a-f]{32}")


class ChunkCache:
    """Chunks by id on local disk. `max_bytes` bounds the total; eviction is by oldest mtime."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._added = 0  # bytes this process added since its last size check
        self._check_every = max(64 << 20, max_bytes // 16)

    def path(self, cid: str) -> Path:
        return self.root / cid[:2] / cid

    def available(self) -> bool:
        """False while the cache holds nothing (no folder, nothing waiting): every lookup would miss."""
        return self.root.is_dir() or _writer(self.root, create=False) is not None

    def contains(self, cid: str) -> bool:
        if not _HEX32.fullmatch(cid):
            return False
        writer = _writer(self.root, create=False)
        if writer is not None and writer.pending_data(cid) is not None:
            return True
        return os.path.exists(os.path.join(self.root, cid[:2], cid))

    def present(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` the cache holds: one stat each for a few, one listing per sub-folder for many."""
        writer = _writer(self.root, create=False)
        found = {cid for cid in ids if writer.pending_data(cid) is not None} if writer is not None else set()
        if len(ids) < _LIST_FROM:
            return found | {cid for cid in ids if cid not in found
                            and os.path.exists(os.path.join(self.root, cid[:2], cid))}
        wanted = set(ids)
        for prefix in {cid[:2] for cid in wanted}:
            try:
                names = os.listdir(os.path.join(self.root, prefix))
            except OSError:
                continue
            found.update(wanted.intersection(names))
        return found

    def get(self, cid: str, size: int) -> bytes | None:
        """The chunk's bytes if cached and intact (`size` is its raw length); None otherwise."""
        if not _HEX32.fullmatch(cid):
            return None
        writer = _writer(self.root, create=False)
        if writer is not None:
            data = writer.pending_data(cid)
            if data is not None and len(data) == size:
                return bytes(data)
        path = os.path.join(self.root, cid[:2], cid)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if st.st_size != size:
                data = None
            else:
                data = _read_exactly(fd, size)
                if data is not None and time.time() - st.st_mtime > _TOUCH_AFTER:
                    try:
                        os.utime(path)
                    except OSError:  # read-only cache folder: still usable for reads
                        pass
        except OSError:
            return None
        finally:
            os.close(fd)
        if data is None or xxhash.xxh3_128_hexdigest(data) != cid:
            self._discard(path)
            return None
        return data

    def put_later(self, cid: str, data: bytes | memoryview) -> bool:
        """Queue a verified chunk for the background writer; False if it won't be cached (too much is
        already waiting, or the cache is off)."""
        if self.max_bytes <= 0 or len(data) > self.max_bytes or not _HEX32.fullmatch(cid):
            return False
        return _writer(self.root, create=True).add(self, cid, data)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every chunk this process queued for this folder is written; False on timeout."""
        writer = _writer(self.root, create=False)
        return True if writer is None else writer.flush(timeout)

    def put(self, cid: str, data: bytes | memoryview) -> None:
        """Write a chunk whose id the caller has verified, now. Never raises: a cache that can't be
        written (full disk, read-only folder) only costs speed."""
        if self.max_bytes <= 0 or len(data) > self.max_bytes or not _HEX32.fullmatch(cid):
            return
        folder = os.path.join(self.root, cid[:2])
        target = os.path.join(folder, cid)
        if os.path.exists(target):
            return
        tmp_dir = os.path.join(self.root, _TMP)
        tmp = os.path.join(tmp_dir, f"{cid}.{uuid.uuid4().hex}")
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                os.makedirs(tmp_dir, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            try:
                os.replace(tmp, target)
            except FileNotFoundError:
                os.makedirs(folder, exist_ok=True)
                os.replace(tmp, target)
        except OSError:
            self._discard(tmp)
            return
        with self._lock:
            self._added += len(data)
            due = self._added >= self._check_every
            if due:
                self._added = 0
        if due:
            self.evict()

    def usage(self) -> tuple[int, list[tuple[float, int, str]]]:
        """(total bytes, [(mtime, size, path)]) of the cached chunks; deletes stale temp files."""
        total = 0
        files: list[tuple[float, int, str]] = []
        try:
            folders = list(os.scandir(self.root))
        except OSError:
            return 0, []
        now = time.time()
        for folder in folders:
            if not folder.is_dir(follow_symlinks=False):
                continue
            try:
                entries = list(os.scandir(folder.path))
            except OSError:
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if folder.name == _TMP:
                    if now - st.st_mtime > _TMP_MAX_AGE:
                        self._discard(entry.path)
                    continue
                total += st.st_size
                files.append((st.st_mtime, st.st_size, entry.path))
        return total, files

    def evict(self) -> int:
        """Delete least recently used chunks until the cache is under 90 % of its limit; returns the
        bytes freed."""
        total, files = self.usage()
        if total <= self.max_bytes:
            return 0
        goal = int(self.max_bytes * _EVICT_TO)
        freed = 0
        for _mtime, size, path in sorted(files):
            if total - freed <= goal:
                break
            if self._discard(path):
                freed += size
        return freed

    def clear(self) -> None:
        """Delete every cached chunk."""
        self.flush()
        for _mtime, _size, path in self.usage()[1]:
            self._discard(path)

    @staticmethod
    def _discard(path: str) -> bool:
        try:
            os.unlink(path)
            return True
        except OSError:
            return False


class _Writer:
    """The background writer of one cache folder in this process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: OrderedDict[str, tuple[ChunkCache, bytes | memoryview]] = OrderedDict()
        self._bytes = 0  # waiting or being written
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def pending_data(self, cid: str):
        with self._cond:
            item = self._pending.get(cid)
        return None if item is None else item[1]

    def add(self, cache: ChunkCache, cid: str, data) -> bool:
        with self._cond:
            if cid in self._pending:
                return True
            if self._bytes + len(data) > MAX_PENDING:
                self.dropped += 1
                return False
            self._pending[cid] = (cache, data)
            self._bytes += len(data)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dvx-chunk-cache", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                cid, (cache, data) = next(iter(self._pending.items()))
            try:
                cache.put(cid, data)
            finally:
                with self._cond:
                    self._pending.pop(cid, None)
                    self._bytes -= len(data)
                    self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._bytes == 0, timeout)


_writers: dict[str, _Writer] = {}
_writers_lock = threading.Lock()


def _writer(root: Path, create: bool) -> _Writer | None:
    key = os.fspath(root)
    writer = _writers.get(key)
    if writer is None and create:
        with _writers_lock:
            writer = _writers.setdefault(key, _Writer())
    return writer


def _forget_writers() -> None:
    """In a forked child the parent's writer threads don't exist: start afresh (unwritten chunks of
    the parent stay the parent's job)."""
    global _writers_lock
    _writers.clear()
    _writers_lock = threading.Lock()


def _flush_at_exit() -> None:
    deadline = time.monotonic() + _EXIT_FLUSH_SECONDS
    for writer in list(_writers.values()):
        writer.flush(max(0.0, deadline - time.monotonic()))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writers)
atexit.register(_flush_at_exit)


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = os.read(fd, size)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.read(fd, size - got)
        if not more:
            return None
        parts.append(more)
        got += len(more)
    return b"".join(parts)
