"""The chunk store: store config, the chunk index, ingest (files → deduplicated packs) and verified reads."""

from __future__ import annotations

import itertools
import os
import queue
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import msgspec
import xxhash

from dvx.chunks import codec
from dvx.chunks.cache import ChunkCache
from dvx.chunks.chunker import Chunker, ChunkerParams, ReadBuffers
from dvx.chunks.pack import (
    ENTRY,
    HEADER,
    TRAILER,
    TRAILER_MAGIC,
    ChunkRef,
    check_footer,
    encode_footer,
    footer_id,
    index_key,
    pack_key,
    split_pack,
)
from dvx.errors import IntegrityError, NotFoundError, StoreError
from dvx.fs import Store

if TYPE_CHECKING:
    from concurrent.futures import Future

CONFIG_KEY = "config.json"
CONFIG_FORMAT_VERSION = 1
DEFAULT_PACK_SIZE = 32 << 20
# Ranges closer than this are fetched as one read.
MERGE_GAP = 256 << 10
# Upper bound of bytes requested from the store in one read_ranges call.
READ_BATCH = 16 << 20
_BATCH_CHUNKS = 64
_QUEUE_BATCHES = 8
_DONE = object()
_EMPTY_DIGEST = xxhash.xxh3_128_hexdigest(b"")
_PROBE_AFTER = 4
_PROBE_EVERY = 16
_PROBE_SAMPLE = 8 << 10  # bytes of a chunk zstd tries first, during a run of incompressible ones
# Files up to this size are mostly Python work per file, which threads can't share (see _SmallFileTurn).
SMALL_FILE = 256 << 10
# Read buffers per ingest worker: chunks queued for writing keep theirs busy until written.
_READ_BUFFERS = 4

ProgressFn = Callable[[int], None]


class Compression(msgspec.Struct, frozen=True, kw_only=True):
    codec: str = "zstd"
    level: int = 3


class StoreConfig(msgspec.Struct, frozen=True, kw_only=True):
    """`config.json` at the store root: fixed at creation, read by every client."""

    format_version: int = CONFIG_FORMAT_VERSION
    store_id: str
    created: str
    chunker: ChunkerParams = ChunkerParams()
    hash: str = "xxh3-128"
    compression: Compression = Compression()
    pack_size: int = DEFAULT_PACK_SIZE


def chunk_id(data: bytes | memoryview) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def load_config(store: Store, create: bool) -> StoreConfig | None:
    """The store's config; with `create`, initialise an empty store (create-only, so racing clients agree)."""
    try:
        raw = store.read(CONFIG_KEY)
    except NotFoundError:
        if not create:
            return None
        fresh = StoreConfig(store_id=uuid.uuid4().hex, created=datetime.now(timezone.utc).isoformat())
        store.put_create(CONFIG_KEY, msgspec.json.encode(fresh, order="sorted"))
        raw = store.read(CONFIG_KEY)
    try:
        config = msgspec.json.decode(raw, type=StoreConfig)
    except msgspec.DecodeError as exc:
        raise IntegrityError(f"store {store.url}: unreadable config.json ({exc})") from None
    if config.format_version != CONFIG_FORMAT_VERSION:
        raise StoreError(f"store {store.url} has format_version {config.format_version}; upgrade dvx to use it")
    problem = config.chunker.problem()
    if problem:
        raise IntegrityError(f"store {store.url}: config.json: {problem}")
    return config


class IngestedFile(msgspec.Struct):
    """One file's content as stored: size, whole-content digest and its chunks in order."""

    source: object
    size: int
    digest: str
    chunks: list[ChunkRef]


