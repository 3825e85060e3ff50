"""Manifests: the immutable record of one version — its files, their chunks, parents and metadata.

On the store a manifest is canonical JSON (keys sorted, no whitespace, files sorted by path) compressed as
one zstd frame at ``manifests/<id[:2]>/<id>.json.zst``; its id is the xxh3-128 of the uncompressed JSON.
Chunks name their pack by position in the manifest's ``packs`` list (docs/storage-format.md).
"""

from __future__ import annotations

import posixpath
import re
from itertools import chain
from typing import Any

import msgspec
import xxhash
import zstandard

from dvx.chunks import ChunkRef
from dvx.chunks.codec import CODEC_NAMES, MAX_CHUNK_SIZE, MAX_STORED_SIZE
from dvx.errors import IntegrityError, UsageError

FORMAT_VERSION = 2
# Format 1 (chunks as [id, pack, offset, stored, raw, codec] rows) is still read.
READABLE_VERSIONS = (1, 2)
EMPTY_DIGEST = xxhash.xxh3_128_hexdigest(b"")
KINDS = ("dataset", "model")
HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX_RUN = re.compile(r"[0-9a-f]*")
# Decompressed manifests are bounded before anything is allocated: at most MAX_MANIFEST_RATIO times the
# stored size (at least MANIFEST_RATIO_FLOOR), and never more than MAX_MANIFEST_BYTES. Real manifests
# compress 2-120x (the worst case: a folder of empty files); a zstd frame can declare any size.
MAX_MANIFEST_BYTES = 4 << 30
MANIFEST_RATIO_FLOOR = 1 << 20
MAX_MANIFEST_RATIO = 1000
# Symlink chains are followed this many hops when checking that they stay inside (Linux's ELOOP limit).
_MAX_LINK_HOPS = 40


class FileEntry(msgspec.Struct, kw_only=True, gc=False):
    """One file (or symlink, when `link` is set) of a version, in memory."""

    path: str
    size: int = 0
    digest: str = EMPTY_DIGEST
    executable: bool = False
    link: str | None = None
    chunks: list[ChunkRef] = []

    def same_content(self, other: FileEntry) -> bool:
        return (self.digest, self.executable, self.link, self.size) == (
            other.digest, other.executable, other.link, other.size)


class _WireChunks(msgspec.Struct, kw_only=True):
    """A file's chunks in columns (format 2): similar numbers side by side compress far better.

    `offsets` are deltas: a chunk's offset minus the end of the previous chunk (in manifest order)
    stored in the same pack, so chunks written back to back cost a 0.
    """

    ids: str  # the chunk ids' 32 hex digits, concatenated
    packs: list[int]  # positions in the manifest's `packs` list
    offsets: list[int]
    lengths: list[int]  # stored
    sizes: list[int]  # raw
    codecs: list[int]


class _WireFile(msgspec.Struct, kw_only=True, omit_defaults=True):
    path: str
    size: int = 0
    digest: str
    executable: bool = False
    link: str | None = None
    chunks: _WireChunks | None = None


class _WireFileV1(msgspec.Struct, kw_only=True, omit_defaults=True):
    path: str
    size: int = 0
    digest: str
    executable: bool = False
    link: str | None = None
    # [chunk id, pack index, offset, stored length, raw length, codec]
    chunks: list[tuple[str, int, int, int, int, int]] = []


class _Header(msgspec.Struct):
    format_version: int = 0


class HeaderFields(msgspec.Struct, kw_only=True):
    """What every manifest document says about its version, whatever its format."""

    kind: str
    name: str
    parents: list[str]
    created: str
    author: str
    message: str
    metadata: dict[str, Any]


class _WireManifestBase(HeaderFields, kw_only=True):
    format_version: int
    packs: list[str]


class _WireManifest(_WireManifestBase, kw_only=True):
    files: list[_WireFile]


