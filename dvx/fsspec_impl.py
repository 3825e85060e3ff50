"""The read-only `dvx://` filesystem for fsspec, so pandas, pyarrow, dask, PyTorch loaders and anything
else that takes an fsspec URL can read versions in place:

    pd.read_csv("dvx://cifar@v3/labels.csv")
    fs = fsspec.filesystem("dvx", store="s3://bucket/datasets")
    fs.ls("vision/cifar@production/train")

Registered under the `fsspec.specs` entry point, so it loads only when a dvx:// URL is used (`import dvx`
never imports fsspec). An integration on top of the API, like the CLI: it uses dvx.api only.

Paths (after `dvx://`):
    NAME@SELECTOR/PATH   exact: the first '@' ends the name, the next '/' ends the selector (vN, tag,
                         id prefix, latest). NAME may contain '/': vision/cifar@v3/train/a.png.
    NAME/PATH            no '@': NAME is the longest existing name that is a whole-segment prefix;
                         inside a project a pinned NAME means its pinned version, else the latest.
    model:NAME@SEL/PATH  a model version (`dataset:` forces a dataset); `kind="model"` makes models
                         the default for paths without a prefix.
    ""                   the root: lists the names of that kind as folders.
Each reference is resolved once per filesystem instance and then kept (fsspec caches instances per
store, project, thread and arguments), so a run sees one consistent version; `invalidate_cache()`
forgets the resolutions, `pin(path)` gives the exact NAME@vN form of a path.
"""

from __future__ import annotations

import posixpath
import threading
from collections import OrderedDict
from datetime import datetime, timezone

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from dvx.api import reading
from dvx.api.config import load_settings
from dvx.api.repo import Repo
from dvx.errors import NotFoundError, UsageError

KINDS = ("dataset", "model")
_MAX_LINKS = 40
_TREES_KEPT = 8


class DvxNotFoundError(FileNotFoundError, NotFoundError):
    """A name, version or path that doesn't exist: both fsspec's FileNotFoundError and dvx's NotFoundError."""


class DvxInvalidPathError(FileNotFoundError, UsageError):
    """A path that names nothing because it is malformed (a bad reference or path): a FileNotFoundError
    for fsspec's exists()/isdir()/glob(), and a dvx UsageError with the reason."""


def _read_only(action: str, path: object) -> PermissionError:
    return PermissionError(
        f"dvx:// is read-only: dvx versions are immutable, so it cannot {action} {path!r}. Make a new version "
        "instead: ds = dvx.Dataset.create(NAME); ds.add(...); ds.commit() (or `dvx dataset create NAME`, "
        "`dvx dataset add PATH`, `dvx dataset commit`), then read it as dvx://NAME@vN/...")


class _Where(type(AbstractFileSystem)):
    """fsspec caches filesystem instances by their arguments; `store=None` means "the store the CLI
    would use here", which depends on DVX_STORE, the project and the working folder. Putting those in
    the cache token (through `_extra_tokenize_attributes`) keeps a changed environment from reusing a
    filesystem bound to another store or project."""

    @property
    def _dvx_where(cls) -> tuple[str, str]:
        settings = load_settings()
        return settings.store_url, str(settings.project_dir)


class _Version:
    """One resolved version seen as folders and files."""

    def __init__(self, resolved: reading.Resolved, kind: str):
        self.record = resolved.record
        self.kind = kind
        self.files = resolved.manifest.by_path()
        # folder ('' = root) → {child name: FileEntry, or None for a sub-folder}
        self.children: dict[str, dict[str, object]] = {"": {}}
        for entry in resolved.manifest.files:
            parts = entry.path.split("/")
            parent = ""
            for depth, part in enumerate(parts[:-1]):
                folder = "/".join(parts[:depth + 1])
                kids = self.children[parent]
                if part not in kids:
                    kids[part] = None
                    self.children[folder] = {}
                parent = folder
            self.children[parent][parts[-1]] = entry
        created = self.record.created
        try:
            self.mtime = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            self.mtime = datetime.fromtimestamp(0, timezone.utc)

    def common(self) -> dict:
        return {"version": self.record.ref, "version_id": self.record.manifest, "kind": self.kind,
                "created": self.record.created, "mtime": self.mtime}

    def target(self, path: str):
        """The FileEntry whose content `path` holds (links followed inside the version), or None."""
        entry = self.files.get(path)
        for _ in range(_MAX_LINKS):
            if entry is None or entry.link is None:
                return entry
            entry = self.files.get(posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), entry.link)))
        return None


