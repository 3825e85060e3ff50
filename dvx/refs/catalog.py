"""The name catalog: what `dvx dataset list` and `dvx model list` show about every name, read in a fixed
number of requests however many names the store holds.

Derived data, never the source of truth: references always resolve through the refs themselves. The
catalog is kept in `SHARDS` shard objects per kind (a name's shard is fixed by a hash of the name), each
changed only by compare-and-swap after the authoritative write it reflects:

    refs/catalog/<kind>/shard-<i, 2 digits>-of-<SHARDS>.json.zst compare-and-swap: {name: entry}
    refs/catalog/<kind>/pending/<quoted name>~<random>.json      a write to that name is under way

An update recomputes the name's whole entry from its refs (after reading the shard, so the last write
that lands always reflects every authoritative write before it) and swaps it into the shard; writers on
different names that share a shard retry, so neither loses the other's entry. Around each authoritative
write a `pending` marker names the name: readers recompute the entries of pending names themselves, so a
crash between the authoritative write and the catalog update leaves the listing right (a reader heals
the shard and removes the marker once it is older than `STALE_MARKER_SECONDS`). A shard that is missing
or has an unknown format_version is rebuilt from the refs (the slow path, once) and written back.
"""

from __future__ import annotations

import random
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import msgspec
import zstandard

from dvx.errors import (
    ConflictError,
    DvxError,
    NotFoundError,
    PreconditionFailed,
    StoreError,
)
from dvx.refs.store import KIND_FOLDERS, DeletedVersion, VersionRecord

if TYPE_CHECKING:
    from dvx.refs.store import Refs

CATALOG_FORMAT_VERSION = 1
SHARDS = 16  # a listing is 16 reads (made in parallel); an update rewrites a sixteenth of the catalog
STALE_MARKER_SECONDS = 600.0  # a pending marker this old belongs to a writer that died
_CAS_ATTEMPTS = 100
_READ_THREADS = 16
_MAX_SHARD_BYTES = 1 << 30  # decompression bound: far above any real shard