class _WireManifestV1(_WireManifestBase, kw_only=True):
    files: list[_WireFileV1]


WHOLE_MANIFEST_TYPES = {1: _WireManifestV1, 2: _WireManifest}  # format_version → wire type, files inline


class Manifest(msgspec.Struct, kw_only=True):
    kind: str
    name: str
    parents: list[str]
    created: str
    author: str
    message: str = ""
    metadata: dict[str, Any] = {}
    files: list[FileEntry] = []

    def by_path(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def manifest_key(manifest_id: str) -> str:
    return f"manifests/{manifest_id[:2]}/{manifest_id}.json.zst"


def validate_path(path: str) -> str:
    """Dataset paths: relative, '/'-separated, normalised, no '.'/'..' parts, no NUL, valid Unicode, and
    portable: no backslash and no drive letter, which Windows would read as separators or a root."""
    if not path or path[0] == "/" or "\x00" in path:
        raise UsageError(f"invalid path in dataset: {_shown(path)} (must be relative, non-empty, without NUL)")
    if "." in path or "//" in path or path[-1] == "/":
        wrapped = f"/{path}/"
        if "/./" in wrapped or "/../" in wrapped or "//" in wrapped:
            raise UsageError(f"invalid path in dataset: {_shown(path)} (no empty, '.' or '..' parts)")
    if "\\" in path:
        raise UsageError(f"invalid path in dataset: {_shown(path)} (no backslashes: Windows reads them as "
                         "folder separators; rename the file)")
    if path[1:2] == ":" and path[0].isascii() and path[0].isalpha():
        raise UsageError(f"invalid path in dataset: {_shown(path)} (starts with a drive letter, which Windows "
                         "reads as an absolute path; rename it)")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"path {_shown(path)} is not valid Unicode; rename it to add it") from None
    return path