class DvxFile(AbstractBufferedFile):
    """A read-only, seekable file of a version.

    Reads go straight to the ChunkedReader (fsspec cache type "none" by default): it fetches only the
    chunks that cover a read (verified; kept in the local chunk cache), keeps the last few in memory, and
    streams with read-ahead once reads move forward. Another `cache_type` may still be asked for."""

    DEFAULT_BLOCK_SIZE = 256 << 10  # what readuntil() of another cache type reads at a time

    def __init__(self, fs: DvxFileSystem, path: str, reader: reading.ChunkedReader, details: dict,
                 block_size=None, cache_type: str = "none", cache_options=None, **kwargs):
        self._reader = reader
        kwargs.pop("size", None)
        kwargs.pop("autocommit", None)
        super().__init__(fs, path, mode="rb", block_size=block_size, cache_type=cache_type,
                         cache_options=cache_options, size=reader.size, **kwargs)
        self.details = details

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self._reader.read_range(start, end)

    def readuntil(self, char=b"\n", blocks=None) -> bytes:
        """Up to and including the next `char`, searched chunk by chunk in place (a line costs its length,
        not a block)."""
        if len(char) != 1 or self.cache is None or self.cache.name != "none":
            return super().readuntil(char, blocks)
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        out = []
        while self.loc < self.size:
            chunk_start, data = self._reader.chunk_at(self.loc)
            offset = self.loc - chunk_start
            found = data.find(char, offset)
            stop = len(data) if found < 0 else found + 1
            out.append(data[offset:stop])
            self.loc = chunk_start + stop
            if found >= 0:
                break
        return b"".join(out)

    def _upload_chunk(self, final: bool = False):
        raise _read_only("write to", self.path)

    def _initiate_upload(self):
        raise _read_only("write to", self.path)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._reader.close()