class _Probe:
    """Whether compressing the next chunk is worth a try.

    After a run of chunks zstd could not shrink (media, encrypted or random data), only every
    _PROBE_EVERY-th chunk is tried (its start first) until one compresses again. The run carries over to
    the next file of the same type (a folder of JPEGs) and starts afresh when the file extension changes.
    """

    def __init__(self) -> None:
        self.run = 0
        self.kind: str | None = None

    def start_file(self, path: str) -> None:
        dot = path.rfind(".")
        kind = path[dot:].lower() if dot > path.rfind("/") + 1 else ""  # os.path.splitext, cheaper
        if kind != self.kind:
            self.kind, self.run = kind, 0

    def worth_trying(self, chunk: bytes | memoryview, level: int) -> bool:
        """During a run, every _PROBE_EVERY-th chunk is tried, and only if its first _PROBE_SAMPLE
        bytes compress: failing on a whole chunk costs more CPU than cutting it."""
        if self.run < _PROBE_AFTER:
            return True
        return self.run % _PROBE_EVERY == 0 and codec.compresses(chunk[:_PROBE_SAMPLE], level)

    def record(self, codec_id: int) -> None:
        self.run = self.run + 1 if codec_id == codec.RAW else 0


class _Stopped(Exception):
    """Another thread failed: this worker stops where it is."""


class _Outbox:
    """One ingest worker's new chunks on their way to the appending thread, sent in batches. A batch's
    `done` is set once its payloads are written: raw payloads are views into the worker's read buffers,
    which are refilled only after that (ReadBuffers.hold / wait_for)."""

    def __init__(self, appends: queue.Queue, stop: threading.Event) -> None:
        self._appends = appends
        self._stop = stop
        self.items: list[tuple[str, int, bytes | memoryview, int]] = []
        self.done = threading.Event()

    def add(self, item: tuple[str, int, bytes | memoryview, int]) -> None:
        self.items.append(item)
        if len(self.items) >= _BATCH_CHUNKS:
            self.send()

    def send(self) -> None:
        if self.items:
            self._appends.put((self.items, self.done))
            self.items, self.done = [], threading.Event()

    def wait_for(self, done: threading.Event) -> None:
        """Until the batch whose `done` this is has been written (sending what is still here first)."""
        if done is self.done:
            self.send()
        while not done.wait(0.05):
            if self._stop.is_set():
                raise _Stopped


class _SmallFileTurn:
    """One ingest worker at a time works on small files. A small file costs tens of microseconds of
    Python (which holds the GIL) and little of the work that releases it (reading, cutting, hashing),
    so a second worker on small files only adds thread switches: adding 20,000 files of 4 KiB took about
    1.1 s with two workers and 0.8 s with one. A worker takes the turn when it opens a small file and keeps it
    through a run of them, until it opens a large file or stops; large files are cut in parallel."""

    def __init__(self, lock: threading.Lock, stop: threading.Event) -> None:
        self._lock = lock
        self._stop = stop
        self.held = False

    def before_reading(self, size: int) -> None:
        if size <= SMALL_FILE:
            while not self.held:
                if self._stop.is_set():
                    raise _Stopped
                self.held = self._lock.acquire(timeout=0.05)
        elif self.held:
            self.release()

    def release(self) -> None:
        if self.held:
            self.held = False
            self._lock.release()