def _shown(text: str, limit: int = 120) -> str:
    """repr() of user-supplied text, cut short so an error stays one readable line."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text)} characters)"


def validate_link(path: str, target: str) -> str:
    """A symlink is kept only when its target is relative, portable and stays inside the dataset."""
    if not target:
        raise UsageError(f"symlink {path} has an empty target")
    if target.startswith("/") or "\x00" in target:
        raise UsageError(f"symlink {path} -> {_shown(target)} points outside the dataset (absolute target)")
    if "\\" in target or (target[1:2] == ":" and target[0].isascii() and target[0].isalpha()):
        raise UsageError(f"symlink {path} -> {_shown(target)} has a backslash or drive letter, which Windows "
                         "reads as a separator or an absolute path")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith(("../", "/")):
        raise UsageError(f"symlink {path} -> {_shown(target)} points outside the dataset")
    return target


def check_link_chains(links: dict[str, str]) -> None:
    """Links that each stay inside lexically can still climb out together: with `d/up -> ..`, the link
    `d/out -> up/..` resolves through `up` to the dataset root and then above it. Follow every link
    through the others (`links`: path → target) the way the OS will, and refuse any that leaves."""
    for path, target in links.items():
        where = path.split("/")[:-1]
        pending = target.split("/")
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not where:
                    raise UsageError(f"symlink {path} -> {_shown(target)} points outside the dataset "
                                     "(through other links)")
                where.pop()
                continue
            where.append(part)
            inner = links.get("/".join(where))
            if inner is not None:
                hops += 1
                if hops > _MAX_LINK_HOPS:  # a loop: the OS stops it (ELOOP), nothing escapes
                    break
                where.pop()
                pending[:0] = inner.split("/")


def validate_files(files: list[FileEntry], each_checked: bool = False) -> None:
    """Every path valid and unique, links contained (alone and through each other), and no entry
    nested under a file or link. `each_checked`: every path and link alone is known valid already."""
    seen: set[str] = set()
    links: dict[str, str] = {}
    for entry in files:
        if not each_checked:
            validate_path(entry.path)
        if entry.path in seen:
            raise IntegrityError(f"path {entry.path} appears twice in a manifest")
        seen.add(entry.path)
        if entry.link is not None:
            if not each_checked:
                validate_link(entry.path, entry.link)
            links[entry.path] = entry.link
    clashes = folders_of(seen) & seen
    if clashes:
        folder = min(clashes)
        nested = min(p for p in seen if p.startswith(folder + "/"))
        raise UsageError(f"path {nested} lies under {folder}, which is a file or link")
    if links:
        check_link_chains(links)


def folders_of(paths) -> set[str]:
    """Every folder that contains one of `paths` ("a/b/c" → "a", "a/b")."""
    out: set[str] = set()
    for path in paths:
        while "/" in path:
            path = path.rsplit("/", 1)[0]
            if path in out:
                break
            out.add(path)
    return out


def encode_manifest(manifest: Manifest) -> tuple[str, bytes]:
    """(manifest id, canonical JSON bytes)."""
    if manifest.kind not in KINDS:
        raise UsageError(f"unknown manifest kind {manifest.kind!r}")
    files = sorted(manifest.files, key=lambda f: f.path)
    validate_files(files)
    packs = sorted({c.pack for f in files for c in f.chunks})
    wire = _WireManifest(
        format_version=FORMAT_VERSION,
        kind=manifest.kind,
        name=manifest.name,
        parents=list(manifest.parents),
        created=manifest.created,
        author=manifest.author,
        message=manifest.message,
        metadata=manifest.metadata,
        packs=packs,
        files=_wire_files(files, {p: i for i, p in enumerate(packs)}),
    )
    data = msgspec.json.encode(wire, order="sorted")
    return xxhash.xxh3_128_hexdigest(data), data


def _wire_files(files: list[FileEntry], pack_index: dict[str, int]) -> list[_WireFile]:
    ends = [0] * len(pack_index)
    wire = []
    for f in files:
        columns = None
        if f.chunks:
            columns = _WireChunks(ids="".join(c.id for c in f.chunks), packs=[], offsets=[], lengths=[],
                                  sizes=[], codecs=[])
            for c in f.chunks:
                index = pack_index[c.pack]
                columns.packs.append(index)
                columns.offsets.append(c.offset - ends[index])
                ends[index] = c.offset + c.length
                columns.lengths.append(c.length)
                columns.sizes.append(c.size)
                columns.codecs.append(c.codec)
        wire.append(_WireFile(path=f.path, size=f.size, digest=f.digest, executable=f.executable, link=f.link,
                              chunks=columns))
    return wire


class _Malformed(Exception):
    """A structural problem in a decoded manifest; decode_manifest reports it as an IntegrityError."""


# Chunk offsets are u64 in the pack format; reads take a signed 64-bit file offset.
_MAX_OFFSET = (1 << 63) - 1 - MAX_STORED_SIZE


def _check_columns(files: list[_WireFile], npacks: int) -> None:
    """Bounds of every file's chunk columns, checked a column at a time over all files (in C: per-file
    checks would slow down decoding a million-file manifest by half)."""
    columns = [f.chunks for f in files if f.chunks is not None]
    for c in columns:
        count = len(c.packs)
        if (len(c.ids) != 32 * count or len(c.offsets) != count or len(c.lengths) != count
                or len(c.sizes) != count or len(c.codecs) != count):
            raise _Malformed("has malformed chunk columns (of different lengths)")

    def column(name: str) -> list[int]:
        return list(chain.from_iterable(getattr(c, name) for c in columns))

    if not _HEX_RUN.fullmatch("".join(c.ids for c in columns)):
        raise _Malformed("has a chunk id that is not 32 lowercase hex digits")
    if (packs := column("packs")) and (min(packs) < 0 or max(packs) >= npacks):
        raise _Malformed("names a pack it does not list")
    if (lengths := column("lengths")) and (min(lengths) < 0 or max(lengths) > MAX_STORED_SIZE):
        raise _Malformed(f"has a chunk stored length out of bounds (0..{MAX_STORED_SIZE})")
    if (sizes := column("sizes")) and (min(sizes) < 0 or max(sizes) > MAX_CHUNK_SIZE):
        raise _Malformed(f"has a chunk raw length out of bounds (0..{MAX_CHUNK_SIZE})")
    if not set(column("codecs")) <= CODEC_NAMES.keys():
        raise _Malformed("has a chunk with an unknown codec")


def _chunk_refs(columns: _WireChunks | None, packs: list[str], ends: list[int]) -> list[ChunkRef]:
    """Inverse of the column encoding in `_wire_files` (`ends` carries over from file to file); the
    columns have passed `_check_columns`."""
    if columns is None:
        return []
    refs = []
    ids = columns.ids
    for start, index, delta, length, size, codec in zip(range(0, len(ids), 32), columns.packs, columns.offsets,
                                                        columns.lengths, columns.sizes, columns.codecs):
        offset = ends[index] + delta
        if not 0 <= offset <= _MAX_OFFSET:
            raise _Malformed(f"has a chunk offset out of bounds ({offset})")
        ends[index] = offset + length
        refs.append(ChunkRef(ids[start:start + 32], packs[index], offset, length, size, codec))
    return refs


def _chunk_rows(rows: list[tuple[str, int, int, int, int, int]], packs: list[str]) -> list[ChunkRef]:
    """Format 1's chunk rows, bounds-checked like the columns of format 2."""
    refs = []
    for cid, index, offset, length, size, codec in rows:
        if not HEX32.fullmatch(cid):
            raise _Malformed("has a chunk id that is not 32 lowercase hex digits")
        if not 0 <= index < len(packs):
            raise _Malformed("names a pack it does not list")
        if (not 0 <= length <= MAX_STORED_SIZE or not 0 <= size <= MAX_CHUNK_SIZE or codec not in CODEC_NAMES
                or not 0 <= offset <= _MAX_OFFSET):
            raise _Malformed("has a chunk offset, length or codec out of bounds")
        refs.append(ChunkRef(cid, packs[index], offset, length, size, codec))
    return refs