class DvxFileSystem(AbstractFileSystem, metaclass=_Where):
    """Read-only fsspec filesystem over the versions of a dvx store.

    `store`: a store URL or a store named in dvx.toml; default: the store the CLI would use (DVX_STORE,
    the project's dvx.toml, the embedded default). `kind`: "dataset" (default) or "model", the kind of
    names without a `dataset:`/`model:` prefix."""

    protocol = "dvx"
    root_marker = ""
    cachable = True
    _extra_tokenize_attributes = ("_dvx_where",)
    blocksize = 4 << 20  # get()/get_file() copy in reads of this size (they stream with read-ahead)

    def __init__(self, store: str | None = None, kind: str = "dataset", **kwargs):
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise UsageError(f"invalid kind {kind!r} for dvx://: use 'dataset' or 'model'")
        self.store = store
        self.kind = kind
        self._repo = Repo(store=store)
        self._lock = threading.RLock()
        self._names: dict[str, set[str]] = {}
        self._refs: dict[tuple[str, str], object] = {}  # (kind, reference as written) → its VersionRecord
        self._trees: OrderedDict[str, _Version] = OrderedDict()

    # -- paths and references ---------------------------------------------------------------------
    def _kind_of(self, path: str) -> tuple[str, str, str]:
        """(kind, prefix as written, rest) for 'model:NAME…', 'dataset:NAME…' or 'NAME…'."""
        for kind in KINDS:
            if path.startswith(kind + ":"):
                return kind, kind + ":", path[len(kind) + 1:]
        return self.kind, "", path

    def _known_names(self, kind: str, refresh: bool = False) -> set[str]:
        with self._lock:
            if refresh or kind not in self._names:
                self._names[kind] = set(reading.list_kind_names(self._repo, kind))
            return self._names[kind]

    def _split(self, path: str) -> tuple[str, str, str, str]:
        """(kind, reference, root as written, path inside the version) of a stripped path."""
        kind, prefix, text = self._kind_of(path)
        try:
            try:
                ref, inner = reading.split_ref_path(self._repo, text, kind, names=self._known_names(kind))
            except NotFoundError:
                if "@" in text:
                    raise
                ref, inner = reading.split_ref_path(self._repo, text, kind, names=self._known_names(kind, True))
        except NotFoundError as exc:
            raise DvxNotFoundError(str(exc)) from None
        return kind, ref, prefix + ref, inner.strip("/")

    def _version(self, kind: str, ref: str) -> _Version:
        """The version `ref` names: resolved once per instance, its folder tree kept for the last few."""
        key = (kind, ref)
        with self._lock:
            try:
                record = self._refs.get(key)
                if record is None:
                    record = self._refs[key] = reading.resolve_record(self._repo, ref, kind)
                version = self._trees.get(record.manifest)
                if version is None:
                    version = self._trees[record.manifest] = _Version(reading.Resolved(self._repo, record), kind)
                    while len(self._trees) > _TREES_KEPT:
                        self._trees.popitem(last=False)
                else:
                    self._trees.move_to_end(record.manifest)
            except NotFoundError as exc:
                raise DvxNotFoundError(str(exc)) from None
            except UsageError as exc:
                raise DvxInvalidPathError(str(exc)) from None
            return version

    def _locate(self, path) -> tuple[_Version, str, str]:
        """(version, path inside it, root as written) of any non-root path."""
        kind, ref, root, inner = self._split(self._strip_protocol(path))
        version = self._version(kind, ref)
        if inner and not _valid_inner(inner):
            raise DvxInvalidPathError(f"invalid path {inner!r} in {version.record.ref}")
        return version, inner, root

    def pin(self, path: str) -> str:
        """`path` with its reference replaced by the exact version this filesystem reads for it:
        pin("cifar/labels.csv") == "cifar@v5/labels.csv". Exact paths mean the same in every process."""
        version, inner, _root = self._locate(path)
        kind_prefix = f"{version.kind}:" if version.kind != self.kind else ""
        exact = f"{kind_prefix}{version.record.ref}"
        return f"{exact}/{inner}" if inner else exact

    def invalidate_cache(self, path=None) -> None:
        """Forget resolved references and known names: the next access resolves them again."""
        with self._lock:
            self._refs.clear()
            self._names.clear()
        super().invalidate_cache(path)

    # -- metadata ------------------------------------------------------------------------------------
    @staticmethod
    def _join(root: str, inner: str) -> str:
        return f"{root}/{inner}" if inner else root

    def _entry_info(self, version: _Version, name: str, inner: str, entry) -> dict:
        if entry is None:  # a folder
            return {"name": name, "size": 0, "type": "directory", **version.common()}
        target = version.target(inner) if entry.link is not None else entry
        info = {"name": name, **version.common()}
        if target is None:
            info.update({"size": 0, "type": "other"})
        else:
            info.update({"size": target.size, "type": "file", "digest": target.digest,
                         "executable": target.executable})
        if entry.link is not None:
            info.update({"islink": True, "link": entry.link})
        return info

    def _root_listing(self, path: str) -> list[dict]:
        kind, prefix, rest = self._kind_of(path)
        if rest:
            raise DvxNotFoundError(path)
        return [{"name": prefix + name, "size": 0, "type": "directory", "kind": kind}
                for name in sorted(self._known_names(kind, refresh=True))]

    def info(self, path, **kwargs) -> dict:
        stripped = self._strip_protocol(path)
        if stripped in ("", "dataset:", "model:"):
            return {"name": stripped, "size": 0, "type": "directory"}
        version, inner, root = self._locate(stripped)
        name = self._join(root, inner)
        if inner in version.files:
            return self._entry_info(version, name, inner, version.files[inner])
        if inner in version.children:
            return self._entry_info(version, name, inner, None)
        raise DvxNotFoundError(f"{version.record.ref} has no file or folder {inner!r}")

    def ls(self, path, detail=True, **kwargs):
        stripped = self._strip_protocol(path)
        if stripped in ("", "dataset:", "model:"):
            rows = self._root_listing(stripped)
        else:
            version, inner, root = self._locate(stripped)
            if inner in version.files:
                rows = [self._entry_info(version, self._join(root, inner), inner, version.files[inner])]
            elif inner in version.children:
                rows = []
                for child, entry in sorted(version.children[inner].items()):
                    child_inner = f"{inner}/{child}" if inner else child
                    rows.append(self._entry_info(version, self._join(root, child_inner), child_inner, entry))
            else:
                raise DvxNotFoundError(f"{version.record.ref} has no file or folder {inner!r}")
        return rows if detail else [row["name"] for row in rows]

    def ukey(self, path) -> str:
        """The content digest (xxh3-128) of a file: equal keys mean equal bytes."""
        info = self.info(path)
        return info.get("digest") or f"{info['version_id']}:{info['name']}"

    def modified(self, path) -> datetime:
        """When the version was committed (its files have no other time)."""
        return self.info(path)["mtime"]

    def created(self, path) -> datetime:
        return self.modified(path)

    # -- reading -------------------------------------------------------------------------------------
    def _reader(self, path) -> tuple[reading.ChunkedReader, dict, str]:
        version, inner, root = self._locate(path)
        entry = version.files.get(inner)
        if entry is None:
            if inner in version.children:
                raise IsADirectoryError(f"{self._join(root, inner)} is a folder of {version.record.ref}")
            raise DvxNotFoundError(f"{version.record.ref} has no file {inner!r}")
        target = version.target(inner)
        if target is None:
            raise DvxNotFoundError(f"{version.record.ref}: {inner} is a link to {entry.link}, "
                                   "which is not a file of the version")
        try:
            chunk_store = self._repo.chunk_store()
        except NotFoundError as exc:
            raise DvxNotFoundError(str(exc)) from None
        reader = reading.ChunkedReader(chunk_store, target, version.record.ref)
        return reader, self._entry_info(version, self._join(root, inner), inner, entry), self.pin(path)

    def cat_file(self, path, start=None, end=None, **kwargs) -> bytes:
        reader, _info, _exact = self._reader(path)
        size = reader.size
        start = 0 if start is None else (max(0, size + start) if start < 0 else start)
        end = size if end is None else (max(0, size + end) if end < 0 else end)
        try:
            return reader.read_range(start, end)
        finally:
            reader.close()

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        if mode != "rb":
            raise _read_only(f"open (mode {mode!r})", path)
        reader, info, exact = self._reader(path)
        # The file carries the exact NAME@vN path, so a pickled file reopens the same version anywhere.
        return DvxFile(self, exact, reader, info, block_size=block_size, cache_options=cache_options, **kwargs)

    # -- writing: refused ----------------------------------------------------------------------------
    def mkdir(self, path, create_parents=True, **kwargs):
        raise _read_only("create folder", path)

    def makedirs(self, path, exist_ok=False):
        raise _read_only("create folder", path)

    def rmdir(self, path):
        raise _read_only("remove folder", path)

    def rm_file(self, path):
        raise _read_only("remove", path)

    def _rm(self, path):
        raise _read_only("remove", path)

    def rm(self, path, recursive=False, maxdepth=None):
        raise _read_only("remove", path)

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        raise _read_only("write", path)

    def pipe(self, path, value=None, **kwargs):
        raise _read_only("write", path)

    def put_file(self, lpath, rpath, callback=None, mode="overwrite", **kwargs):
        raise _read_only("upload to", rpath)

    def put(self, lpath, rpath, recursive=False, callback=None, maxdepth=None, **kwargs):
        raise _read_only("upload to", rpath)

    def cp_file(self, path1, path2, **kwargs):
        raise _read_only("copy to", path2)

    def copy(self, path1, path2, recursive=False, maxdepth=None, on_error=None, **kwargs):
        raise _read_only("copy to", path2)

    def mv(self, path1, path2, recursive=False, maxdepth=None, **kwargs):
        raise _read_only("move", path1)

    def touch(self, path, truncate=True, **kwargs):
        raise _read_only("touch", path)


def _valid_inner(inner: str) -> bool:
    parts = inner.split("/")
    return "\x00" not in inner and all(part not in ("", ".", "..") for part in parts)
