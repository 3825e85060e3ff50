"""Reading versions: get (cache or copy), open one file, ls, diff, log, show, list, tag."""

from __future__ import annotations

import bisect
import errno
import io
import os
import shutil
from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from functools import cached_property
from pathlib import Path

import xxhash

from dvx.api.cache import CheckoutCache
from dvx.api.datasets import Drafts, version_from_record
from dvx.api.model import FileInfo, Version
from dvx.api.pinning import find_pin, resolve_pin
from dvx.api.progress import ProgressFactory, no_progress
from dvx.api.repo import Repo
from dvx.chunks import ChunkStore
from dvx.errors import IntegrityError, NotFoundError, UsageError
from dvx.manifests import (
    Change,
    FileEntry,
    Manifest,
    checkout,
    diff_files,
    select_files,
    validate_path,
)
from dvx.refs import VersionRecord, parse_ref

LINK_MODES = ("copy", "hardlink", "symlink", "reflink")
_RECENT_CHUNKS = 4  # chunks a ChunkedReader keeps in memory after reading them


class Resolved:
    """A resolved version: its record now, its manifest's pages when something needs them."""

    def __init__(self, repo: Repo, record: VersionRecord):
        self.repo = repo
        self.record = record
        self.root = self._checked(lambda: repo.manifest_root(record.manifest))

    @property
    def ref(self) -> str:
        return self.record.ref

    def _checked(self, read):
        try:
            return read()
        except (IntegrityError, NotFoundError) as exc:
            raise type(exc)(f"{self.record.ref}: {exc}") from None

    @cached_property
    def manifest(self) -> Manifest:
        """The whole manifest (every page)."""
        return self._checked(lambda: self.repo.read_manifest(self.record.manifest))

    def files_under(self, prefix: str) -> list[FileEntry]:
        """Files whose path starts with the string `prefix`, reading only the pages that can hold them."""
        if "manifest" in self.__dict__:
            return [f for f in self.manifest.files if f.path.startswith(prefix)]
        return self._checked(lambda: self.repo.files_under(self.record.manifest, prefix))

    def selected(self, globs: Sequence[str]) -> list[FileEntry]:
        """Candidates for `globs` (a superset of the matches): the files under each glob's literal
        prefix, when every glob has one; else every file."""
        prefixes = [literal_prefix(g.strip("/")) for g in globs]
        if not globs or not all(prefixes):
            return self.manifest.files
        found: dict[str, FileEntry] = {}
        for prefix in sorted(set(prefixes)):
            found.update((f.path, f) for f in self.files_under(prefix))
        return [found[p] for p in sorted(found)]


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard ('train/*.png' → 'train/')."""
    cut = min((i for i in (pattern.find(c) for c in "*?[") if i >= 0), default=len(pattern))
    return pattern[:cut]


def resolve(repo: Repo, ref: str, kind: str = "dataset") -> Resolved:
    """A bare NAME that the project pins means the pinned version (NAME@latest is the latest)."""
    return Resolved(repo, resolve_record(repo, ref, kind))


def resolve_record(repo: Repo, ref: str, kind: str = "dataset") -> VersionRecord:
    if "@" not in ref and repo.settings.project_dir is not None:
        pin = find_pin(repo.settings, ref, kind)
        if pin is not None:
            return resolve_pin(repo, pin)
    return repo.resolve(ref, kind)


def version_of(repo: Repo, record: VersionRecord, kind: str = "dataset") -> Version:
    tags = [t for t, r in repo.refs(kind).tags(record.name).items() if r.version == record.version]
    return version_from_record(record, tags, kind)


# -- get ----------------------------------------------------------------------------------------
def get(repo: Repo, ref: str, dest: str | os.PathLike[str] | None = None, *, glob: Sequence[str] = (),
        part: tuple[int, int] | None = None, link: str = "copy", kind: str = "dataset",
        progress: ProgressFactory = no_progress, shuffle_seed: int | None = None) -> Path:
    """Materialise a version (or the files picked by `glob`/`part`).

    Without `dest`: a read-only copy in the shared cache, whose path is returned. With `dest`: a
    writable copy there (`link` = hardlink/symlink/reflink first builds the cache copy and links to it).
    """
    if link not in LINK_MODES:
        raise UsageError(f"invalid --link {link!r}: choose one of {', '.join(LINK_MODES)}")
    if shuffle_seed is not None and part is None:
        raise UsageError("a shuffle seed only changes how --part splits the files: give --part I/N too")
    resolved = resolve(repo, ref, kind)
    candidates = resolved.selected(glob) if glob and part is None else resolved.manifest.files
    files = select_files(candidates, glob, part, shuffle_seed)
    if glob and not files:
        raise NotFoundError(f"no file of {resolved.ref} matches {' '.join(glob)}")
    chunk_store = repo.chunk_store()
    total = sum(f.size for f in files)
    context = resolved.ref

    def build(folder: Path, read_only: bool) -> None:
        with progress(f"getting {context}", total) as advance:
            checkout(chunk_store, files, folder, context=context, read_only=read_only, progress=advance)

    if dest is not None and link == "copy":
        build(Path(dest), read_only=False)
        return Path(dest).absolute()
    chosen = (sorted(glob), part) if shuffle_seed is None else (sorted(glob), part, int(shuffle_seed))
    selection = xxhash.xxh3_64_hexdigest(repr(chosen).encode()) if (glob or part) else "all"
    key = f"{resolved.record.manifest}-{selection}"
    cache = CheckoutCache(repo.settings.cache_dir, repo.settings.cache_max_bytes)
    cached = cache.materialise(key, [f.path for f in files], total, lambda tmp: build(tmp, True), label=context)
    if dest is None:
        return cached
    _link_tree(cached, Path(dest), files, link)
    return Path(dest).absolute()


def _link_tree(source: Path, dest: Path, files: Sequence[FileEntry], mode: str) -> None:
    for entry in files:
        target = dest / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.is_file():
            target.unlink()
        origin = source / entry.path
        if entry.link is not None:
            os.symlink(entry.link, target)
        elif mode == "symlink":
            os.symlink(origin, target)
        elif mode == "hardlink":
            os.link(origin, target)
        else:
            _reflink_or_copy(origin, target)
            os.chmod(target, (os.stat(origin).st_mode & 0o777) | 0o200)


def _reflink_or_copy(origin: Path, target: Path) -> None:
    """Copy-on-write clone (FICLONE) where the filesystem supports it, else a plain copy."""
    try:
        import fcntl

        with open(origin, "rb") as src, open(target, "wb") as dst:
            fcntl.ioctl(dst.fileno(), 0x40049409, src.fileno())  # FICLONE
        return
    except (OSError, ImportError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL,
                                                          errno.ENOTTY, errno.ENOSYS):
            raise
    shutil.copyfile(origin, target)


# -- open one file --------------------------------------------------------------------------------
def split_ref_path(repo: Repo, text: str, kind: str = "dataset",
                   names: Collection[str] | None = None) -> tuple[str, str]:
    """'name@v3/a/b.csv' → ('name@v3', 'a/b.csv'): the first '@' ends the name and the next '/' the
    selector. Without '@', the longest existing name that is a whole-segment prefix of `text` wins
    ('vision/cifar/a.png' → ('vision/cifar', 'a.png') when vision/cifar exists), and the path may be
    empty ('vision/cifar' → ('vision/cifar', '')). `names` saves listing the store's names."""
    if "@" in text:
        name, _, rest = text.partition("@")
        selector, _, path = rest.partition("/")
        return f"{name}@{selector}", path
    parts = text.split("/")
    known = set(repo.refs(kind).names()) if names is None else names
    for cut in range(len(parts), 0, -1):
        if "/".join(parts[:cut]) in known:
            return "/".join(parts[:cut]), "/".join(parts[cut:])
    raise NotFoundError(f"no {kind} name is a prefix of {text!r} (write NAME@VERSION/PATH)")