def _decompress_manifest(stored: bytes, manifest_id: str) -> bytes:
    """The manifest's JSON, never more than the bound of `stored`'s size, checked before allocating."""
    limit = min(MAX_MANIFEST_BYTES, max(MANIFEST_RATIO_FLOOR, MAX_MANIFEST_RATIO * len(stored)))
    try:
        declared = zstandard.frame_content_size(stored)
        if declared > limit:
            raise IntegrityError(f"manifest {manifest_id} is damaged (it declares {declared} bytes, more than "
                                 f"the {limit} allowed for its stored size)")
        dctx = zstandard.ZstdDecompressor()
        if declared >= 0:  # dvx writes the size: one allocation of exactly that much
            return dctx.decompress(stored, max_output_size=declared)
        parts, total = [], 0
        with dctx.stream_reader(stored) as reader:
            while part := reader.read(1 << 20):
                total += len(part)
                if total > limit:
                    raise IntegrityError(f"manifest {manifest_id} is damaged (it expands beyond the {limit} "
                                         "bytes allowed for its stored size)")
                parts.append(part)
        return b"".join(parts)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"manifest {manifest_id} is damaged ({exc})") from None


def compress_manifest(data: bytes) -> bytes:
    out = zstandard.ZstdCompressor(level=3).compress(data)  # on chunk columns level 3 beats 6
    # The result keeps the allocation of zstd's worst-case bound (about the input's size); a paged
    # manifest holds thousands of these until they are stored, so keep an exact-size copy instead.
    return bytes(memoryview(out))


