"""Stat cache: (path, size, mtime, ctime, inode) → stored content, so unchanged files are never re-read.

One SQLite file in the user's cache folder, shared by every process (WAL mode). Entries are per store,
because chunk locations are. A file whose mtime falls within one timestamp tick of the moment it was
looked at is not cached: a later write in that same tick would leave size and mtime unchanged (the
"racy git" problem). The tick is taken as 2 s on filesystems with whole-second timestamps (FAT, ext3,
HFS+) and 50 ms where timestamps have sub-second digits.
"""

from __future__ import annotations

import os
import sqlite3
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
    """A stat-cache match; the chunk list is decoded only if the caller needs it."""

    __slots__ = ("size", "digest", "_blob")

    def __init__(self, size: int, digest: str, blob: bytes):
        self.size, self.digest, self._blob = size, digest, blob

    def chunks(self) -> list[ChunkRef]:
        return _chunks_decoder.decode(self._blob)


_encoder = msgspec.msgpack.Encoder()
_chunks_decoder = msgspec.msgpack.Decoder(list[ChunkRef])


class StatCache:
    def __init__(self, db_path: str | Path, store_id: str):
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(db_path), timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._store_id = store_id

    def lookup(self, files: list[ScannedFile]) -> dict[str, CacheHit]:
        """Cached content of the files whose stat still matches, keyed by local path."""
        found: dict[str, CacheHit] = {}
        stats = {f.local: (f.size, f.mtime_ns, f.ctime_ns, f.inode) for f in files if f.link is None}
        select = "SELECT path, size, mtime_ns, ctime_ns, inode, digest, chunks FROM files_v1 WHERE store_id = ? AND "
        if len(stats) > 1000:
            # One range scan over the files' common folder beats thousands of point lookups.
            # The common prefix of the smallest and largest paths is common to all of them.
            first, last = min(stats), max(stats)
            common = os.path.commonprefix([first, last])
            root = common if common in (first, last) else common[:common.rfind("/") + 1] or "/"
            queries = [(select + "path >= ? AND path < ?", (self._store_id, root, root + "\U0010ffff"))]
        else:
            paths = list(stats)
            queries = [(select + f"path IN ({','.join('?' * len(paths[i:i + 500]))})",
                        (self._store_id, *paths[i:i + 500])) for i in range(0, len(paths), 500)]
        for sql, params in queries:
            for row in self._db.execute(sql, params):
                if stats.get(row[0]) == row[1:5]:
                    found[row[0]] = CacheHit(row[1], row[5], row[6])
        return found

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
