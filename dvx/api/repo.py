"""A session with one store: its chunk store, refs, manifests and the local stat cache."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property

import msgspec
import xxhash

from dvx.api.config import Settings, load_settings
from dvx.chunks import ChunkStore
from dvx.chunks.cache import ChunkCache
from dvx.errors import NotFoundError
from dvx.fs import Store, open_store
from dvx.manifests import (
    FileEntry,
    Manifest,
    StatCache,
    manifest_key,
)
from dvx.manifests.paged import (
    ManifestRoot,
    PageRef,
    PageReuse,
    all_files,
    decode_root,
    ends_page,
    page_key,
    read_pages,
)
from dvx.refs import Ref, Refs, VersionRecord, parse_ref


class Repo:
    def __init__(self, settings: Settings | None = None, store: str | None = None):
        self.settings = settings or load_settings(store)
        self._manifests: dict[str, Manifest] = {}
        self._roots: dict[str, ManifestRoot] = {}

    @classmethod
    def other(cls, settings: Settings, name_or_url: str) -> Repo:
        """A session with another store (a URL or a store named in dvx.toml), e.g. a push target."""
        url, options = settings.store_spec(name_or_url)
        return cls(msgspec.structs.replace(settings, store_url=url, store_options=options, store_source=name_or_url))

    @cached_property
    def store(self) -> Store:
        return open_store(*self.settings.store_spec())

    @property
    def store_key(self) -> str:
        """Stable short key for per-store local state (drafts, caches)."""
        return xxhash.xxh3_64_hexdigest(self.settings.store_url.encode())

    def chunk_store(self, create: bool = False) -> ChunkStore:
        cs = self.__dict__.get("_chunk_store")
        if cs is None:
            cs = ChunkStore.open(self.store, create=create, jobs=self.settings.jobs, cache=self.chunk_cache(),
                                 fill_cache=self.settings.chunk_cache_on_get)
            if cs is None:
                raise NotFoundError(
                    f"store {self.settings.store_url} is empty: nothing has been committed to it yet")
            self.__dict__["_chunk_store"] = cs
        return cs

    def chunk_cache(self) -> ChunkCache | None:
        """The local chunk cache shared by every store (chunks are content-addressed); None when its
        limit is 0. `dvx get` reads from it; streaming reads (dvx.open, dvx://) also fill it."""
        limit = self.settings.chunk_cache_max_bytes
        return ChunkCache(self.settings.chunk_cache_dir, limit) if limit > 0 else None

    def chunk_store_exists(self) -> bool:
        try:
            self.chunk_store()
        except NotFoundError:
            return False
        return True

    def refs(self, kind: str = "dataset") -> Refs:
        return Refs(self.store, kind)

    def stat_cache(self) -> StatCache:
        cache = self.__dict__.get("_stat_cache")
        if cache is None:
            cache = StatCache(self.settings.cache_dir / "statcache.sqlite", self.chunk_store(create=True).config.store_id)
            self.__dict__["_stat_cache"] = cache
        return cache

    # -- manifests -----------------------------------------------------------------------------
    def manifest_root(self, manifest_id: str) -> ManifestRoot:
        """The manifest's root: header, totals and page table (one small read)."""
        root = self._roots.get(manifest_id)
        if root is None:
            try:
                stored = self.store.read(manifest_key(manifest_id))
            except NotFoundError:
                raise NotFoundError(f"manifest {manifest_id} is missing from store {self.store.url}") from None
            root = self._roots[manifest_id] = decode_root(stored, manifest_id)
        return root

    def read_manifest(self, manifest_id: str) -> Manifest:
        """The whole manifest: every page read (in parallel) and checked together."""
        manifest = self._manifests.get(manifest_id)
        if manifest is None:
            root = self.manifest_root(manifest_id)
            manifest = self._manifests[manifest_id] = root.with_files(all_files(self.store.read, root))
        return manifest

    def reusable_pages(self, manifest_ids: Iterable[str]) -> PageReuse:
        """For encode_paged: a run of entries that are the very same objects, in the same order, as a
        page of one of these manifests (read whole by this session), and that ends where a fresh split
        would end it, is that page; its paths are not hashed nor its JSON built again."""
        table: dict[str, tuple[PageRef, list[FileEntry], int]] = {}
        for manifest_id in manifest_ids:
            manifest, root = self._manifests.get(manifest_id), self._roots.get(manifest_id)
            if manifest is None or root is None:
                continue
            start = 0
            for ref in root.pages:
                table[ref.first] = (ref, manifest.files, start)
                start += ref.files

        def reuse(files: Sequence[FileEntry], at: int) -> PageRef | None:
            found = table.get(files[at].path)
            if found is None:
                return None
            ref, known, start = found
            count = ref.files
            if at + count > len(files) or any(a is not b for a, b in zip(files[at:at + count], known[start:start + count])):
                return None
            last_of_all = at + count == len(files)
            if not last_of_all and not ends_page(files[at + count - 1], count,
                                                 sum(len(f.chunks) for f in known[start:start + count])):
                return None  # the parent's last page, now followed by more files: split afresh
            return ref

        return reuse

    def files_under(self, manifest_id: str, prefix: str) -> list[FileEntry]:
        """Files whose path starts with `prefix` (a string prefix: "folder/", or a whole path), reading
        only the pages that can hold them."""
        manifest = self._manifests.get(manifest_id)
        if manifest is None:
            root = self.manifest_root(manifest_id)
            if root.inline is not None or not prefix:
                return [f for f in self.read_manifest(manifest_id).files if f.path.startswith(prefix)]
            pages = read_pages(self.store.read, root, root.pages_under(prefix))
            return [f for page in pages for f in page if f.path.startswith(prefix)]
        return [f for f in manifest.files if f.path.startswith(prefix)]

    def pages(self, manifest_id: str, indices: Iterable[int]) -> list[list[FileEntry]]:
        """Pages `indices` of a format 3 manifest (in that order), each read and checked against its root."""
        return read_pages(self.store.read, self.manifest_root(manifest_id), indices)

    def manifest_keys(self, manifest_id: str) -> set[str]:
        """Store keys of the manifest's own objects: its root and its pages."""
        root = self.manifest_root(manifest_id)
        return {manifest_key(manifest_id)} | {page_key(p.id) for p in root.pages}

    # -- references ----------------------------------------------------------------------------
    def resolve(self, ref: str | Ref, kind: str = "dataset") -> VersionRecord:
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        return self.refs(kind).resolve(parsed)

    def close(self) -> None:
        cache = self.__dict__.pop("_stat_cache", None)
        if cache is not None:
            cache.close()
        if "store" in self.__dict__:
            self.store.close()