class VersionNotes(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A model version's annotations as listings show them (their history stays in the refs)."""

    tags: list[str] = []
    metrics: dict[str, float] = {}
    params: dict[str, Any] = {}
    metadata: dict[str, Any] = {}


class CatalogEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One name: how many live versions it has, its latest, where its tags / aliases point, and the
    records (and, for models, annotations) of the latest and of every version a pointer names."""

    versions: int
    latest: int
    pointers: dict[str, int] = {}
    records: dict[str, VersionRecord] = {}  # by version number (JSON keys are strings)
    notes: dict[str, VersionNotes] = {}

    def record(self, number: int) -> VersionRecord:
        return self.records[str(number)]

    def pointers_at(self, number: int) -> list[str]:
        return sorted(p for p, n in self.pointers.items() if n == number)


class CatalogShard(msgspec.Struct, kw_only=True):
    format_version: int = CATALOG_FORMAT_VERSION
    kind: str
    shard: int
    shards: int = SHARDS
    entries: dict[str, CatalogEntry] = {}


class _FormatProbe(msgspec.Struct):
    format_version: Any = None
    shards: Any = None


def shard_of(name: str) -> int:
    """The shard holding `name` (crc32 of its UTF-8 bytes: stable across processes and versions)."""
    return zlib.crc32(name.encode()) % SHARDS


class Catalog:
    """The catalog of one kind in one store, kept next to (and derived from) `refs`."""

    def __init__(self, refs: Refs):
        self.refs = refs
        self.store = refs.store
        self.kind = refs.kind
        self._root = f"refs/catalog/{KIND_FOLDERS[refs.kind]}"
        self._pending_root = f"{self._root}/pending"
        self._open_updates: dict[str, int] = {}  # name → nesting depth of `updating(name)` blocks

    def _shard_key(self, index: int) -> str:
        return f"{self._root}/shard-{index:02d}-of-{SHARDS}.json.zst"

    # -- reading -------------------------------------------------------------------------------
    def entries(self) -> dict[str, CatalogEntry]:
        """Every name with a live version → its entry: one request per shard (in parallel) and one
        listing of pending writes; shards that are missing or of an unknown format are rebuilt."""
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="dvx-catalog") as pool:
            pending = pool.submit(self._pending_markers)
            shards = list(pool.map(self._read_shard, range(SHARDS)))
            markers = pending.result()
        unusable = [i for i, (shard, _) in enumerate(shards) if shard is None]
        if unusable:
            rebuilt = self._rebuild_shards(unusable, [shards[i][1] for i in unusable])
            for index, shard in zip(unusable, rebuilt):
                shards[index] = (shard, None)
        out: dict[str, CatalogEntry] = {}
        for shard, _ in shards:
            out.update(shard.entries)
        if markers:
            self._heal_pending(markers, out)
        return dict(sorted(out.items()))

    def _read_shard(self, index: int) -> tuple[CatalogShard | None, str | None]:
        """(the shard, its token); the shard is None when missing or in a format this dvx doesn't know."""
        data, token = self.store.read_versioned(self._shard_key(index))
        return self._decode_shard(data, index), token

    def _decode_shard(self, data: bytes | None, index: int) -> CatalogShard | None:
        if data is None:
            return None
        try:
            data = zstandard.ZstdDecompressor().decompress(data, max_output_size=_MAX_SHARD_BYTES)
            probe = msgspec.json.decode(data, type=_FormatProbe)
            if probe.format_version != CATALOG_FORMAT_VERSION or probe.shards != SHARDS:
                return None
            shard = msgspec.json.decode(data, type=CatalogShard)
        except (zstandard.ZstdError, msgspec.DecodeError):
            return None  # damaged derived data: rebuilt from the refs like a missing shard
        return shard if shard.kind == self.kind and shard.shard == index else None

    def _pending_markers(self) -> list[tuple[str, str, float]]:
        """(key, name, modification time) of every pending-write marker."""
        out = []
        for info in self.store.scan(self._pending_root):
            stem = info.key.rsplit("/", 1)[-1].removesuffix(".json")
            quoted, sep, _ = stem.rpartition("~")
            if sep:
                out.append((info.key, unquote(quoted), info.mtime))
        return out

    def _heal_pending(self, markers: list[tuple[str, str, float]], entries: dict[str, CatalogEntry]) -> None:
        """Recompute the entries of names with a write under way (or cut short by a crash). Markers
        older than STALE_MARKER_SECONDS are crash leftovers: their entry is written back and they go."""
        names = sorted({name for _, name, _ in markers})
        for name, entry in zip(names, self._compute_many(names)):
            if entry is None:
                entries.pop(name, None)
            else:
                entries[name] = entry
        cutoff = time.time() - STALE_MARKER_SECONDS
        stale = [(key, name) for key, name, mtime in markers if mtime < cutoff]
        try:
            for name in sorted({name for _, name in stale}):
                self.refresh(name)
            for key, _ in stale:
                self.store.delete(key)
        except (StoreError, ConflictError):
            pass  # a read-only store (or a busy one): this listing is right anyway; the next reader retries

    # -- writing -------------------------------------------------------------------------------
    @contextmanager
    def updating(self, name: str) -> Iterator[Callable[[], None]]:
        """Wrap authoritative writes to `name`. The block calls the function it is given right before
        its first write: that leaves a pending marker; on leaving the block (even by an error) the entry
        is refreshed and the marker removed. Inner blocks for the same name leave all that to the outer."""
        depth = self._open_updates.get(name, 0)
        self._open_updates[name] = depth + 1
        markers: list[str] = []

        def mark() -> None:
            if depth == 0 and not markers:
                marker = f"{self._pending_root}/{quote(name, safe='')}~{uuid.uuid4().hex[:16]}.json"
                body = {"format_version": CATALOG_FORMAT_VERSION, "kind": self.kind, "name": name}
                self.store.put_create(marker, msgspec.json.encode(body, order="sorted"))
                markers.append(marker)

        try:
            yield mark
        finally:
            if depth == 0:
                del self._open_updates[name]
                for marker in markers:
                    self._finish(name, marker)
            else:
                self._open_updates[name] = depth

    def _finish(self, name: str, marker: str) -> None:
        """Refresh the entry and drop the marker. The authoritative write is done whatever happens here:
        on a failure the marker stays, and readers recompute this name until an update succeeds."""
        try:
            self.refresh(name)
            self.store.delete(marker)
        except DvxError:
            pass

    def refresh(self, name: str) -> None:
        """Recompute `name`'s entry from its refs and swap it into its shard (building the shard from
        the refs when it is missing or of an unknown format)."""
        index = shard_of(name)
        key = self._shard_key(index)
        for attempt in range(_CAS_ATTEMPTS):
            data, token = self.store.read_versioned(key)
            shard = self._decode_shard(data, index)
            if shard is None:
                shard = self._build_shard(index, self._names_by_shard().get(index, []))
            else:
                # Computed after reading the shard: a write that lands reflects every write before it.
                entry = self._compute_entry(name)
                if shard.entries.get(name) == entry:
                    return
                if entry is None:
                    shard.entries.pop(name, None)
                else:
                    shard.entries[name] = entry
            try:
                self.store.put_if(key, _encode(shard), token)
                return
            except PreconditionFailed:
                time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 20)))
        raise ConflictError(f"the {self.kind} catalog shard of {name} keeps changing under concurrent writers; "
                            "try again")

    def rebuild(self) -> int:
        """Rebuild every shard from the refs (the slow path: reads every name), by compare-and-swap;
        returns the number of names catalogued."""
        tokens = [self.store.read_versioned(self._shard_key(i))[1] for i in range(SHARDS)]
        shards = self._rebuild_shards(list(range(SHARDS)), tokens, keep_existing=False)
        return sum(len(s.entries) for s in shards)

    def _rebuild_shards(self, indexes: list[int], tokens: list[str | None],
                        keep_existing: bool = True) -> list[CatalogShard]:
        """Build the shards `indexes` from the refs and write them where they are still at `tokens`. The
        names are listed after the tokens were read, so a write that wins reflects every name before it.
        A shard someone else wrote meanwhile is taken as it is (`keep_existing`) or built again."""
        by_shard = self._names_by_shard()
        if keep_existing and not by_shard:
            return [CatalogShard(kind=self.kind, shard=i) for i in indexes]  # nothing to catalog: write nothing
        out = []
        for index, token in zip(indexes, tokens):
            shard = self._build_shard(index, by_shard.get(index, []))
            for attempt in range(_CAS_ATTEMPTS):
                try:
                    self.store.put_if(self._shard_key(index), _encode(shard), token)
                    break
                except PreconditionFailed:
                    current, token = self._read_shard(index)
                    if current is not None and keep_existing:
                        shard = current
                        break
                    shard = self._build_shard(index, self._names_by_shard().get(index, []))
                except StoreError:
                    break  # e.g. read-only credentials: the listing is still right, only not saved
            out.append(shard)
        return out

    def _names_by_shard(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for name in self.refs.names():
            out.setdefault(shard_of(name), []).append(name)
        return out

    def _build_shard(self, index: int, names: list[str]) -> CatalogShard:
        entries = {n: e for n, e in zip(names, self._compute_many(names)) if e is not None}
        return CatalogShard(kind=self.kind, shard=index, entries=entries)

    def _compute_many(self, names: list[str]) -> list[CatalogEntry | None]:
        if len(names) <= 1:
            return [self._compute_entry(n) for n in names]
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="dvx-catalog") as pool:
            return list(pool.map(self._compute_entry, names))

    def _compute_entry(self, name: str) -> CatalogEntry | None:
        """`name`'s entry from its refs (None when it has no live version): one listing of its versions,
        one of its pointers, a read per pointer, and a read per version of interest (and, for models,
        of its annotations)."""
        refs = self.refs
        live = refs.version_numbers(name)
        records: dict[str, VersionRecord] = {}
        latest = None
        for number in reversed(live):
            record = _record_or_none(refs, name, number)
            if record is not None:
                latest = number
                records[str(number)] = record
                break
        if latest is None:
            return None
        pointers: dict[str, int] = {}
        for tag, tag_record in refs.tags(name).items():
            if str(tag_record.version) not in records:
                record = _record_or_none(refs, name, tag_record.version)
                if record is None:
                    continue  # points at a deleted version: not listed
                records[str(tag_record.version)] = record
            pointers[tag] = tag_record.version
        notes: dict[str, VersionNotes] = {}
        if self.kind == "model":
            for number in records:
                found = refs.get_annotations(name, int(number))
                summary = VersionNotes(tags=list(found.tags), metrics=dict(found.metrics),
                                       params=dict(found.params), metadata=dict(found.metadata))
                if summary != VersionNotes():
                    notes[number] = summary
        return CatalogEntry(versions=len(live), latest=latest, pointers=pointers, records=records, notes=notes)


def _record_or_none(refs: Refs, name: str, number: int) -> VersionRecord | None:
    try:
        record = refs.get_record(name, number)
    except NotFoundError:
        return None
    return record if not isinstance(record, DeletedVersion) else None


def _encode(shard: CatalogShard) -> bytes:
    """Canonical JSON in one zstd frame: version records repeat the same keys, so a shard shrinks about
    tenfold, and a listing of ten thousand names reads a few hundred KiB instead of megabytes."""
    return zstandard.ZstdCompressor(level=3).compress(msgspec.json.encode(shard, order="sorted"))

