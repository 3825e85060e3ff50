"""Checkout: write a version's files into a folder, verifying every chunk, never leaving partial files."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import xxhash

from dvx.chunks import ChunkStore
from dvx.errors import IntegrityError, StoreError, UsageError
from dvx.manifests.model import FileEntry

ProgressFn = Callable[[int], None]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _FolderMaker:
    """mkdir -p with memory, so 20k files in 100 folders cost 100 mkdirs."""

    def __init__(self, root: Path):
        self._made: set[str] = set()
        self._lock = threading.Lock()
        self._root = root

    def ensure(self, folder: Path) -> None:
        key = str(folder)
        if key in self._made:
            return
        with self._lock:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                raise UsageError(f"cannot create folder {folder}: a file is in the way") from None
            self._made.add(key)


def checkout(
    chunk_store: ChunkStore,
    files: list[FileEntry],
    dest: str | os.PathLike[str],
    *,
    context: str,
    read_only: bool = False,
    progress: ProgressFn | None = None,
) -> None:
    """Write `files` under `dest`. `context` (e.g. "cifar@v3") names the version in error messages."""
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    folders = _FolderMaker(root)
    base_mode = 0o444 if read_only else 0o666 & ~_umask()

    def write_one(entry: FileEntry) -> None:
        target = root / entry.path
        folders.ensure(target.parent)
        tmp = target.parent / f".{target.name}.dvx-{uuid.uuid4().hex[:8]}"
        mode = base_mode | ((base_mode & 0o444) >> 2) if entry.executable else base_mode
        try:
            digest = xxhash.xxh3_128()
            with open(tmp, "wb", buffering=0) as out:
                for data in chunk_store.read_chunks(entry.chunks):
                    digest.update(data)
                    view = memoryview(data)
                    while view:
                        view = view[out.write(view):]
                    if progress:
                        progress(len(data))
            if digest.hexdigest() != entry.digest:
                raise IntegrityError("content does not match the recorded file digest")
            os.chmod(tmp, mode)
            if target.is_dir() and not target.is_symlink():
                raise UsageError(f"cannot write {target}: a folder is in the way")
            os.replace(tmp, target)
        except IntegrityError as exc:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(f"{context}: file {entry.path}: {exc}") from None
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write {target}: {exc.strerror or exc}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    regular = [f for f in files if f.link is None]
    regular.sort(key=lambda f: (f.chunks[0].pack, f.chunks[0].offset) if f.chunks else ("", 0))
    jobs = chunk_store.jobs
    if len(regular) == 1 or jobs == 1:
        for entry in regular:
            write_one(entry)
    else:
        with ThreadPoolExecutor(jobs) as pool:
            for _ in pool.map(write_one, regular):
                pass
    for entry in (f for f in files if f.link is not None):
        target = root / entry.path
        folders.ensure(target.parent)
        if target.is_symlink() or target.exists():
            if target.is_dir() and not target.is_symlink():
                raise UsageError(f"cannot create link {target}: a folder is in the way")
            target.unlink()
        os.symlink(entry.link, target)
