"""The shared checkout cache: read-only materialised versions, bounded in bytes, evicted LRU.

    <cache>/checkouts/<key>/       the files (read-only)
    <cache>/checkouts/<key>.json   bytes, last use, and a stat fingerprint checked on every reuse
    <cache>/locks/<key>.lock       held while an entry is built; eviction skips locked entries

Safe for concurrent processes: an entry is built in a temp folder and renamed into place under its
lock; a second process waiting on the lock then finds it ready.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import xxhash

from dvx.errors import IntegrityError, NotFoundError
from dvx.locks import FileLock, LockTimeout

_FORMAT_VERSION = 1


class EntryMeta(msgspec.Struct):
    format_version: int
    bytes: int
    last_used: float
    fingerprint: str
    label: str = ""


def fingerprint(root: Path, paths: Sequence[str]) -> str:
    """Hash of (path, size, mtime) of every file: changes if anyone edits a cached file."""
    digest = xxhash.xxh3_64()
    for path in paths:
        try:
            st = os.lstat(root / path)
        except FileNotFoundError:
            digest.update(f"{path}\0missing\n".encode())
            continue
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n".encode())
    return digest.hexdigest()


def _make_writable(path: Path) -> None:
    for folder, dirs, files in os.walk(path):
        os.chmod(folder, 0o755)
        for name in files:
            full = os.path.join(folder, name)
            if not os.path.islink(full):
                os.chmod(full, stat.S_IMODE(os.lstat(full).st_mode) | stat.S_IWUSR)


def remove_tree(path: Path) -> None:
    if not path.exists():
        return
    _make_writable(path)
    shutil.rmtree(path, ignore_errors=True)


class CheckoutCache:
    def __init__(self, root: Path, max_bytes: int):
        self.root = root
        self.max_bytes = max_bytes
        self.entries = root / "checkouts"
        self.locks = root / "locks"

    def _lock(self, key: str) -> FileLock:
        self.locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.locks / f"{key}.lock"), timeout=3600, what="a cache entry")

    def _meta_path(self, key: str) -> Path:
        return self.entries / f"{key}.json"

    def _read_meta(self, key: str) -> EntryMeta | None:
        try:
            return msgspec.json.decode(self._meta_path(key).read_bytes(), type=EntryMeta)
        except (FileNotFoundError, msgspec.DecodeError):
            return None

    def _write_meta(self, key: str, meta: EntryMeta) -> None:
        tmp = self._meta_path(key).with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(msgspec.json.encode(meta))
        os.replace(tmp, self._meta_path(key))

    def materialise(self, key: str, paths: Sequence[str], nbytes: int, build: Callable[[Path], None],
                    label: str = "") -> Path:
        """The cache folder for `key`, built with `build(tmp_folder)` unless a valid copy exists."""
        target = self.entries / key
        with self._lock(key):
            meta = self._read_meta(key)
            if meta is not None and target.is_dir() and meta.fingerprint == fingerprint(target, paths):
                meta.last_used = time.time()
                self._write_meta(key, meta)
                return target
            self.entries.mkdir(parents=True, exist_ok=True)
            self._meta_path(key).unlink(missing_ok=True)
            remove_tree(target)
            # Named after the key (and built under its lock): an interrupted build is resumed by the
            # next one, which keeps the files already verified.
            tmp = self.entries / f".tmp-{key}"
            try:
                build(tmp)
            except (IntegrityError, NotFoundError):
                remove_tree(tmp)  # damaged or missing data: nothing worth resuming from
                raise
            tmp.mkdir(exist_ok=True)
            os.rename(tmp, target)
            self._write_meta(key, EntryMeta(_FORMAT_VERSION, nbytes, time.time(), fingerprint(target, paths), label))
        self.evict(keep=key)
        return target

    def evict(self, keep: str | None = None) -> list[str]:
        """Delete least recently used entries until the cache fits its byte budget."""
        if not self.entries.is_dir():
            return []
        metas = []
        for meta_file in self.entries.glob("*.json"):
            meta = self._read_meta(meta_file.stem)
            if meta is not None:
                metas.append((meta.last_used, meta_file.stem, meta.bytes))
        total = sum(m[2] for m in metas)
        evicted = []
        for _, key, nbytes in sorted(metas):
            if total <= self.max_bytes:
                break
            if key == keep:
                continue
            lock = self._lock(key)
            try:
                lock.acquire(timeout=0)
            except LockTimeout:
                continue
            try:
                self._meta_path(key).unlink(missing_ok=True)
                remove_tree(self.entries / key)
            finally:
                lock.release()
            total -= nbytes
            evicted.append(key)
        return evicted