class PackWriter:
    """Appends new chunks to packs of ~pack_size and publishes each sealed pack (then its index
    segment) in the background, a few at a time, while the next pack fills."""

    def __init__(self, chunk_store: ChunkStore, uploads: int = 2):
        self._cs = chunk_store
        self._upload = None
        self._entries: list[tuple[str, int, int, int, int]] = []
        self._pack_bytes = 0
        self._pack_size = chunk_store.config.pack_size
        # Every chunk appended, from the moment it is: only this thread adds to it, and a membership
        # test from another thread needs no lock.
        self._appended: set[str] = set()
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(uploads)  # bounds memory: each pending pack is held whole
        from concurrent.futures import ThreadPoolExecutor
        self._pool = ThreadPoolExecutor(uploads, thread_name_prefix="dvx-pack-upload")
        self._pending: list[Future] = []
        self.new_refs: dict[str, ChunkRef] = {}
        self.stored_bytes = 0
        self.packs_written = 0

    def has(self, cid: str) -> bool:
        """Whether the chunk is already in a pack of this writer (open, being published or published)."""
        return cid in self._appended

    def append(self, cid: str, codec_id: int, payload, raw_size: int) -> None:
        if cid in self._appended:
            return
        self._appended.add(cid)
        if self._upload is None:
            self._upload = self._cs.store.begin_upload()
        offset = self._pack_bytes
        self._upload.write(payload)
        self._entries.append((cid, offset, len(payload), raw_size, codec_id))
        self._pack_bytes = offset + len(payload)
        self.stored_bytes += len(payload)
        if self._pack_bytes >= self._pack_size:
            self.seal()

    def flush(self) -> None:
        """Write out every payload appended so far: the buffers they point into may then be reused."""
        if self._upload is not None:
            self._upload.flush()

    def seal(self) -> None:
        """Close the open pack and hand it to the publisher threads."""
        if self._upload is None:
            return
        footer = encode_footer(self._entries)
        self._upload.write(footer)
        self._upload.write(TRAILER.pack(len(footer), TRAILER_MAGIC))
        self._upload.flush()  # no payload view may outlive this thread's hold on it
        upload, entries = self._upload, self._entries
        self._upload, self._entries, self._pack_bytes = None, [], 0
        self._slots.acquire()
        self._pending.append(self._pool.submit(self._publish, upload, footer, entries))

    def _publish(self, upload, footer: bytes, entries: list[tuple[str, int, int, int, int]]) -> None:
        """Pack first, then its index segment (BRIEF §4 write order); only then are its chunks known."""
        try:
            pack_id = footer_id(footer)
            upload.commit(pack_key(pack_id))
            self._cs.store.put_create(index_key(pack_id), footer)
            with self._lock:
                for cid, off, length, size, codec_id in entries:
                    ref = ChunkRef(cid, pack_id, off, length, size, codec_id)
                    self.new_refs[cid] = ref
                    self._cs.remember(ref)
                self.packs_written += 1
        finally:
            self._slots.release()

    def finish(self) -> None:
        """Seal the last pack and wait until every pack is published (raises the first failure)."""
        self.seal()
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown(wait=True)

    def abort(self) -> None:
        if self._upload is not None:
            self._upload.abort()
            self._upload = None
        self._pool.shutdown(wait=True, cancel_futures=True)


class ChunkIndex:
    """Which chunks the store holds, and where: every index segment's raw footer kept as is, plus a dict
    from the 16-byte chunk id to its (segment, entry) position; a ChunkRef is built only for a chunk
    looked up. About 110 bytes a chunk instead of 260 for a dict of ChunkRefs (a million-chunk store
    loads in a second). Chunks remembered since (new packs, parents) are kept as ChunkRefs."""

    def __init__(self) -> None:
        self._segments: list[tuple[str, bytes]] = []
        self._where: dict[bytes, int] = {}
        self._extra: dict[str, ChunkRef] = {}

    def add_segment(self, pack_id: str, footer: bytes) -> None:
        count = check_footer(footer, pack_id)
        number = len(self._segments) << 32
        self._segments.append((pack_id, footer))
        ids = [footer[at:at + 16] for at in range(HEADER.size, HEADER.size + count * ENTRY.size, ENTRY.size)]
        self._where.update(zip(ids, range(number, number + count)))

    def remember(self, ref: ChunkRef) -> None:
        if ref.id not in self:
            self._extra[ref.id] = ref

    def __contains__(self, cid: str) -> bool:
        return cid in self._extra or (bool(self._where) and bytes.fromhex(cid) in self._where)

    def get(self, cid: str) -> ChunkRef | None:
        ref = self._extra.get(cid)
        if ref is not None:
            return ref
        where = self._where.get(bytes.fromhex(cid))
        if where is None:
            return None
        pack_id, footer = self._segments[where >> 32]
        _, offset, length, size, codec_id = ENTRY.unpack_from(footer, HEADER.size + (where & 0xFFFFFFFF) * ENTRY.size)
        return ChunkRef(cid, pack_id, offset, length, size, codec_id)

    def __len__(self) -> int:
        return len(self._where) + len(self._extra)

    def values(self) -> Iterator[ChunkRef]:
        """Every chunk's location (built on the fly)."""
        yield from self._extra.values()
        for number, (pack_id, footer) in enumerate(self._segments):
            for entry, (raw_id, offset, length, size, codec_id) in enumerate(
                    ENTRY.iter_unpack(memoryview(footer)[HEADER.size:])):
                if self._where.get(raw_id) == (number << 32) | entry:
                    yield ChunkRef(raw_id.hex(), pack_id, offset, length, size, codec_id)

    def forget_packs(self, packs: set[str]) -> None:
        for cid in [cid for cid, ref in self._extra.items() if ref.pack in packs]:
            del self._extra[cid]
        for number, (pack_id, footer) in enumerate(self._segments):
            if pack_id in packs:
                for raw_id, *_ in ENTRY.iter_unpack(memoryview(footer)[HEADER.size:]):
                    if self._where.get(raw_id, -1) >> 32 == number:
                        del self._where[raw_id]


