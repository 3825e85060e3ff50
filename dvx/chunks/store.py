"""The chunk store: store config, the chunk index, ingest (files → deduplicated packs) and verified reads."""

from __future__ import annotations

import os
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import msgspec
import xxhash

from dvx.chunks import codec
from dvx.chunks.chunker import Chunker, ChunkerParams
from dvx.chunks.pack import (
    TRAILER,
    TRAILER_MAGIC,
    ChunkRef,
    decode_footer,
    encode_footer,
    footer_id,
    index_key,
    pack_key,
)
from dvx.errors import IntegrityError, NotFoundError, StoreError
from dvx.fs import Store

CONFIG_KEY = "config.json"
CONFIG_FORMAT_VERSION = 1
DEFAULT_PACK_SIZE = 32 << 20
# Ranges closer than this are fetched as one read.
MERGE_GAP = 256 << 10
# Upper bound of bytes requested from the store in one read_ranges call.
READ_BATCH = 16 << 20
_BATCH_BYTES = 4 << 20
_BATCH_CHUNKS = 512
_PROBE_AFTER = 4
_PROBE_EVERY = 16

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
    return config


@dataclass
class IngestedFile:
    """One file's content as stored: size, whole-content digest and its chunks in order."""

    source: object
    size: int
    digest: str
    chunks: list[ChunkRef]


@dataclass
class _Pending:
    source: object
    hasher: object
    size: int = 0
    chunk_ids: list[str] = field(default_factory=list)


class PackWriter:
    """Appends new chunks to packs of ~pack_size and publishes each pack (and its index segment)."""

    def __init__(self, chunk_store: ChunkStore):
        self._cs = chunk_store
        self._upload = None
        self._entries: list[tuple[str, int, int, int, int]] = []
        self._unsealed: set[str] = set()
        self.new_refs: dict[str, ChunkRef] = {}
        self.stored_bytes = 0
        self.packs_written = 0

    def has(self, cid: str) -> bool:
        return cid in self._unsealed or cid in self.new_refs

    def append(self, cid: str, codec_id: int, payload, raw_size: int) -> None:
        if self.has(cid):
            return
        if self._upload is None:
            self._upload = self._cs.store.begin_upload()
        offset = self._upload.tell()
        self._upload.write(payload)
        self._entries.append((cid, offset, len(payload), raw_size, codec_id))
        self._unsealed.add(cid)
        self.stored_bytes += len(payload)
        if self._upload.tell() >= self._cs.config.pack_size:
            self.seal()

    def seal(self) -> None:
        """Publish the open pack: pack first, then its index segment (BRIEF §4 write order)."""
        if self._upload is None:
            return
        footer = encode_footer(self._entries)
        self._upload.write(footer)
        self._upload.write(TRAILER.pack(len(footer), TRAILER_MAGIC))
        pack_id = footer_id(footer)
        self._upload.commit(pack_key(pack_id))
        self._cs.store.put_create(index_key(pack_id), footer)
        for cid, off, length, size, codec_id in self._entries:
            ref = ChunkRef(cid, pack_id, off, length, size, codec_id)
            self.new_refs[cid] = ref
            self._cs.remember(ref)
        self.packs_written += 1
        self._upload = None
        self._entries = []
        self._unsealed = set()

    def abort(self) -> None:
        if self._upload is not None:
            self._upload.abort()
            self._upload = None


