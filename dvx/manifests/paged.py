"""Paged manifests (format 3): a small root document plus content-addressed pages of files.

A version's files, sorted by path, are cut into pages where a path's xxh3-64 hash says so (about one
page per PAGE_SPLIT files; a page also ends at PAGE_MAX_FILES files or PAGE_MAX_CHUNKS chunks). The cut
depends on the paths only, so a version that changes a few files re-uses every other page of its parent
byte for byte: only the pages holding changed paths, and the root, are new. The root lists each page's
id, first path, file count and bytes, so a reader of one folder or one file fetches the root and the
pages whose path range it needs (docs/storage-format.md, "Paged manifests").

Roots live at ``manifests/<id[:2]>/<id>.json.zst`` like earlier single-document manifests (the id is the
xxh3-128 of the root's JSON, so it covers every page through their ids); pages at
``pages/<id[:2]>/<id>.json.zst``. Formats 1 and 2 (every file in one document) are still read: their
root carries the files inline.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from typing import NamedTuple

import msgspec
import xxhash

from dvx.chunks import ChunkRef
from dvx.chunks.codec import CODEC_NAMES, MAX_CHUNK_SIZE, MAX_STORED_SIZE
from dvx.errors import IntegrityError, NotFoundError, UsageError
from dvx.manifests.model import (
    _HEX_RUN,
    _MAX_OFFSET,
    HEX32,
    KINDS,
    WHOLE_MANIFEST_TYPES,
    FileEntry,
    HeaderFields,
    Manifest,
    _decompress_manifest,
    _Malformed,
    _shown,
    compress_manifest,
    decode_document,
    validate_files,
    validate_link,
    validate_path,
    validate_stored_files,
    whole_manifest,
)

ROOT_FORMAT_VERSION = 3
PAGE_FORMAT_VERSION = 3  # pages belong to format 3 manifests and share their number
PAGE_SPLIT = 256  # a page ends after a path whose xxh3-64 is divisible by this: ~256 files per page
PAGE_MAX_FILES = 4096
PAGE_MAX_CHUNKS = 1 << 16
_PAGE_READ_JOBS = 16  # pages fetched at once (cloud stores answer each read in tens of ms)
FOLDER_SUMMARY_MAX = 20_000  # a root lists its folders only up to this many (at ~50 bytes a folder: ~1 MB)


class PageRef(msgspec.Struct, kw_only=True):
    """A page as the root lists it: its id, its first path, and how many files and bytes it holds."""

    id: str
    first: str
    files: int
    bytes: int


class FolderSummary(msgspec.Struct, kw_only=True):
    """A folder as the root lists it: its path (no trailing slash) and the files and bytes under it at any
    depth, so a reader lists a folder's subfolders without reading pages."""

    path: str
    files: int
    bytes: int