def list_kind_names(repo: Repo, kind: str = "dataset") -> list[str]:
    """Every name of `kind` in the store (one listing; names without versions included)."""
    return list(repo.refs(kind).names())


class ChunkedReader(io.RawIOBase):
    """A seekable read-only file over a stored file's chunks.

    A read fetches only the chunks that cover its bytes (each verified, and kept in the local chunk
    cache for the next reader); the last few chunks stay in memory, so small reads and re-reads near
    the last one are free. Once reads move forward (a read starts inside or at the end of the previous
    one), the rest of the file is streamed with the chunk store's read-ahead instead, so reading a whole
    file goes at `dvx get` speed. `read_range(start, end)` and `chunk_at(pos)` are the positional forms
    used by dvx://.
    """

    def __init__(self, chunk_store: ChunkStore, entry: FileEntry, context: str):
        self._cs = chunk_store
        self._entry = entry
        self._refs = list(entry.chunks)
        self._context = context
        self._starts = []
        offset = 0
        for ref in self._refs:
            self._starts.append(offset)
            offset += ref.size
        self.size = entry.size
        self._pos = 0
        self._recent: OrderedDict[int, bytes] = OrderedDict()  # chunk index → bytes, the last few read
        self._stream: Iterator[bytes] | None = None  # chunks from _stream_next to the end, read ahead
        self._stream_next = 0
        self._prev = (-1, -1)  # the previous read's [start, end)
        self.name = f"{context}/{entry.path}"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._entry.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read_range(self._pos, self._pos + len(view))
        view[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def read_range(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file (fewer at its end)."""
        end = min(end, self.size)
        if start < 0 or start >= end:
            return b""
        first = bisect.bisect_right(self._starts, start) - 1
        last = bisect.bisect_right(self._starts, end - 1) - 1
        chunks = self._get(first, last, start)
        self._prev = (start, end)
        head = start - self._starts[first]
        if first == last:
            data = chunks[0]
            return data if head == 0 and end - start == len(data) else data[head:head + end - start]
        tail = end - self._starts[last]
        return b"".join([memoryview(chunks[0])[head:], *chunks[1:-1], memoryview(chunks[-1])[:tail]])

    def chunk_at(self, pos: int) -> tuple[int, bytes]:
        """(offset in the file, bytes) of the whole chunk that holds byte `pos` (< size), without a copy."""
        index = bisect.bisect_right(self._starts, pos) - 1
        data = self._get(index, index, pos)[0]
        self._prev = (pos, self._starts[index] + len(data))
        return self._starts[index], data

    def _get(self, first: int, last: int, start: int) -> list[bytes]:
        try:
            return self._chunks(first, last, self._prev[0] <= start <= self._prev[1])
        except IntegrityError as exc:
            self._close_stream()
            raise IntegrityError(f"{self._context}: file {self._entry.path}: {exc}") from None

    def _chunks(self, first: int, last: int, forward: bool) -> list[bytes]:
        out: list[bytes] = []
        index = first
        while index <= last and index in self._recent:
            out.append(self._recent[index])
            index += 1
        if index > last:
            return out
        if self._stream is not None and self._stream_next != index:
            self._close_stream()
        if self._stream is None and forward:
            self._stream = self._cs.read_chunks(self._refs[index:], fill=True)
            self._stream_next = index
        if self._stream is not None:
            fresh = [next(self._stream) for _ in range(index, last + 1)]
            self._stream_next = last + 1
        else:
            fresh = list(self._cs.read_chunks(self._refs[index:last + 1], fill=True))
        out.extend(fresh)
        for number in range(max(index, last + 1 - _RECENT_CHUNKS), last + 1):
            self._recent[number] = fresh[number - index]
        while len(self._recent) > _RECENT_CHUNKS:
            self._recent.popitem(last=False)
        return out

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def close(self) -> None:
        self._close_stream()
        self._recent.clear()
        super().close()


def open_file(repo: Repo, ref_path: str, mode: str = "rb", encoding: str | None = None, kind: str = "dataset"):
    if mode not in ("r", "rb", "rt"):
        raise UsageError(f"dvx.open is read-only: mode {mode!r} is not supported (use 'r' or 'rb')")
    ref, path = split_ref_path(repo, ref_path, kind)
    resolved = resolve(repo, ref, kind)
    entry = _find_file(resolved, path)
    raw = ChunkedReader(repo.chunk_store(), entry, resolved.ref)
    buffered = io.BufferedReader(raw, buffer_size=1 << 20)
    return buffered if mode == "rb" else io.TextIOWrapper(buffered, encoding=encoding or "utf-8")


def _find_file(resolved: Resolved, path: str, hops: int = 0) -> FileEntry:
    path = validate_path(path.strip("/"))
    for entry in resolved.files_under(path):
        if entry.path == path:
            if entry.link is not None:
                if hops >= 40:
                    raise IntegrityError(f"{resolved.ref}: {path} is a loop of symlinks")
                target = os.path.normpath(os.path.join(os.path.dirname(entry.path), entry.link))
                return _find_file(resolved, target, hops + 1)
            return entry
    raise NotFoundError(f"{resolved.ref} has no file {path!r} (see `dvx ls {resolved.ref}`)")


# -- browsing -------------------------------------------------------------------------------------
def ls(repo: Repo, ref: str, path: str = "", recursive: bool = False, kind: str = "dataset") -> list[dict]:
    """Entries directly under `path` (folders with their file count and bytes), or all with `recursive`."""
    resolved = resolve(repo, ref, kind)
    prefix = path.strip("/")
    if prefix:
        validate_path(prefix)
    files = resolved.files_under(prefix)
    if prefix and any(f.path == prefix for f in files):
        return [_file_row(f) for f in files if f.path == prefix]
    under = [f for f in files if not prefix or f.path.startswith(prefix + "/")]
    if prefix and not under:
        raise NotFoundError(f"{resolved.ref} has no file or folder {prefix!r}")
    if recursive:
        return [_file_row(f) for f in under]
    rows: dict[str, dict] = {}
    cut = len(prefix) + 1 if prefix else 0
    for entry in under:
        head, sep, _ = entry.path[cut:].partition("/")
        if sep:
            folder = rows.setdefault(head + "/", {"path": (prefix + "/" if prefix else "") + head + "/",
                                                  "type": "folder", "size": 0, "files": 0})
            folder["size"] += entry.size
            folder["files"] += 1
        else:
            rows[head] = _file_row(entry)
    return [rows[k] for k in sorted(rows)]


def _file_row(entry: FileEntry) -> dict:
    row = FileInfo(entry.path, entry.size, entry.digest, entry.executable, entry.link).to_dict()
    row["type"] = "link" if entry.link is not None else "file"
    return row


def diff(repo: Repo, ref_a: str, ref_b: str, kind: str = "dataset") -> list[Change]:
    a, b = resolve(repo, ref_a, kind), resolve(repo, ref_b, kind)
    return diff_files(a.manifest.by_path(), b.manifest.by_path())


def log(repo: Repo, name: str, kind: str = "dataset") -> list[Version]:
    refs = repo.refs(kind)
    records = refs.versions(name)
    if not records:
        raise NotFoundError(f"no {kind} named {name!r} in this store (see `dvx {kind} list`)")
    tags: dict[int, list[str]] = {}
    for tag, record in refs.tags(name).items():
        tags.setdefault(record.version, []).append(tag)
    return [version_from_record(r, tags.get(r.version, ()), kind) for r in reversed(records)]


def list_names(repo: Repo, kind: str = "dataset") -> list[dict]:
    """Every name with a live version and its latest version, from the name catalog: a fixed number of
    store requests however many names there are (dvx/refs/catalog.py)."""
    drafts = set(Drafts(repo, kind).names())
    rows = []
    for name, entry in repo.refs(kind).catalog.entries().items():
        latest = entry.record(entry.latest)
        rows.append({"name": name, "versions": entry.versions, "latest": latest.ref, "id": latest.manifest,
                     "created": latest.created, "files": latest.files, "bytes": latest.bytes,
                     "draft": name in drafts})
    return rows


def show(repo: Repo, ref: str, kind: str = "dataset") -> dict:
    resolved = resolve(repo, ref, kind)
    version = version_of(repo, resolved.record, kind)
    out = version.to_dict()
    root = resolved.root
    if root.chunk_count is not None:  # format 3 records its chunk totals: the pages are not read
        out.update({"stored_bytes": root.stored_size, "stored_new_bytes": resolved.record.new_bytes,
                    "chunks": root.chunk_count, "packs": root.pack_count, "metadata": root.metadata})
        return out
    chunks = {c.id: c for f in resolved.manifest.files for c in f.chunks}
    parent_chunks = {c.id for p in resolved.manifest.parents for f in _parent_files(repo, p) for c in f.chunks}
    out.update({
        "stored_bytes": sum(c.length for c in chunks.values()),
        "stored_new_bytes": sum(c.length for cid, c in chunks.items() if cid not in parent_chunks),
        "chunks": len(chunks),
        "packs": len({c.pack for c in chunks.values()}),
        "metadata": resolved.manifest.metadata,
    })
    return out


def _parent_files(repo: Repo, manifest_id: str) -> list[FileEntry]:
    """A parent's files; none when the parent was deleted and garbage-collected since."""
    try:
        return repo.read_manifest(manifest_id).files
    except NotFoundError:
        return []


def tag(repo: Repo, ref: str, tag_name: str, force: bool = False, delete: bool = False,
        kind: str = "dataset") -> Version:
    parsed = parse_ref(ref)
    refs = repo.refs(kind)
    record = refs.resolve(parsed)
    refs.set_tag(parsed.name, tag_name, None if delete else record, by=repo.settings.author, force=force)
    return version_of(repo, record, kind)