def decode_manifest(stored: bytes, manifest_id: str) -> Manifest:
    """Decompress (bounded), check the id and the format version, then check everything a reader will
    rely on: ids are hex, chunk fields are within the pack format's bounds, a file's size is the sum of
    its chunks, links have no content, and every path and link is valid (docs/storage-format.md)."""
    data = _decompress_manifest(stored, manifest_id)
    if xxhash.xxh3_128_hexdigest(data) != manifest_id:
        raise IntegrityError(f"manifest {manifest_id} is damaged (content does not match its id)")
    version, wire = decode_document(data, manifest_id, WHOLE_MANIFEST_TYPES)
    return whole_manifest(wire, version, manifest_id)


def decode_document(data: bytes, manifest_id: str, wire_types: dict[int, type]) -> tuple[int, Any]:
    """(format_version, document) of a manifest document whose id is checked, decoded with the wire type
    its format_version names in `wire_types`; its kind and parent ids checked."""
    try:
        version = msgspec.json.decode(data, type=_Header).format_version
        if version not in wire_types:
            raise IntegrityError(f"manifest {manifest_id} has format_version {version}; upgrade dvx to read it")
        wire = msgspec.json.decode(data, type=wire_types[version])
    except msgspec.DecodeError as exc:
        raise IntegrityError(f"manifest {manifest_id} is unreadable ({exc})") from None
    if wire.kind not in KINDS:
        raise IntegrityError(f"manifest {manifest_id} has an unknown kind {_shown(wire.kind)}")
    if not all(HEX32.fullmatch(p) for p in wire.parents):
        raise IntegrityError(f"manifest {manifest_id} lists a parent id that is not 32 lowercase hex digits")
    return version, wire


def whole_manifest(wire: _WireManifestV1 | _WireManifest, version: int, manifest_id: str) -> Manifest:
    """The Manifest of a decoded format 1-2 document (files inline), every file checked."""
    try:
        files = _files_from_wire(wire.files, wire.packs, version)
    except _Malformed as exc:
        raise IntegrityError(f"manifest {manifest_id} {exc}") from None
    validate_stored_files(files, manifest_id)
    return Manifest(kind=wire.kind, name=wire.name, parents=wire.parents, created=wire.created,
                    author=wire.author, message=wire.message, metadata=wire.metadata, files=files)


def validate_stored_files(files: list[FileEntry], manifest_id: str, each_checked: bool = False) -> None:
    """validate_files for files read from the store: a broken rule is the stored document's fault."""
    try:
        validate_files(files, each_checked)
    except (UsageError, IntegrityError) as exc:
        raise IntegrityError(f"manifest {manifest_id} is invalid: {exc}") from None


def _files_from_wire(wire_files: list, packs: list[str], version: int) -> list[FileEntry]:
    """FileEntries of a decoded document's files (format 1 rows or format 2 columns, which pages use
    too), every chunk field bounds-checked and every size the sum of its chunks."""
    if not all(HEX32.fullmatch(p) for p in packs):
        raise _Malformed("lists a pack id that is not 32 lowercase hex digits")
    if version != 1:
        _check_columns(wire_files, len(packs))
    files = []
    ends = [0] * len(packs)
    for f in wire_files:
        if version == 1:
            chunks = _chunk_rows(f.chunks, packs)
            total = sum(c.size for c in chunks)
        else:
            chunks = _chunk_refs(f.chunks, packs, ends)
            total = sum(f.chunks.sizes) if f.chunks is not None else 0
        if f.link is not None and (chunks or f.size):
            raise _Malformed(f"gives the symlink {_shown(f.path)} content")
        if f.size != total:
            raise _Malformed(f"says {_shown(f.path)} has {f.size} bytes but its chunks hold {total}")
        digest = chunks[0].id if len(chunks) == 1 and chunks[0].id == f.digest else f.digest  # one string, not two
        files.append(FileEntry(path=f.path, size=f.size, digest=digest, executable=f.executable,
                               link=f.link, chunks=chunks))
    return files