class ChunkStore:
    def __init__(self, store: Store, config: StoreConfig, jobs: int | None = None):
        self.store = store
        self.config = config
        self.chunker = Chunker(config.chunker)
        self.jobs = jobs or min(4, os.cpu_count() or 2)
        self._index: dict[str, ChunkRef] | None = None
        self._loaded_segments: set[str] = set()
        self._extra: dict[str, ChunkRef] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, store: Store, create: bool = False, jobs: int | None = None) -> ChunkStore | None:
        config = load_config(store, create)
        return None if config is None else cls(store, config, jobs)

    # -- index ---------------------------------------------------------------------------------
    def index(self) -> dict[str, ChunkRef]:
        """chunk id → location for every chunk in the store (segments are small; loaded once)."""
        if self._index is None:
            index: dict[str, ChunkRef] = dict(self._extra)
            for name in self.store.list("index"):
                if not name.endswith(".idx"):
                    continue
                pack_id = name[:-4]
                for ref in decode_footer(self.store.read(index_key(pack_id)), pack_id):
                    index[ref.id] = ref
                self._loaded_segments.add(pack_id)
            self._index = index
        return self._index

    def remember(self, ref: ChunkRef) -> None:
        """Record a chunk known to be stored (from a parent manifest or a pack just written)."""
        with self._lock:
            if self._index is not None:
                self._index.setdefault(ref.id, ref)
            else:
                self._extra.setdefault(ref.id, ref)

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

        `sources` yields (caller's key, local path). The main thread reads and cuts; a pool hashes and
        compresses (zstandard and xxhash release the GIL); results are appended to packs in order.
        """
        self.index()
        writer = PackWriter(self)
        level = self.config.compression.level
        index = self._index

        def work(views: list[memoryview], owners: list[_Pending]) -> list[tuple[str, int, object, int]]:
            out = []
            incompressible_run = 0
            previous_owner = None
            for view, owner in zip(views, owners):
                if owner is not previous_owner:
                    incompressible_run, previous_owner = 0, owner
                cid = xxhash.xxh3_128_hexdigest(view)
                if cid in index or writer.has(cid):
                    out.append((cid, -1, None, len(view)))
                    continue
                # After a run of chunks that zstd could not shrink (media, encrypted or random data),
                # only every _PROBE_EVERY-th chunk is tried until one compresses again.
                if incompressible_run >= _PROBE_AFTER and incompressible_run % _PROBE_EVERY:
                    codec_id, payload = codec.RAW, view
                else:
                    codec_id, payload = codec.encode(view, level)
                incompressible_run = incompressible_run + 1 if codec_id == codec.RAW else 0
                out.append((cid, codec_id, payload, len(view)))
            return out

        finished: list[_Pending] = []
        in_flight: deque = deque()

        def store_new(results: list[tuple[str, int, object, int]], views: list[memoryview],
                      owners: list[_Pending]) -> None:
            """In file order, on one thread: append new chunks to packs and feed the file digests."""
            for (cid, codec_id, payload, raw_size), view, owner in zip(results, views, owners):
                owner.hasher.update(view)
                if codec_id >= 0 and cid not in index:
                    writer.append(cid, codec_id, payload, raw_size)

        def drain(limit: int) -> None:
            while len(in_flight) > limit:
                future, views, owners, closing = in_flight.popleft()
                results = future.result()
                appends.append(append_pool.submit(store_new, results, views, owners))
                for owner, (cid, _, _, raw_size) in zip(owners, results):
                    owner.chunk_ids.append(cid)
                    if progress:
                        progress(raw_size)
                finished.extend(closing)
                while len(appends) > 2:
                    appends.popleft().result()

        batch: list[memoryview] = []
        owners: list[_Pending] = []
        closing: list[_Pending] = []
        batch_bytes = 0
        appends: deque = deque()
        try:
            with ThreadPoolExecutor(self.jobs) as pool, ThreadPoolExecutor(1) as append_pool:
                for source, path in sources:
                    pending = _Pending(source, xxhash.xxh3_128())
                    try:
                        for view in self.chunker.split_path(path):
                            pending.size += len(view)
                            batch.append(view)
                            owners.append(pending)
                            batch_bytes += len(view)
                            if batch_bytes >= _BATCH_BYTES or len(batch) >= _BATCH_CHUNKS:
                                in_flight.append((pool.submit(work, batch, owners), batch, owners, closing))
                                batch, owners, closing, batch_bytes = [], [], [], 0
                                drain(self.jobs * 2)
                    except OSError as exc:
                        raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
                    closing.append(pending)
                in_flight.append((pool.submit(work, batch, owners), batch, owners, closing))
                drain(0)
                while appends:
                    appends.popleft().result()
            writer.seal()
        except BaseException:
            writer.abort()
            raise
        results = []
        for pending in finished:
            refs = [self.lookup(cid) or writer.new_refs[cid] for cid in pending.chunk_ids]
            results.append(IngestedFile(pending.source, pending.size, pending.hasher.hexdigest(), refs))
        return results, writer

    # -- reads ---------------------------------------------------------------------------------
    def read_chunks(self, refs: Sequence[ChunkRef]) -> Iterator[bytes]:
        """Raw bytes of `refs` in order, each decompressed within its recorded size and re-hashed."""
        for pack_id, group in _group_reads(refs):
            spans = _merge_spans(group)
            blobs = self.store.read_ranges(pack_key(pack_id), [(s, e) for s, e, _ in spans])
            for blob, (start, _end, members) in zip(blobs, spans):
                for ref in members:
                    payload = blob[ref.offset - start: ref.offset - start + ref.length]
                    yield verify_chunk(ref, payload)


def verify_chunk(ref: ChunkRef, payload: bytes) -> bytes:
    data = codec.decode(ref.codec, payload, ref.size)
    if len(data) != ref.size or xxhash.xxh3_128_hexdigest(data) != ref.id:
        raise IntegrityError(f"chunk {ref.id} in pack {ref.pack} is damaged (content does not match its id)")
    return data


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
