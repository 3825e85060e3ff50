"""Reading versions: get (cache or copy), open one file, ls, list_folder, diff, log, show, list, tag."""

from __future__ import annotations

import bisect
import errno
import io
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Sequence
from functools import cached_property
from itertools import accumulate
from pathlib import Path
from typing import NamedTuple, NoReturn

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
from dvx.manifests.paged import FolderSummary, ManifestRoot, prefix_end
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
LIST_LIMIT_MAX = 10_000  # entries list_folder returns at most per call
_SCAN_BATCH_MAX = 16  # pages read at once while scanning a folder's pages for its files


def ls(repo: Repo, ref: str, path: str = "", recursive: bool = False, kind: str = "dataset") -> list[dict]:
    """Entries directly under `path` (folders with their file count and bytes), or all with `recursive`.
    With the root's folder summary, folder rows cost no page read."""
    resolved = resolve(repo, ref, kind)
    prefix = path.strip("/")
    if prefix:
        validate_path(prefix)
    if not recursive and resolved.root.folders is not None:
        return _ls_summarised(resolved, prefix)
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


def _ls_summarised(resolved: Resolved, prefix: str) -> list[dict]:
    """ls's rows (as the scan above makes them) from the folder summary and the pages that may hold the
    folder's own files."""
    if prefix and resolved.root.folder(prefix) is None:
        entry = _entry_at(resolved, prefix)
        if entry is None:
            raise NotFoundError(f"{resolved.ref} has no file or folder {prefix!r}")
        return [_file_row(entry)]
    listing = _summarised_folder(resolved, prefix)
    cut = len(prefix) + 1 if prefix else 0
    rows = {f.path[cut:] + "/": {"path": f.path + "/", "type": "folder", "size": f.bytes, "files": f.files}
            for f in listing.subfolders}
    rows.update((entry.path[cut:], _file_row(entry)) for entry in listing.files(0, listing.file_count))
    return [rows[k] for k in sorted(rows)]


def list_folder(repo: Repo, ref: str, folder: str = "", offset: int = 0, limit: int = 200,
                kind: str = "dataset") -> dict:
    """One window of the entries directly inside `folder` ("" or "/": the top): its subfolders first, by
    name, then its files, by path; entries offset..offset+limit-1 of them, with the counts a paged view
    needs. With the root's folder summary the subfolders cost no page read and only the pages holding
    the window's files are read; without one (older manifests, very many folders), every file under the
    folder is read. A missing folder, or a path that is a file, raises NotFoundError."""
    if offset < 0:
        raise UsageError(f"offset must be 0 or more, not {offset}")
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise UsageError(f"limit must be between 1 and {LIST_LIMIT_MAX}, not {limit}")
    resolved = resolve(repo, ref, kind)
    folder = folder.strip("/")
    if folder:
        validate_path(folder)
    if resolved.root.folders is not None:
        if folder and resolved.root.folder(folder) is None:
            _not_a_folder(resolved, folder)
        listing = _summarised_folder(resolved, folder)
    else:
        listing = _scanned_folder(resolved, folder)
    subfolders = listing.subfolders
    entries = [{"type": "folder", "name": f.path.rpartition("/")[2], "path": f.path + "/", "files": f.files,
                "size": f.bytes} for f in subfolders[offset:offset + limit]]
    first_file = max(0, offset - len(subfolders))
    last_file = min(listing.file_count, offset + limit - len(subfolders))
    cut = len(folder) + 1 if folder else 0
    for entry in listing.files(first_file, last_file) if first_file < last_file else ():
        row = _file_row(entry)
        row["name"] = entry.path[cut:]
        entries.append(row)
    return {"ref": resolved.ref, "folder": folder, "offset": offset, "limit": limit,
            "total": len(subfolders) + listing.file_count, "folders": len(subfolders),
            "files": listing.file_count, "entries": entries}