class ChunkStore:
    """A store's chunks: ingest into packs, verified reads.

    `cache` is an optional local ChunkCache that reads consult first; `fill_cache` is whether reads
    that don't say otherwise (read_chunks(fill=None)) also put what they fetch into it."""

    def __init__(self, store: Store, config: StoreConfig, jobs: int | None = None,
                 cache: ChunkCache | None = None, fill_cache: bool = False):
        self.store = store
        self.config = config
        self.cache = cache
        self.fill_cache = fill_cache
        self.chunker = Chunker(config.chunker)
        self.jobs = jobs or min(4, os.cpu_count() or 2)
        self._index: ChunkIndex | None = None
        self._extra: dict[str, ChunkRef] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, store: Store, create: bool = False, jobs: int | None = None,
             cache: ChunkCache | None = None, fill_cache: bool = False) -> ChunkStore | None:
        config = load_config(store, create)
        return None if config is None else cls(store, config, jobs, cache, fill_cache)

    # -- index ---------------------------------------------------------------------------------
    def index(self) -> ChunkIndex:
        """chunk id → location for every chunk in the store (from the index segments; loaded once)."""
        if self._index is None:
            index = ChunkIndex()
            for ref in self._extra.values():
                index.remember(ref)
            for name in self.store.list("index"):
                if not name.endswith(".idx"):
                    continue
                pack_id = name[:-4]
                try:
                    footer = self.store.read(index_key(pack_id))
                except NotFoundError:
                    continue  # deleted by a gc since the listing: garbage, and its pack goes next
                index.add_segment(pack_id, footer)
            self._index = index
        return self._index

    def remember(self, ref: ChunkRef) -> None:
        """Record a chunk known to be stored (from a parent manifest or a pack just written)."""
        with self._lock:
            if self._index is not None:
                self._index.remember(ref)
            else:
                self._extra.setdefault(ref.id, ref)

    def forget_packs(self, packs: set[str]) -> None:
        """Drop the chunks of `packs` (found missing) from the index, so the next ingest stores them
        again instead of pointing at the missing packs."""
        with self._lock:
            for cid in [cid for cid, ref in self._extra.items() if ref.pack in packs]:
                del self._extra[cid]
            if self._index is not None:
                self._index.forget_packs(packs)

    def lookup(self, cid: str) -> ChunkRef | None:
        if self._index is not None:
            return self._index.get(cid)
        return self._extra.get(cid)

    # -- ingest --------------------------------------------------------------------------------
    def ingest(
        self,
        sources: Iterable[tuple[object, str]],
        progress: ProgressFn | None = None,
    ) -> tuple[list[IngestedFile], PackWriter]:
        """Chunk, dedup, compress and store files; returns their chunk lists once every pack is published.

        `sources` yields (caller's key, local path). `jobs` worker threads each take whole files
        (read, cut, hash, compress: the heavy parts release the GIL) and queue new chunks; this
        thread appends them to packs, so packs are written by one thread in arrival order.
        """
        index = self.index()
        writer = PackWriter(self, uploads=max(2, min(self.jobs, 4)))
        level = self.config.compression.level
        chunker = self.chunker
        numbered = enumerate(sources)
        take_lock = threading.Lock()
        appends: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
        finished: dict[int, tuple[object, int, str, list[str]]] = {}
        stop = threading.Event()
        small_files = threading.Lock()

        def next_source():
            with take_lock:
                return None if stop.is_set() else next(numbered, None)

        def ingest_file(source: object, path: str, outbox: _Outbox, probe: _Probe, read_buffers: ReadBuffers,
                        turn: _SmallFileTurn) -> tuple[object, int, str, list[str]]:
            hasher = None  # the whole-file digest, from the second chunk on: a one-chunk file's is its id
            first: bytes | memoryview | None = None
            size = 0
            ids: list[str] = []
            probe.start_file(path)
            for view in chunker.split_path(path, reuse=read_buffers, before_reading=turn.before_reading):
                if hasher is not None:
                    hasher.update(view)
                elif first is None:  # a view into a reused read buffer changes later: keep a copy of that
                    first = view if isinstance(view.obj, bytes) else bytes(view)
                else:
                    hasher = xxhash.xxh3_128(first)
                    hasher.update(view)
                size += len(view)
                cid = xxhash.xxh3_128_hexdigest(view)
                ids.append(cid)
                if cid not in index and not writer.has(cid):
                    if probe.worth_trying(view, level):
                        codec_id, payload = codec.encode(view, level)
                    else:
                        codec_id, payload = codec.RAW, view
                    probe.record(codec_id)
                    if codec_id == codec.RAW:
                        read_buffers.hold(outbox.done)
                    outbox.add((cid, codec_id, payload, len(view)))
                if progress:
                    progress(len(view))
            # One chunk: the same string object for its id and the file's digest saves memory per file.
            digest = hasher.hexdigest() if hasher is not None else ids[0] if ids else _EMPTY_DIGEST
            return source, size, digest, ids

        def worker() -> None:
            outbox = _Outbox(appends, stop)
            probe = _Probe()
            read_buffers = ReadBuffers(_READ_BUFFERS, outbox.wait_for)
            turn = _SmallFileTurn(small_files, stop)
            try:
                while (item := next_source()) is not None:
                    number, (source, path) = item
                    try:
                        finished[number] = ingest_file(source, path, outbox, probe, read_buffers, turn)
                    except OSError as exc:
                        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
                turn.release()
                outbox.send()
                appends.put(_DONE)
            except BaseException as exc:  # handed to the appending thread, which re-raises it
                turn.release()
                stop.set()
                appends.put(exc)

        threads = [threading.Thread(target=worker, name=f"dvx-ingest-{i}", daemon=True) for i in range(self.jobs)]
        for thread in threads:
            thread.start()
        failure: BaseException | None = None
        running = len(threads)
        try:
            while running:
                item = appends.get()
                if item is _DONE:
                    running -= 1
                elif isinstance(item, BaseException):
                    if not isinstance(item, _Stopped):
                        failure = failure or item
                    running -= 1
                else:
                    items, done = item
                    if failure is None:  # workers send only chunks the index lacked; append skips repeats
                        for cid, codec_id, payload, raw_size in items:
                            writer.append(cid, codec_id, payload, raw_size)
                        writer.flush()
                    done.set()
            if failure is not None:
                raise failure
            writer.finish()
        except BaseException:
            stop.set()
            writer.abort()
            while any(t.is_alive() for t in threads):  # let workers blocked on a full queue finish
                try:
                    item = appends.get(timeout=0.05)
                except queue.Empty:
                    continue
                if isinstance(item, tuple):
                    item[1].set()
            raise
        results = []
        for number in sorted(finished):
            source, size, digest, ids = finished[number]
            refs = [self.lookup(cid) or writer.new_refs[cid] for cid in ids]
            results.append(IngestedFile(source, size, digest, refs))
        return results, writer

    # -- reads ---------------------------------------------------------------------------------
    def read_chunks(self, refs: Sequence[ChunkRef], fill: bool | None = None) -> Iterator[bytes]:
        """Raw bytes of `refs` in order, each decompressed within its recorded size and re-hashed.

        Chunks in the local chunk cache (if there is one) are read from it, verified the same way;
        the others come from the store in reads of up to READ_BATCH bytes each. When there are several
        reads, up to `jobs` of them are in flight at once (read-ahead), so one large file streams at
        the store's parallel speed. `fill` (default: the store's `fill_cache`) also hands the chunks
        fetched from the store to the cache's background writer."""
        cache = self.cache if self.cache is not None and self.cache.max_bytes > 0 else None
        fill = self.fill_cache if fill is None else fill
        lookup = cache if cache is not None and cache.available() else None
        put = cache.put_later if cache is not None and fill else None
        groups = list(_plan_reads(refs, lookup))

        def fetch(group: tuple[str | None, list[ChunkRef]]):
            pack, members = group
            if pack is None:  # from the cache: read and verified here, in the worker
                return None, [self._cached_chunk(ref, put) for ref in members]
            spans = _merge_spans(members)
            return spans, self.store.read_ranges(pack_key(pack), [(s, e) for s, e, _ in spans])

        if len(groups) <= 1 or self.jobs <= 1:
            yield from _verified(map(fetch, groups), put)
            return
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(min(self.jobs, len(groups)), thread_name_prefix="dvx-read") as pool:
            window: deque[Future] = deque()
            pending = iter(groups)
            for group in itertools.islice(pending, self.jobs):
                window.append(pool.submit(fetch, group))

            def in_order() -> Iterator:
                while window:
                    result = window.popleft().result()
                    for group in itertools.islice(pending, 1):
                        window.append(pool.submit(fetch, group))
                    yield result

            try:
                yield from _verified(in_order(), put)
            finally:
                for future in window:
                    future.cancel()

    def _cached_chunk(self, ref: ChunkRef, put: Callable[[str, bytes], object] | None) -> bytes:
        """One chunk from the cache (which verifies it); from the store if it went missing since."""
        data = self.cache.get(ref.id, ref.size)
        if data is None:
            payload = self.store.read_ranges(pack_key(ref.pack), [(ref.offset, ref.offset + ref.length)])[0]
            data = verify_chunk(ref, payload)
            if put is not None:
                put(ref.id, data)
        return data


