"""Stores on any fsspec filesystem. Create-only writes use ``pipe_file(mode="create")``; each backend
supplies its own compare-and-swap for refs (the in-memory one here; cloud ones in their modules)."""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import xxhash

from dvx.errors import (
    DvxError,
    NotFoundError,
    PreconditionFailed,
    StoreError,
    UsageError,
)
from dvx.fs.base import ObjectInfo, Store, Upload, check_key


class _BufferedUpload(Upload):
    def __init__(self, store: FsspecStore):
        self._store = store
        self._buffer = io.BytesIO()

    def write(self, data: bytes | memoryview) -> None:
        self._buffer.write(data)

    def tell(self) -> int:
        return self._buffer.tell()

    def commit(self, key: str) -> bool:
        data = self._buffer.getvalue()
        self._buffer = io.BytesIO()
        return self._store.put_create(key, data)

    def abort(self) -> None:
        self._buffer = io.BytesIO()


def check_options(url: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Per-store settings (dvx.toml) are checked by name so a typo is an error, not silently ignored."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)} for store {url}: "
                         f"this backend accepts {', '.join(sorted(allowed))}")


STORE_METHODS = ("read", "read_ranges", "exists", "is_dir", "list", "info", "put_create", "read_versioned",
                  "put_if", "delete", "scan")


def as_store_errors(method):
    """SDK failures (unreachable endpoint, denied credentials, throttling that outlived the SDK's
    retries) become one StoreError naming the store, instead of a traceback."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (DvxError, FileNotFoundError, FileExistsError):
            raise
        except Exception as exc:
            raise StoreError(f"store {self.url}: {type(exc).__name__}: {exc}") from exc

    return guarded


class FsspecStore(Store):
    """Objects under `root` of an fsspec filesystem `fs`."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in STORE_METHODS:
            if name in cls.__dict__:
                setattr(cls, name, as_store_errors(cls.__dict__[name]))

    def __init__(self, fs, root: str, url: str):
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def _folder(self, prefix: str) -> str:
        return self._path(prefix) if prefix else self.root

    def read(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(key))
        except (FileNotFoundError, IsADirectoryError):
            raise NotFoundError(f"object {key} is missing from store {self.url}") from None

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        path = self._path(key)
        wanted = [(start, end) for start, end in ranges if end > start]  # HTTP can't ask for 0 bytes
        try:
            fetched = iter(self.fs.cat_ranges([path] * len(wanted), [r[0] for r in wanted],
                                              [r[1] for r in wanted], on_error="raise")) if wanted else iter(())
        except FileNotFoundError:
            raise NotFoundError(f"object {key} is missing from store {self.url}") from None
        out = []
        for start, end in ranges:
            data = next(fetched) if end > start else b""
            if len(data) != end - start:
                raise NotFoundError(f"object {key} is shorter than expected (truncated?)")
            out.append(data)
        if not wanted and not self.exists(key):
            raise NotFoundError(f"object {key} is missing from store {self.url}")
        return out

    def exists(self, key: str) -> bool:
        return self.fs.isfile(self._path(key))

    def is_dir(self, key: str) -> bool:
        return self.fs.isdir(self._folder(key))

    def list(self, prefix: str) -> list[str]:
        try:
            entries = self.fs.ls(self._folder(prefix), detail=False)
        except FileNotFoundError:
            return []
        base = self._folder(prefix).rstrip("/") + "/"
        names = []
        for entry in entries:
            entry = entry.rstrip("/")
            if entry.lstrip("/").startswith(base.lstrip("/")):
                names.append(entry.lstrip("/")[len(base.lstrip("/")):])
        return sorted(n for n in names if n)

    def info(self, key: str) -> ObjectInfo:
        try:
            info = self.fs.info(self._path(key))
        except FileNotFoundError:
            raise NotFoundError(f"object {key} is missing from store {self.url}") from None
        return ObjectInfo(key, int(info["size"]), _mtime(info))

    def scan(self, prefix: str) -> list[ObjectInfo]:
        """One recursive listing (paged by the SDK), with sizes and modification times."""
        folder = self._folder(prefix).rstrip("/")
        try:
            found = self.fs.find(folder, detail=True)
        except FileNotFoundError:
            return []
        base = folder.lstrip("/") + "/"
        out = []
        for path, info in found.items():
            path = path.lstrip("/")
            if info.get("type") == "directory" or not path.startswith(base):
                continue
            out.append(ObjectInfo(path[len(self.root.lstrip("/")) + 1:], int(info.get("size") or 0), _mtime(info)))
        return sorted(out, key=lambda info: info.key)

    def put_create(self, key: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(self._path(key), data, mode="create")
        except FileExistsError:
            return False
        return True

    def begin_upload(self) -> Upload:
        return _BufferedUpload(self)

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        try:
            data = self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            return None, None
        return data, xxhash.xxh3_128_hexdigest(data)

    def put_if(self, key: str, data: bytes, token: str | None) -> str:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass


def _mtime(info: dict) -> float:
    """Last-modified time in seconds since the epoch from an fsspec info dict (each SDK names it its way)."""
    created = info.get("LastModified") or info.get("created") or info.get("mtime") or 0
    return created.timestamp() if hasattr(created, "timestamp") else float(created)


_MEMORY_LOCK = threading.Lock()


class MemoryStore(FsspecStore):
    """fsspec's process-wide in-memory filesystem: for tests and throwaway work in one process."""

    def __init__(self, name: str, url: str):
        import fsspec

        super().__init__(fsspec.filesystem("memory"), f"/dvx-stores/{name}", url)

    def put_create(self, key: str, data: bytes) -> bool:
        with _MEMORY_LOCK:
            return super().put_create(key, data)

    def put_if(self, key: str, data: bytes, token: str | None) -> str:
        with _MEMORY_LOCK:
            _, current = self.read_versioned(key)
            if current != token:
                raise PreconditionFailed(f"{key} was changed by another writer")
            self.fs.pipe_file(self._path(key), data)
        return xxhash.xxh3_128_hexdigest(data)


for _name in STORE_METHODS:
    setattr(FsspecStore, _name, as_store_errors(getattr(FsspecStore, _name)))
