"""The local-folder store: plain files, atomic create via link(2), refs swapped under a file lock.

fsspec's LocalFileSystem offers neither an atomic create-only write nor a conditional replace, so this
backend talks to the OS directly (it is also the fastest path: pread on cached descriptors).
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import xxhash

from dvx.errors import NotFoundError, PreconditionFailed, StoreError
from dvx.fs.base import ObjectInfo, Store, Upload, check_key
from dvx.locks import FileLock

# Backend-private folders; check_key keeps dvx keys out of the ".dvx-" namespace.
_TMP = ".dvx-tmp"
_LOCKS = ".dvx-locks"
_MAX_OPEN_FILES = 64
_WRITE_BUFFER = 1 << 20
_MAX_PIECES = 512  # below IOV_MAX (1024 on Linux)


def _file_mode() -> int:
    """Store objects are readable by whoever may read the store folder, writable only by their owner."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask & ~0o222 | 0o200


_FILE_MODE = _file_mode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_temp_file(folder: Path, prefix: str) -> tuple[int, Path]:
    """Create a new, empty file with a name nobody else uses (in store object mode), as tempfile.mkstemp
    does; the tempfile module would pull shutil, bz2, lzma and random into every command's start."""
    while True:
        path = folder / f"{prefix}{os.urandom(8).hex()}"
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE), path
        except FileExistsError:
            continue