def _verified(fetched: Iterator, put: Callable[[str, bytes], object] | None = None) -> Iterator[bytes]:
    """Chunks of each fetched read in order: store payloads are decoded and verified here (then handed
    to the cache's background writer when filling); cache hits come verified already."""
    for spans, blobs in fetched:
        if spans is None:
            yield from blobs
            continue
        for blob, (start, _end, members) in zip(blobs, spans):
            for ref in members:
                data = verify_chunk(ref, blob[ref.offset - start: ref.offset - start + ref.length])
                if put is not None:
                    put(ref.id, data)
                yield data


def verify_chunk(ref: ChunkRef, payload: bytes) -> bytes:
    data = codec.decode(ref.codec, payload, ref.size)
    if len(data) != ref.size or xxhash.xxh3_128_hexdigest(data) != ref.id:
        raise IntegrityError(f"chunk {ref.id} in pack {ref.pack} is damaged (content does not match its id)")
    return data


def _plan_reads(refs: Sequence[ChunkRef], cache: ChunkCache | None) -> Iterator[tuple[str | None, list[ChunkRef]]]:
    """Reads for `refs` in order: (None, refs) runs found in the cache, (pack id, refs) from the store.

    A short run of cached chunks (under MERGE_GAP bytes) between chunks that must come from the store is
    read from the store with them: it would split one read into two for little gain."""
    if cache is None:
        yield from _group_reads(refs)
        return
    cached = cache.present([ref.id for ref in refs])
    if not cached:
        yield from _group_reads(refs)
        return
    run: list[ChunkRef] = []  # to read from the store
    hits: list[ChunkRef] = []  # cached, not yet placed
    hit_bytes = 0
    for ref in refs:
        if ref.id in cached:
            hits.append(ref)
            hit_bytes += ref.size
            continue
        if hits:
            if run and hit_bytes < MERGE_GAP:
                run.extend(hits)
            else:
                yield from _group_reads(run)
                run = []
                yield from _cache_groups(hits)
            hits, hit_bytes = [], 0
        run.append(ref)
    yield from _group_reads(run)
    yield from _cache_groups(hits)