class _Listing(NamedTuple):
    """A folder's direct contents: its subfolders (with totals at any depth), how many files it holds
    directly, and how to get files start..stop-1 of those, in path order."""

    subfolders: list[FolderSummary]
    file_count: int
    files: Callable[[int, int], list[FileEntry]]


def _summarised_folder(resolved: Resolved, folder: str) -> _Listing:
    """The listing of an existing folder from the root's folder summary: no page read until files are asked."""
    root = resolved.root
    subfolders = root.subfolders(folder)
    total = root.folder(folder).files if folder else root.file_count
    count = total - sum(f.files for f in subfolders)  # >= 0: decode_root checked the summary
    return _Listing(subfolders, count,
                    lambda start, stop: _direct_files(resolved, folder, subfolders, count, start, stop))


def _scanned_folder(resolved: Resolved, folder: str) -> _Listing:
    """The listing of a folder from every file under it (manifests without a folder summary)."""
    prefix = folder + "/" if folder else ""
    under = resolved.files_under(prefix)
    if folder and not under:
        _not_a_folder(resolved, folder)
    cut = len(prefix)
    totals: dict[str, list[int]] = {}
    direct: list[FileEntry] = []
    for entry in under:
        slash = entry.path.find("/", cut)
        if slash < 0:
            direct.append(entry)
            continue
        counts = totals.setdefault(entry.path[:slash], [0, 0])
        counts[0] += 1
        counts[1] += entry.size
    subfolders = [FolderSummary(path=path, files=files, bytes=size) for path, (files, size) in sorted(totals.items())]
    return _Listing(subfolders, len(direct), lambda start, stop: direct[start:stop])


def _not_a_folder(resolved: Resolved, folder: str) -> NoReturn:
    if _entry_at(resolved, folder) is not None:
        raise NotFoundError(f"{resolved.ref}: {folder!r} is a file, not a folder")
    raise NotFoundError(f"{resolved.ref} has no folder {folder!r}")


def _entry_at(resolved: Resolved, path: str) -> FileEntry | None:
    """The entry at exactly `path`, reading at most the one page that can hold it."""
    root = resolved.root
    if root.inline is not None or "manifest" in resolved.__dict__:
        return next((f for f in resolved.files_under(path) if f.path == path), None)
    pages = _read_pages(resolved, root.pages_in_range(path, path + "\x00"))
    return next((f for page in pages for f in page if f.path == path), None)


def _read_pages(resolved: Resolved, indices: Sequence[int]) -> list[list[FileEntry]]:
    return resolved._checked(lambda: resolved.repo.pages(resolved.record.manifest, indices)) if indices else []


def _direct_files(resolved: Resolved, folder: str, subfolders: list[FolderSummary], count: int, start: int,
                  stop: int) -> list[FileEntry]:
    """Files start..stop-1 (in path order) of the `count` that `folder` holds directly, read from the pages
    that hold them: found by position when the folder has no subfolders (its files are then contiguous),
    else by reading the pages that may hold them, from both ends, until the window is read. Checked
    against the summary: a root whose summary disagrees with its pages is refused."""
    stop = min(stop, count)
    if start >= stop:
        return []
    prefix = folder + "/" if folder else ""
    if subfolders:
        found = _scan_direct_files(resolved, prefix, subfolders, count, start, stop)
    else:
        found = _files_by_position(resolved, prefix, start, stop)
    cut = len(prefix)
    if len(found) != stop - start or any(not f.path.startswith(prefix) or f.path.find("/", cut) >= 0 for f in found):
        raise IntegrityError(f"{resolved.ref}: manifest {resolved.root.id} has a folder summary that does not "
                             f"match its pages (at {folder or 'the top level'!r})")
    return found


