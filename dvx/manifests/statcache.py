"""Stat cache: (path, size, mtime, ctime, inode) → stored content, so unchanged files are never re-read.

One SQLite file in the user's cache folder, shared by every process (WAL mode). Entries are per store,
because chunk locations are. A file whose mtime falls within one timestamp tick of the moment it was
looked at is not cached: a later write in that same tick would leave size and mtime unchanged (the
"racy git" problem). The tick is taken as 2 s on filesystems with whole-second timestamps (FAT, ext3,
HFS+) and 50 ms where timestamps have sub-second digits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import msgspec

from dvx.chunks import ChunkRef
from dvx.manifests.scan import ScannedFile

_COARSE_TICK_NS = 2_000_000_000
_FINE_TICK_NS = 50_000_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files_v1 (
    store_id TEXT NOT NULL, path TEXT NOT NULL, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER,
    inode INTEGER, digest TEXT, chunks BLOB, PRIMARY KEY (store_id, path))
"""


class CachedContent(msgspec.Struct, array_like=True):
    size: int
    digest: str
    chunks: list[ChunkRef]


class CacheHit:
    """A stat-cache match; the chunk list is read and decoded only if the caller needs it."""

    __slots__ = ("_blob", "_cache", "_local", "digest", "size")

    def __init__(self, size: int, digest: str, blob: bytes | None, cache: StatCache | None = None,
                 local: str = ""):
        self.size, self.digest, self._blob, self._cache, self._local = size, digest, blob, cache, local

    def chunks(self) -> list[ChunkRef]:
        blob = self._blob if self._blob is not None else self._cache._chunks_blob(self._local)
        return _chunks_decoder.decode(blob)


_encoder = msgspec.msgpack.Encoder()
_chunks_decoder = msgspec.msgpack.Decoder(list[ChunkRef])


class StatCache:
    def __init__(self, db_path: str | Path, store_id: str):
        import sqlite3  # loaded by the commands that read files, not by every command

        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(db_path), timeout=60, isolation_level=None)
        self._setup()
        self._store_id = store_id

    def _setup(self) -> None:
        """WAL mode and the table. Switching a new database to WAL takes an exclusive lock that SQLite
        does not wait for (the busy timeout does not apply), so processes opening the cache at the same
        moment (workers starting together) retry for up to a minute."""
        delay, waited = 0.01, 0.0
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(_SCHEMA)
                return
            except self._db.OperationalError as exc:
                if "locked" not in str(exc) or waited > 60:
                    raise
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, 0.5)

    def lookup(self, files: list[ScannedFile], with_chunks: bool = True) -> dict[str, CacheHit]:
        """Cached content of the files whose stat still matches, keyed by local path. Without
        `with_chunks`, a hit reads its chunk list when asked (for callers that mostly need the digest)."""
        found: dict[str, CacheHit] = {}
        stats = {f.local: (f.size, f.mtime_ns, f.ctime_ns, f.inode) for f in files if f.link is None}
        columns = "path, size, mtime_ns, ctime_ns, inode, digest" + (", chunks" if with_chunks else "")
        select = f"SELECT {columns} FROM files_v1 WHERE store_id = ? AND "
        if len(stats) > 1000:
            # One range scan from the smallest to the largest path beats thousands of point lookups
            # (a scan yields files in path order, so a batch of it covers a narrow range).
            queries = [(select + "path >= ? AND path <= ?", (self._store_id, min(stats), max(stats)))]
        else:
            paths = list(stats)
            queries = [(select + f"path IN ({','.join('?' * len(paths[i:i + 500]))})",
                        (self._store_id, *paths[i:i + 500])) for i in range(0, len(paths), 500)]
        for sql, params in queries:
            for row in self._db.execute(sql, params):
                if stats.get(row[0]) == row[1:5]:
                    found[row[0]] = CacheHit(row[1], row[5], row[6] if with_chunks else None, self, row[0])
        return found

    def _chunks_blob(self, local: str) -> bytes:
        row = self._db.execute("SELECT chunks FROM files_v1 WHERE store_id = ? AND path = ?",
                               (self._store_id, local)).fetchone()
        if row is None:
            raise KeyError(local)  # a hit whose row was replaced since: callers read the file instead
        return row[0]

    def record(self, items: Iterable[tuple[ScannedFile, CachedContent]], since: float) -> None:
        """Remember files stored from a scan that began at `since` (seconds since the epoch)."""
        since_ns = int(since * 1e9)

        def settled(f: ScannedFile) -> bool:
            coarse = f.mtime_ns % 1_000_000_000 == 0
            return max(f.mtime_ns, f.ctime_ns) < since_ns - (_COARSE_TICK_NS if coarse else _FINE_TICK_NS)

        rows = [
            (self._store_id, f.local, f.size, f.mtime_ns, f.ctime_ns, f.inode, c.digest, _encoder.encode(c.chunks))
            for f, c in items
            if settled(f)
        ]
        if rows:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO files_v1 VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