def _cache_groups(refs: list[ChunkRef]) -> Iterator[tuple[None, list[ChunkRef]]]:
    """Cached refs in batches of at most READ_BATCH raw bytes (one worker task each)."""
    group: list[ChunkRef] = []
    size = 0
    for ref in refs:
        if group and size + ref.size > READ_BATCH:
            yield None, group
            group, size = [], 0
        group.append(ref)
        size += ref.size
    if group:
        yield None, group


def _group_reads(refs: Sequence[ChunkRef]) -> Iterator[tuple[str, list[ChunkRef]]]:
    """Consecutive refs of one pack, in batches of at most READ_BATCH bytes."""
    group: list[ChunkRef] = []
    size = 0
    for ref in refs:
        if group and (ref.pack != group[0].pack or size + ref.length > READ_BATCH):
            yield group[0].pack, group
            group, size = [], 0
        group.append(ref)
        size += ref.length
    if group:
        yield group[0].pack, group


def _merge_spans(group: list[ChunkRef]) -> list[tuple[int, int, list[ChunkRef]]]:
    """Byte spans covering `group`, merging refs whose gap is under MERGE_GAP (order kept)."""
    spans: list[tuple[int, int, list[ChunkRef]]] = []
    for ref in group:
        end = ref.offset + ref.length
        if spans:
            start, last_end, members = spans[-1]
            if start <= ref.offset and ref.offset - last_end <= MERGE_GAP:
                spans[-1] = (start, max(last_end, end), members + [ref])
                continue
        spans.append((ref.offset, end, [ref]))
    return spans