def _files_by_position(resolved: Resolved, prefix: str, start: int, stop: int) -> list[FileEntry]:
    """Files start..stop-1 of the contiguous run of paths starting with `prefix`: the page table's file
    counts give the pages that hold them once the run's first position is known (reading the run's first
    page when it begins before the prefix)."""
    root = resolved.root
    under = root.pages_under(prefix)
    if not under:
        return []
    first = under[0]
    starts = [0, *accumulate(p.files for p in root.pages)]  # position of each page's first file
    known: dict[int, list[FileEntry]] = {}
    before = 0  # files of page `first` that sort before the prefix
    if root.pages[first].first < prefix:
        known[first] = _read_pages(resolved, [first])[0]
        before = bisect.bisect_left(known[first], prefix, key=lambda f: f.path)
    low, high = starts[first] + before + start, starts[first] + before + stop
    wanted = range(bisect.bisect_right(starts, low) - 1, min(len(root.pages), bisect.bisect_right(starts, high - 1)))
    missing = [i for i in wanted if i not in known]
    known.update(zip(missing, _read_pages(resolved, missing)))
    files = [f for i in wanted for f in known[i]]
    return files[low - starts[wanted[0]]:high - starts[wanted[0]]] if files else []


def _scan_direct_files(resolved: Resolved, prefix: str, subfolders: list[FolderSummary], count: int, start: int,
                       stop: int) -> list[FileEntry]:
    """Files start..stop-1 of the `count` directly under `prefix`, reading the pages that may hold one
    from both ends of the folder's page range (a few at a time, more as the scan goes on) until the
    window lies in what was read: a file found in the first pages is numbered from the front, one in the
    last pages from the back. A folder's own files often sort before or after its subfolders."""
    candidates = _pages_with_direct_files(resolved.root, prefix, subfolders)
    cut = len(prefix)

    def direct(pages: list[list[FileEntry]]) -> list[FileEntry]:
        return [f for page in pages for f in page if f.path.startswith(prefix) and f.path.find("/", cut) < 0]

    head: list[FileEntry] = []  # the direct files of candidates[:front]
    tail: list[list[FileEntry]] = []  # those of candidates[back:], last pages first
    front, back, tail_count = 0, len(candidates), 0
    batches = {True: 1, False: 1}
    from_front = stop <= count - start  # start where less of the folder must be read
    while front < back and max(len(head), start) < min(count - tail_count, stop):
        size = batches[from_front]
        if from_front:
            head.extend(direct(_read_pages(resolved, candidates[front:min(back, front + size)])))
            front = min(back, front + size)
        else:
            found = direct(_read_pages(resolved, candidates[max(front, back - size):back]))
            tail.append(found)
            tail_count += len(found)
            back = max(front, back - size)
        batches[from_front] = min(2 * size, _SCAN_BATCH_MAX)
        from_front = not from_front
    tail_files = [f for found in reversed(tail) for f in found]
    if len(head) + len(tail_files) > count:
        return []  # more files than the summary says: _direct_files refuses it
    if front >= back:  # every candidate read
        return (head + tail_files)[start:stop] if len(head) + len(tail_files) == count else []
    first_of_tail = count - len(tail_files)  # the number of the first file in tail_files
    out = []
    for number in range(start, stop):
        if number < len(head):
            out.append(head[number])
        elif 0 <= number - first_of_tail < len(tail_files):
            out.append(tail_files[number - first_of_tail])
    return out  # a summary at odds with the pages leaves it short: _direct_files refuses it


def _pages_with_direct_files(root: ManifestRoot, prefix: str, subfolders: list[FolderSummary]) -> list[int]:
    """Pages that may hold a path starting with `prefix` and having no further '/': those under the
    prefix except the ones whose whole path range lies inside one subfolder."""
    inner = sorted(f.path + "/" for f in subfolders)  # in this order, not the folders' ("a/b.c/" < "a/b/")
    out = []
    for index in root.pages_under(prefix):
        low = root.pages[index].first
        high = root.pages[index + 1].first if index + 1 < len(root.pages) else None
        at = bisect.bisect_right(inner, low) - 1  # the subfolder whose range may hold `low`
        if at >= 0 and high is not None and high <= prefix_end(inner[at]):
            continue
        out.append(index)
    return out


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
