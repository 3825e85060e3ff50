"""Manifests: the immutable record of one version — its files, their chunks, parents and metadata.

On the store a manifest is canonical JSON (keys sorted, no whitespace, files sorted by path) compressed as
one zstd frame at ``manifests/<id[:2]>/<id>.json.zst``; its id is the xxh3-128 of the uncompressed JSON.
Chunks name their pack by position in the manifest's ``packs`` list (docs/storage-format.md).
"""

from __future__ import annotations

import posixpath
from typing import Any

import msgspec
import xxhash
import zstandard

from dvx.chunks import ChunkRef
from dvx.errors import IntegrityError, UsageError

FORMAT_VERSION = 2
# Format 1 (chunks as [id, pack, offset, stored, raw, codec] rows) is still read.
READABLE_VERSIONS = (1, 2)
EMPTY_DIGEST = xxhash.xxh3_128_hexdigest(b"")
KINDS = ("dataset", "model")


class FileEntry(msgspec.Struct, kw_only=True):
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


class _WireManifestBase(msgspec.Struct, kw_only=True):
    format_version: int
    kind: str
    name: str
    parents: list[str]
    created: str
    author: str
    message: str
    metadata: dict[str, Any]
    packs: list[str]


class _WireManifest(_WireManifestBase, kw_only=True):
    files: list[_WireFile]


class _WireManifestV1(_WireManifestBase, kw_only=True):
    files: list[_WireFileV1]


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
    """Dataset paths: relative, '/'-separated, normalised, no '.'/'..' parts, no NUL, valid Unicode."""
    if not path or path[0] == "/" or "\x00" in path:
        raise UsageError(f"invalid path in dataset: {path!r} (must be relative, non-empty, without NUL)")
    if "." in path or "//" in path or path[-1] == "/":
        wrapped = f"/{path}/"
        if "/./" in wrapped or "/../" in wrapped or "//" in wrapped:
            raise UsageError(f"invalid path in dataset: {path!r} (no empty, '.' or '..' parts)")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"path {path!r} is not valid Unicode; rename it to add it") from None
    return path


def validate_link(path: str, target: str) -> str:
    """A symlink is kept only when its target is relative and stays inside the dataset."""
    if target.startswith("/") or "\x00" in target:
        raise UsageError(f"symlink {path} -> {target} points outside the dataset (absolute target)")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise UsageError(f"symlink {path} -> {target} points outside the dataset")
    return target


def validate_files(files: list[FileEntry]) -> None:
    """Every path valid and unique, links contained, and no entry nested under a file or link."""
    seen: set[str] = set()
    for entry in files:
        validate_path(entry.path)
        if entry.path in seen:
            raise IntegrityError(f"path {entry.path} appears twice in a manifest")
        seen.add(entry.path)
        if entry.link is not None:
            validate_link(entry.path, entry.link)
    clashes = folders_of(seen) & seen
    if clashes:
        folder = min(clashes)
        nested = min(p for p in seen if p.startswith(folder + "/"))
        raise UsageError(f"path {nested} lies under {folder}, which is a file or link")


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


def _chunk_refs(columns: _WireChunks | None, packs: list[str], ends: list[int]) -> list[ChunkRef]:
    """Inverse of the column encoding in `_wire_files` (`ends` carries over from file to file)."""
    if columns is None:
        return []
    count = len(columns.packs)
    if (len(columns.ids) != 32 * count or len(columns.offsets) != count or len(columns.lengths) != count
            or len(columns.sizes) != count or len(columns.codecs) != count):
        raise IndexError("chunk columns of different lengths")
    refs = []
    ids = columns.ids
    for start, index, delta, length, size, codec in zip(range(0, 32 * count, 32), columns.packs, columns.offsets,
                                                        columns.lengths, columns.sizes, columns.codecs):
        if index < 0:
            raise IndexError(index)
        offset = ends[index] + delta
        if offset < 0 or length < 0:
            raise IndexError(offset)
        ends[index] = offset + length
        refs.append(ChunkRef(ids[start:start + 32], packs[index], offset, length, size, codec))
    return refs


def compress_manifest(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)  # on chunk columns level 3 beats 6


def decode_manifest(stored: bytes, manifest_id: str) -> Manifest:
    """Decompress, check the id, check the format version, validate every path."""
    try:
        data = zstandard.ZstdDecompressor().decompress(stored, max_output_size=1 << 34)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"manifest {manifest_id} is damaged ({exc})") from None
    if xxhash.xxh3_128_hexdigest(data) != manifest_id:
        raise IntegrityError(f"manifest {manifest_id} is damaged (content does not match its id)")
    try:
        version = msgspec.json.decode(data, type=_Header).format_version
        if version not in READABLE_VERSIONS:
            raise IntegrityError(f"manifest {manifest_id} has format_version {version}; upgrade dvx to read it")
        wire = msgspec.json.decode(data, type=_WireManifest if version == 2 else _WireManifestV1)
    except msgspec.DecodeError as exc:
        raise IntegrityError(f"manifest {manifest_id} is unreadable ({exc})") from None
    packs = wire.packs
    try:
        if version == 1:
            files = [
                FileEntry(path=f.path, size=f.size, digest=f.digest, executable=f.executable, link=f.link,
                          chunks=[ChunkRef(c[0], packs[c[1]], c[2], c[3], c[4], c[5]) for c in f.chunks])
                for f in wire.files
            ]
        else:
            ends = [0] * len(packs)
            files = [
                FileEntry(path=f.path, size=f.size, digest=f.digest, executable=f.executable, link=f.link,
                          chunks=_chunk_refs(f.chunks, packs, ends))
                for f in wire.files
            ]
    except IndexError:
        raise IntegrityError(f"manifest {manifest_id} names a pack it does not list or has malformed chunk "
                             "columns") from None
    validate_files(files)
    return Manifest(kind=wire.kind, name=wire.name, parents=wire.parents, created=wire.created,
                    author=wire.author, message=wire.message, metadata=wire.metadata, files=files)