def init_config_like(store: Store, template: StoreConfig) -> StoreConfig:
    """Initialise an empty store with `template`'s chunking, compression and pack size (so data copied
    into it keeps deduplicating), under a store id of its own. An existing config is kept."""
    existing = load_config(store, create=False)
    if existing is not None:
        return existing
    fresh = msgspec.structs.replace(template, store_id=uuid.uuid4().hex,
                                    created=datetime.now(timezone.utc).isoformat())
    store.put_create(CONFIG_KEY, msgspec.json.encode(fresh, order="sorted"))
    return load_config(store, create=False)


def stored_pack_ids(store: Store) -> set[str]:
    """Ids of the packs a store holds, from its index segments (one listing)."""
    return {name.removesuffix(".idx") for name in store.list("index") if name.endswith(".idx")}


def copy_pack(source: Store, dest: Store, pack_id: str) -> int:
    """Copy one pack byte for byte, verifying every chunk on the way, then its index segment
    (pack before index, BRIEF §4). Returns the bytes moved; 0 if `dest` already had it."""
    data = source.read(pack_key(pack_id))
    refs = split_pack(data, pack_id)
    for ref in refs:
        verify_chunk(ref, data[ref.offset:ref.offset + ref.length])
    footer_len = TRAILER.unpack_from(data, len(data) - TRAILER.size)[0]
    footer = data[len(data) - TRAILER.size - footer_len: len(data) - TRAILER.size]
    created = dest.put_create(pack_key(pack_id), data)
    dest.put_create(index_key(pack_id), footer)
    return len(data) if created else 0