class _PageFiles(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A page's files as columns, one value per file (index i is the i-th path)."""

    paths: list[str]
    sizes: list[int]
    digests: str  # 32 hex digits per file, concatenated
    chunk_counts: list[int]
    executable: list[int] = []  # indices of the files with the owner-execute bit
    links: list[tuple[int, str]] = []  # (index, target) of the symlinks


class _PageChunks(msgspec.Struct, kw_only=True):
    """Every chunk of the page's files, in file order, as format 2's columns."""

    ids: str
    packs: list[int]
    offsets: list[int]
    lengths: list[int]
    sizes: list[int]
    codecs: list[int]


class _WirePage(msgspec.Struct, kw_only=True):
    format_version: int
    packs: list[str]
    files: _PageFiles
    chunks: _PageChunks


class _WireRoot(HeaderFields, kw_only=True, omit_defaults=True):
    format_version: int
    files: int
    bytes: int
    chunks: int  # distinct chunks
    stored_bytes: int  # their stored (compressed) bytes
    packs: int  # distinct packs they live in
    pages: list[PageRef]
    # Every folder holding a file at any depth, by path; absent in roots written before it existed and
    # when there are more than FOLDER_SUMMARY_MAX folders.
    folders: list[FolderSummary] | None = None


class ManifestRoot(HeaderFields, kw_only=True):
    """A version's manifest without its files: header fields, totals and the page table. Manifests of
    formats 1-2 have no pages; their files come `inline`."""

    id: str
    file_count: int
    total_size: int
    pages: list[PageRef] = msgspec.field(default_factory=list)
    inline: list[FileEntry] | None = None
    # Distinct chunks, their stored bytes and packs (None for formats 1-2, which do not record them).
    chunk_count: int | None = None
    stored_size: int | None = None
    pack_count: int | None = None
    # Every folder with its files and bytes at any depth, sorted by path; None when the root has no summary
    # (formats 1-2, format 3 roots written before it existed, more than FOLDER_SUMMARY_MAX folders).
    folders: list[FolderSummary] | None = None

    def with_files(self, files: list[FileEntry]) -> Manifest:
        return Manifest(kind=self.kind, name=self.name, parents=self.parents, created=self.created,
                        author=self.author, message=self.message, metadata=self.metadata, files=files)

    def pages_in_range(self, low: str, high: str | None) -> list[int]:
        """Indices of the pages that may hold a path p with low <= p < high (high None: no end)."""
        firsts = [p.first for p in self.pages]
        start = max(0, bisect.bisect_right(firsts, low) - 1)
        stop = len(firsts) if high is None else bisect.bisect_left(firsts, high)
        return list(range(start, max(start, stop)))

    def pages_under(self, prefix: str) -> list[int]:
        """Pages that may hold paths starting with `prefix` (a string prefix, e.g. "folder/")."""
        return self.pages_in_range(prefix, prefix_end(prefix)) if prefix else list(range(len(self.pages)))

    def folder(self, path: str) -> FolderSummary | None:
        """The summary of folder `path` ("a/b"), None when no file lies under it (or without a summary)."""
        folders = self.folders or []
        at = bisect.bisect_left(folders, path, key=lambda f: f.path)
        return folders[at] if at < len(folders) and folders[at].path == path else None

    def subfolders(self, path: str) -> list[FolderSummary]:
        """The folders directly inside folder `path` ("" for the top), in path order, from the summary."""
        folders = self.folders or []
        if not path:
            return [f for f in folders if "/" not in f.path]
        start = bisect.bisect_left(folders, path + "/", key=lambda f: f.path)
        stop = bisect.bisect_left(folders, path + "0", lo=start, key=lambda f: f.path)  # "0" follows "/"
        width = len(path) + 1
        return [f for f in folders[start:stop] if f.path.find("/", width) < 0]


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` ("a/" → "a0"); None: there is none."""
    kept = prefix.rstrip("\U0010ffff")
    return kept[:-1] + chr(ord(kept[-1]) + 1) if kept else None


def page_key(page_id: str) -> str:
    return f"pages/{page_id[:2]}/{page_id}.json.zst"


def ends_page(entry: FileEntry, files: int, chunks: int) -> bool:
    """Whether a page ends after `entry`, its `files`-th file, holding `chunks` chunks so far."""
    return (xxhash.xxh3_64_intdigest(entry.path.encode()) % PAGE_SPLIT == 0 or files >= PAGE_MAX_FILES
            or chunks >= PAGE_MAX_CHUNKS)


# reuse(files, i): the PageRef of a known page made of exactly files[i:i + ref.files] (the same entry
# objects) that split_pages would cut the same way, else None.
PageReuse = Callable[[Sequence[FileEntry], int], "PageRef | None"]


def split_pages(files: Sequence[FileEntry], reuse: PageReuse | None = None) -> list[tuple[list[FileEntry], PageRef | None]]:
    """Files (sorted by path) cut into pages, each with the PageRef of the known page it equals (or
    None). Where a cut falls depends on the paths alone, except in the rare page that hits
    PAGE_MAX_FILES or PAGE_MAX_CHUNKS, whose effect ends at the next cut; a known page is taken whole
    without hashing its paths again."""
    pages: list[tuple[list[FileEntry], PageRef | None]] = []
    page: list[FileEntry] = []
    chunks = 0
    at, count = 0, len(files)
    path_hash = xxhash.xxh3_64_intdigest
    while at < count:
        if not page and reuse is not None:
            ref = reuse(files, at)
            if ref is not None:
                pages.append((list(files[at:at + ref.files]), ref))
                at += ref.files
                continue
        entry = files[at]
        at += 1
        page.append(entry)
        chunks += len(entry.chunks)
        # ends_page, inline: this loop runs once per file of every new version
        if (path_hash(entry.path.encode()) % PAGE_SPLIT == 0 or len(page) >= PAGE_MAX_FILES
                or chunks >= PAGE_MAX_CHUNKS):
            pages.append((page, None))
            page, chunks = [], 0
    if page:
        pages.append((page, None))
    return pages


def summarise_folders(files: Sequence[FileEntry]) -> list[FolderSummary] | None:
    """Every folder holding a file at any depth with the files and bytes under it, sorted by path, from
    files sorted by path; None past FOLDER_SUMMARY_MAX folders. A folder's files are one run of the
    sorted paths, found by binary search, so its totals are the run's length and sum; only the runs of
    folders that hold both files and subfolders are walked file by file (a million files: ~0.3 s)."""
    paths = [f.path for f in files]
    sizes = [f.size for f in files]
    folders: dict[str, tuple[int, int]] = {}
    runs = [(0, len(paths), "")]  # (start, stop, "folder/") of folders still to look into
    while runs:
        start, stop, prefix = runs.pop()
        if prefix:
            folders[prefix[:-1]] = (stop - start, sum(sizes[start:stop]))
            if len(folders) > FOLDER_SUMMARY_MAX:
                return None
        if "".join(paths[start:stop]).count("/") == prefix.count("/") * (stop - start):
            continue  # no subfolders
        at = start
        while at < stop:
            slash = paths[at].find("/", len(prefix))
            if slash < 0:  # a file of this folder
                at += 1
                continue
            inner = paths[at][:slash]
            # "0" follows "/": the end of inner's run (at least one file on, even given unsorted files)
            end = max(at + 1, bisect.bisect_left(paths, inner + "0", at, stop))
            runs.append((at, end, inner + "/"))
            at = end
    return [FolderSummary(path=path, files=folders[path][0], bytes=folders[path][1]) for path in sorted(folders)]


def encode_page(files: Sequence[FileEntry]) -> tuple[str, bytes]:
    """(page id, canonical JSON) of one page: files and chunks in columns (one list per field, not one
    object per file: a million files decode several times faster), its own pack list, chunk offsets as
    deltas from the end of the previous chunk of the same pack (as in format 2)."""
    chunk_refs = [c for f in files for c in f.chunks]
    packs = sorted({c.pack for c in chunk_refs})
    pack_index = {p: i for i, p in enumerate(packs)}
    pack_numbers = [pack_index[c.pack] for c in chunk_refs]
    lengths = [c.length for c in chunk_refs]
    offsets = []
    ends = [0] * len(packs)
    for number, offset, length in zip(pack_numbers, [c.offset for c in chunk_refs], lengths):
        offsets.append(offset - ends[number])
        ends[number] = offset + length
    columns = _PageFiles(paths=[f.path for f in files], sizes=[f.size for f in files],
                         digests="".join([f.digest for f in files]), chunk_counts=[len(f.chunks) for f in files],
                         executable=[number for number, f in enumerate(files) if f.executable],
                         links=[(number, f.link) for number, f in enumerate(files) if f.link is not None])
    chunks = _PageChunks(ids="".join([c.id for c in chunk_refs]), packs=pack_numbers, offsets=offsets,
                         lengths=lengths, sizes=[c.size for c in chunk_refs], codecs=[c.codec for c in chunk_refs])
    data = msgspec.json.encode(_WirePage(format_version=PAGE_FORMAT_VERSION, packs=packs, files=columns,
                                         chunks=chunks), order="sorted")
    return xxhash.xxh3_128_hexdigest(data), data


class EncodedManifest(NamedTuple):
    id: str
    data: bytes  # the root's canonical JSON
    pages: list[tuple[PageRef, bytes]]  # every page, in path order, with its JSON compressed (ready to store)


def encode_paged(manifest: Manifest, reuse: PageReuse | None = None, each_checked: bool = False) -> EncodedManifest:
    """The root and pages of `manifest` (validated whole first; `each_checked`: every path and link alone
    is known valid). Pages come compressed, since a million files make hundreds of MB of JSON. A page
    that `reuse` knows (a parent's, made of the same entries) is not built again: its data is b""."""
    if manifest.kind not in KINDS:
        raise UsageError(f"unknown manifest kind {manifest.kind!r}")
    files = sorted(manifest.files, key=lambda f: f.path)
    validate_files(files, each_checked)
    pages: list[tuple[PageRef, bytes]] = []
    for page, ref in split_pages(files, reuse):
        if ref is not None:
            pages.append((ref, b""))
            continue
        page_id, data = encode_page(page)
        pages.append((PageRef(id=page_id, first=page[0].path, files=len(page), bytes=sum(f.size for f in page)),
                      compress_manifest(data)))
    stored: dict[str, int] = {}
    packs: set[str] = set()
    for f in files:
        for c in f.chunks:
            if c.id not in stored:
                stored[c.id] = c.length
                packs.add(c.pack)
    root = _WireRoot(format_version=ROOT_FORMAT_VERSION, kind=manifest.kind, name=manifest.name,
                     parents=list(manifest.parents), created=manifest.created, author=manifest.author,
                     message=manifest.message, metadata=manifest.metadata, files=len(files),
                     bytes=sum(f.size for f in files), chunks=len(stored), stored_bytes=sum(stored.values()),
                     packs=len(packs), pages=[ref for ref, _ in pages], folders=summarise_folders(files))
    del stored
    data = msgspec.json.encode(root, order="sorted")
    return EncodedManifest(xxhash.xxh3_128_hexdigest(data), data, pages)


def decode_root(stored: bytes, manifest_id: str) -> ManifestRoot:
    """A manifest's root (any readable format), checked: id, format, kind, parent and page ids, pages in
    path order, totals equal to the pages' sums. Formats 1-2 are decoded whole (files inline)."""
    data = _decompress_manifest(stored, manifest_id)
    if xxhash.xxh3_128_hexdigest(data) != manifest_id:
        raise IntegrityError(f"manifest {manifest_id} is damaged (content does not match its id)")
    version, wire = decode_document(data, manifest_id, {**WHOLE_MANIFEST_TYPES, ROOT_FORMAT_VERSION: _WireRoot})
    header = {"id": manifest_id, "kind": wire.kind, "name": wire.name, "parents": wire.parents,
              "created": wire.created, "author": wire.author, "message": wire.message, "metadata": wire.metadata}
    if version in WHOLE_MANIFEST_TYPES:
        files = whole_manifest(wire, version, manifest_id).files
        return ManifestRoot(**header, file_count=len(files), total_size=sum(f.size for f in files), inline=files)
    try:
        _check_page_table(wire)
        if wire.folders is not None:
            _check_folders(wire.folders, wire.files, wire.bytes)
    except _Malformed as exc:
        raise IntegrityError(f"manifest {manifest_id} {exc}") from None
    return ManifestRoot(**header, file_count=wire.files, total_size=wire.bytes, pages=wire.pages,
                        chunk_count=wire.chunks, stored_size=wire.stored_bytes, pack_count=wire.packs,
                        folders=wire.folders)


def _check_page_table(wire: _WireRoot) -> None:
    firsts = [p.first for p in wire.pages]
    if not all(HEX32.fullmatch(p.id) for p in wire.pages):
        raise _Malformed("lists a page id that is not 32 lowercase hex digits")
    if any(a >= b for a, b in pairwise(firsts)):
        raise _Malformed("lists its pages out of path order")
    if any(p.files < 1 or p.bytes < 0 for p in wire.pages):
        raise _Malformed("lists an empty page or a negative size")
    if sum(p.files for p in wire.pages) != wire.files or sum(p.bytes for p in wire.pages) != wire.bytes:
        raise _Malformed("has totals that differ from its pages' sums")


def _check_folders(folders: list[FolderSummary], files: int, size: int) -> None:
    """The folder summary is consistent on its own: paths valid and strictly increasing, every folder
    non-empty and listed with its parent, and no folder (nor the top) holding fewer files or bytes than
    the folders directly inside it. Whether it matches the pages is checked as pages are read."""
    paths = [f.path for f in folders]
    if any(a >= b for a, b in pairwise(paths)):
        raise _Malformed("lists its folders out of path order")
    try:
        for path in paths:
            validate_path(path)
    except UsageError as exc:
        raise _Malformed(f"lists an invalid folder: {exc}") from None
    if any(f.files < 1 or f.bytes < 0 for f in folders):
        raise _Malformed("lists an empty folder or a negative folder size")
    inside: dict[str, list[int]] = {"": [0, 0]}  # folder → files and bytes of the folders directly inside
    for f in folders:
        inside[f.path] = [0, 0]
    for f in folders:
        sums = inside.get(f.path.rpartition("/")[0])
        if sums is None:
            raise _Malformed(f"lists folder {_shown(f.path)} without its parent folder")
        sums[0] += f.files
        sums[1] += f.bytes
    if inside[""][0] > files or inside[""][1] > size:
        raise _Malformed("lists top-level folders holding more files or bytes than the version")
    if any(sums[0] > f.files or sums[1] > f.bytes for f, sums in ((f, inside[f.path]) for f in folders)):
        raise _Malformed("lists a folder holding fewer files or bytes than the folders inside it")


def decode_page(stored: bytes, root: ManifestRoot, index: int) -> list[FileEntry]:
    """Page `index` of `root`, checked against the root (id, first path, count, bytes, the path range up
    to the next page) and on its own (paths, links, chunk bounds). Checks that need every file (links
    through links elsewhere, files under files) run when the whole manifest is read."""
    ref = root.pages[index]
    what = f"manifest {root.id} page {ref.id}"
    data = _decompress_manifest(stored, ref.id)
    if xxhash.xxh3_128_hexdigest(data) != ref.id:
        raise IntegrityError(f"{what} is damaged (content does not match its id)")
    try:
        wire = msgspec.json.decode(data, type=_WirePage)
    except msgspec.DecodeError as exc:
        raise IntegrityError(f"{what} is unreadable ({exc})") from None
    if wire.format_version != PAGE_FORMAT_VERSION:
        raise IntegrityError(f"{what} has format_version {wire.format_version}; upgrade dvx to read it")
    try:
        files = _page_entries(wire)
        paths = [f.path for f in files]
        following = root.pages[index + 1].first if index + 1 < len(root.pages) else None
        if (len(files) != ref.files or sum(f.size for f in files) != ref.bytes or paths[0] != ref.first
                or any(a >= b for a, b in pairwise(paths)) or (following is not None and paths[-1] >= following)):
            raise _Malformed("does not match the root's page table (count, bytes or path range)")
    except _Malformed as exc:
        raise IntegrityError(f"{what} {exc}") from None
    try:
        for entry in files:
            validate_path(entry.path)
            if entry.link is not None:
                validate_link(entry.path, entry.link)
    except UsageError as exc:
        raise IntegrityError(f"{what} is invalid: {exc}") from None
    return files


def _page_entries(wire: _WirePage) -> list[FileEntry]:
    """FileEntries of a decoded page, every column checked (lengths, hex, bounds) before use."""
    files, chunks, packs = wire.files, wire.chunks, wire.packs
    count, total = len(files.paths), len(chunks.packs)
    if not (len(files.sizes) == len(files.chunk_counts) == count and len(files.digests) == 32 * count):
        raise _Malformed("has file columns of different lengths")
    if not (len(chunks.offsets) == len(chunks.lengths) == len(chunks.sizes) == len(chunks.codecs) == total
            and len(chunks.ids) == 32 * total and sum(files.chunk_counts) == total):
        raise _Malformed("has chunk columns of different lengths")
    if (files.chunk_counts and min(files.chunk_counts) < 0) or (files.sizes and min(files.sizes) < 0):
        raise _Malformed("has a negative size or chunk count")
    if not all(HEX32.fullmatch(p) for p in packs):
        raise _Malformed("lists a pack id that is not 32 lowercase hex digits")
    if not _HEX_RUN.fullmatch(files.digests) or not _HEX_RUN.fullmatch(chunks.ids):
        raise _Malformed("has a digest or chunk id that is not 32 lowercase hex digits")
    if chunks.packs and (min(chunks.packs) < 0 or max(chunks.packs) >= len(packs)):
        raise _Malformed("names a pack it does not list")
    if chunks.lengths and (min(chunks.lengths) < 0 or max(chunks.lengths) > MAX_STORED_SIZE):
        raise _Malformed(f"has a chunk stored length out of bounds (0..{MAX_STORED_SIZE})")
    if chunks.sizes and (min(chunks.sizes) < 0 or max(chunks.sizes) > MAX_CHUNK_SIZE):
        raise _Malformed(f"has a chunk raw length out of bounds (0..{MAX_CHUNK_SIZE})")
    if not set(chunks.codecs) <= CODEC_NAMES.keys():
        raise _Malformed("has a chunk with an unknown codec")
    executable = set(files.executable)
    if len(executable) != len(files.executable) or (executable and not 0 <= min(executable) <= max(executable) < count):
        raise _Malformed("marks a file executable that it does not list")
    links = dict(files.links)
    if len(links) != len(files.links) or (links and not 0 <= min(links) <= max(links) < count):
        raise _Malformed("has a symlink entry for a file it does not list")
    ends = [0] * len(packs)
    ids, chunk_packs, offsets, lengths, raw, codecs = (chunks.ids, chunks.packs, chunks.offsets, chunks.lengths,
                                                       chunks.sizes, chunks.codecs)
    digests = files.digests
    out = []
    at = 0
    for number, (path, size, held) in enumerate(zip(files.paths, files.sizes, files.chunk_counts)):
        digest = digests[32 * number:32 * number + 32]
        if held == 1:  # most files: one chunk, whose id is usually the file's digest
            index = chunk_packs[at]
            offset = ends[index] + offsets[at]
            if not 0 <= offset <= _MAX_OFFSET:
                raise _Malformed(f"has a chunk offset out of bounds ({offset})")
            content = raw[at]
            ends[index] = offset + lengths[at]
            cid = ids[32 * at:32 * at + 32]
            if cid == digest:
                digest = cid  # one string object for both
            refs = [ChunkRef(cid, packs[index], offset, lengths[at], content, codecs[at])]
            at += 1
        else:
            refs = []
            content = 0
            for k in range(at, at + held):
                index = chunk_packs[k]
                offset = ends[index] + offsets[k]
                if not 0 <= offset <= _MAX_OFFSET:
                    raise _Malformed(f"has a chunk offset out of bounds ({offset})")
                ends[index] = offset + lengths[k]
                content += raw[k]
                refs.append(ChunkRef(ids[32 * k:32 * k + 32], packs[index], offset, lengths[k], raw[k], codecs[k]))
            at += held
        link = links.get(number) if links else None
        if link is not None and (refs or size):
            raise _Malformed(f"gives the symlink {_shown(path)} content")
        if size != content:
            raise _Malformed(f"says {_shown(path)} has {size} bytes but its chunks hold {content}")
        out.append(FileEntry(path=path, size=size, digest=digest, executable=number in executable, link=link,
                             chunks=refs))
    return out


def read_pages(read: Callable[[str], bytes], root: ManifestRoot, indices: Iterable[int]) -> list[list[FileEntry]]:
    """Pages `indices` of `root` (in that order): fetched in parallel with `read(key)` (cloud stores
    answer each read in tens of ms), decoded here as they arrive (decoding holds the GIL anyway)."""
    indices = list(indices)

    def fetch(index: int) -> bytes:
        ref = root.pages[index]
        try:
            return read(page_key(ref.id))
        except NotFoundError:
            raise IntegrityError(f"manifest {root.id} page {ref.id} is missing from the store") from None

    if len(indices) <= 1:
        return [decode_page(fetch(i), root, i) for i in indices]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(min(_PAGE_READ_JOBS, len(indices)), thread_name_prefix="dvx-pages") as pool:
        return [decode_page(stored, root, i) for i, stored in zip(indices, pool.map(fetch, indices))]


def all_files(read: Callable[[str], bytes], root: ManifestRoot) -> list[FileEntry]:
    """Every file of the manifest, with the checks that need all of them."""
    if root.inline is not None:
        return root.inline
    files = [entry for page in read_pages(read, root, range(len(root.pages))) for entry in page]
    validate_stored_files(files, root.id, each_checked=True)  # decode_page checked each path and link
    return files