def _token(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


class _LocalUpload(Upload):
    """A temp file filled by gathered writes: pieces are kept (not copied) until about _WRITE_BUFFER
    bytes or _MAX_PIECES of them are pending, then written with one writev(2). Copying every chunk into
    a write buffer first cost as much CPU as the kernel's own copy into the page cache."""

    def __init__(self, store: LocalStore):
        self._store = store
        store._tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, self._path = _new_temp_file(store._tmp_dir, "upload-")
        self._fd: int | None = fd
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._size = 0

    def write(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._size += len(data)
        if self._pending_bytes >= _WRITE_BUFFER or len(self._pending) >= _MAX_PIECES:
            self.flush()

    def flush(self) -> None:
        pieces, self._pending, self._pending_bytes = self._pending, [], 0
        try:
            while pieces:
                written = os.writev(self._fd, pieces)
                done = 0
                while done < len(pieces) and written >= len(pieces[done]):
                    written -= len(pieces[done])
                    done += 1
                pieces = pieces[done:]
                if written:  # a short write ended inside this piece
                    pieces[0] = memoryview(pieces[0])[written:]
        except OSError as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: OSError) -> StoreError:
        return StoreError(f"cannot write to store {self._store.url}: {exc.strerror or exc}")

    def tell(self) -> int:
        return self._size

    def commit(self, key: str) -> bool:
        try:
            self.flush()
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise self._failed(exc) from exc
        except StoreError:
            self.abort()
            raise
        self._close()
        try:
            return self._store._link_into_place(self._path, key)
        finally:
            self._path.unlink(missing_ok=True)

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def abort(self) -> None:
        self._pending = []
        try:
            self._close()
        finally:
            self._path.unlink(missing_ok=True)


class LocalStore(Store):
    latency_bound = False

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().absolute()
        self.url = str(self.root)
        self._tmp_dir = self.root / _TMP
        self._handles: OrderedDict[str, int] = OrderedDict()
        self._handles_lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _link_into_place(self, tmp: Path, key: str) -> bool:
        """Atomically publish a fully written, fsynced temp file; False if the key exists already."""
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot write {final}: {exc.strerror}") from exc
        _fsync_dir(final.parent)
        return True

    def _write_tmp(self, data: bytes) -> Path:
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, path = _new_temp_file(self._tmp_dir, "put-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise StoreError(f"cannot write to store {self.url}: {exc.strerror or exc}") from exc
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def _fd(self, key: str) -> int:
        with self._handles_lock:
            fd = self._handles.get(key)
            if fd is not None:
                self._handles.move_to_end(key)
                return fd
            try:
                fd = os.open(self._path(key), os.O_RDONLY)
            except FileNotFoundError:
                raise NotFoundError(f"object {key} is missing from store {self.url}") from None
            self._handles[key] = fd
            while len(self._handles) > _MAX_OPEN_FILES:
                _, old = self._handles.popitem(last=False)
                os.close(old)
            return fd

    # -- Store API -----------------------------------------------------------------------------
    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"object {key} is missing from store {self.url}") from None
        except IsADirectoryError:
            raise NotFoundError(f"object {key} is missing from store {self.url}") from None

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        fd = self._fd(key)
        out = []
        for start, end in ranges:
            data = os.pread(fd, end - start, start)
            if len(data) != end - start:
                raise NotFoundError(f"object {key} is shorter than expected (truncated?)")
            out.append(data)
        return out

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def is_dir(self, key: str) -> bool:
        return self._path(key).is_dir()

    def list(self, prefix: str) -> list[str]:
        folder = self._path(prefix) if prefix else self.root
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names if not (not prefix and n.startswith(".dvx-")))

    def info(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            raise NotFoundError(f"object {key} is missing from store {self.url}") from None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def put_create(self, key: str, data: bytes) -> bool:
        if self._path(key).exists():
            return False
        tmp = self._write_tmp(data)
        try:
            return self._link_into_place(tmp, key)
        finally:
            tmp.unlink(missing_ok=True)

    def begin_upload(self) -> Upload:
        return _LocalUpload(self)

    def _lock(self, key: str) -> FileLock:
        lock_dir = self.root / _LOCKS
        lock_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_dir / f"{_token(key.encode())}.lock"), timeout=60, what=f"the ref {key}")

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None, None
        return data, _token(data)

    def put_if(self, key: str, data: bytes, token: str | None) -> str:
        with self._lock(key):
            current, current_token = self.read_versioned(key)
            if current_token != token:
                raise PreconditionFailed(f"{key} was changed by another writer")
            tmp = self._write_tmp(data)
            final = self._path(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, final)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise StoreError(f"cannot write {final}: {exc.strerror}") from exc
            _fsync_dir(final.parent)
        return _token(data)

    def delete(self, key: str) -> None:
        with self._handles_lock:
            fd = self._handles.pop(key, None)
            if fd is not None:
                os.close(fd)
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise StoreError(f"cannot delete {key}: {exc.strerror}") from exc

    def scan(self, prefix: str) -> list[ObjectInfo]:
        top = self._path(prefix) if prefix else self.root
        out = []
        for folder, dirs, files in os.walk(top):
            if folder == str(self.root):
                dirs[:] = [d for d in dirs if not d.startswith(".dvx-")]
            rel = os.path.relpath(folder, self.root).replace(os.sep, "/")
            for name in files:
                try:
                    st = os.stat(os.path.join(folder, name))
                except FileNotFoundError:  # deleted while we looked
                    continue
                out.append(ObjectInfo(name if rel == "." else f"{rel}/{name}", st.st_size, st.st_mtime))
        return sorted(out, key=lambda info: info.key)

    def sweep_temporaries(self, older_than: float, dry_run: bool = False) -> list[ObjectInfo]:
        """Files in .dvx-tmp/ that no write has touched since `older_than`: leftovers of crashed writers
        (a live writer keeps writing to its file, or has linked and removed it within seconds)."""
        swept = []
        try:
            entries = list(os.scandir(self._tmp_dir))
        except FileNotFoundError:
            return []
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not entry.is_file(follow_symlinks=False) or st.st_mtime >= older_than:
                continue
            if not dry_run:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
            swept.append(ObjectInfo(f"{_TMP}/{entry.name}", st.st_size, st.st_mtime))
        return swept

    def close(self) -> None:
        with self._handles_lock:
            for fd in self._handles.values():
                os.close(fd)
            self._handles.clear()
