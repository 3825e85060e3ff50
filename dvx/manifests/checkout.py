"""Checkout: write a version's files into a folder, verifying every chunk, never leaving partial files."""

from __future__ import annotations

import errno
import itertools
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import xxhash

from dvx.chunks import ChunkStore
from dvx.errors import IntegrityError, NotFoundError, StoreError, UsageError
from dvx.manifests.model import FileEntry

ProgressFn = Callable[[int], None]
_BATCH_BYTES = 8 << 20
_BATCH_FILES = 256
_FOLDER_BATCH_FILES = 32
_SMALL_FILE = 4 << 20
# A full disk: a partial file is not worth keeping for a resume (it holds the space the user needs).
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _batches(files: list[FileEntry]) -> list[list[FileEntry]]:
    """Neighbouring files (sorted by path) grouped into tasks of a few MiB: one pool task per small file
    costs more than writing it.

    A task stops at a folder's end once it holds _FOLDER_BATCH_FILES files, and tasks are ordered round
    robin over folders, so the tasks that run at the same time create files in different folders:
    creating files in one folder is serialised by the folder's lock, and on ext4 the waiting thread
    spins while the other searches the inode bitmap (slow after many recent deletions)."""
    by_folder: dict[str, list[list[FileEntry]]] = {}
    current: list[FileEntry] = []
    size = 0
    folder = ""
    for entry in files:
        parent = entry.path.rpartition("/")[0]
        if current and (size >= _BATCH_BYTES or len(current) >= _BATCH_FILES
                        or (parent != folder and len(current) >= _FOLDER_BATCH_FILES)):
            by_folder.setdefault(folder, []).append(current)
            current, size = [], 0
        if not current:
            folder = parent
        current.append(entry)
        size += entry.size
    if current:
        by_folder.setdefault(folder, []).append(current)
    return [batch for turn in itertools.zip_longest(*by_folder.values()) for batch in turn if batch is not None]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _FolderMaker:
    """mkdir -p with memory, so 20k files in 100 folders cost 100 mkdirs.

    Never through a symlink: a folder of the target that is a link (left by an earlier get of another
    version, or made by hand) could point anywhere, and writing through it would put files outside the
    target. Like git, dvx refuses to write beyond a symbolic link."""

    def __init__(self, root: Path):
        self._made: set[str] = set()
        self._lock = threading.Lock()
        self._root = root

    def ensure(self, folder: Path) -> None:
        key = str(folder)
        if key in self._made:
            return
        with self._lock:
            current = self._root
            for part in folder.relative_to(self._root).parts:
                current = current / part
                if str(current) in self._made:
                    continue
                try:
                    st = current.lstat()
                except FileNotFoundError:
                    break  # the rest is created below
                except OSError as exc:
                    raise StoreError(f"cannot create folder {current}: {exc.strerror or exc}") from None
                if stat.S_ISLNK(st.st_mode):
                    raise UsageError(f"cannot write under {current}: it is a symlink, and dvx does not write "
                                     "through links (remove it, or get into an empty folder)")
                if not stat.S_ISDIR(st.st_mode):
                    raise UsageError(f"cannot create folder {current}: a file is in the way")
                self._made.add(str(current))
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                raise UsageError(f"cannot create folder {folder}: a file is in the way") from None
            except OSError as exc:
                raise StoreError(f"cannot create folder {folder}: {exc.strerror or exc}") from None
            self._made.add(key)


def _file_digest(path: Path) -> str:
    digest = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _verified_prefix(part, entry: FileEntry, digest) -> int:
    """How many of `entry`'s chunks the partial file already holds intact (their bytes fed to `digest`)."""
    done = 0
    for ref in entry.chunks:
        data = part.read(ref.size)
        if len(data) != ref.size or xxhash.xxh3_128_hexdigest(data) != ref.id:
            break
        digest.update(data)
        done += 1
    return done


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
    resuming = root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"cannot write into {root}: it is a file") from None
    except OSError as exc:
        raise StoreError(f"cannot create folder {root}: {exc.strerror or exc}") from None
    folders = _FolderMaker(root)
    base_mode = 0o444 if read_only else 0o666 & ~_umask()

    def file_mode(entry: FileEntry) -> int:
        return base_mode | ((base_mode & 0o444) >> 2) if entry.executable else base_mode

    def verified_content(entry: FileEntry, chunks) -> bytes:
        data = b"".join(chunks)
        # A one-chunk file's digest is its chunk id, which read_chunks has just checked.
        single_checked = len(entry.chunks) == 1 and entry.chunks[0].id == entry.digest
        if not single_checked and xxhash.xxh3_128_hexdigest(data) != entry.digest:
            raise IntegrityError("content does not match the recorded file digest")
        return data

    def write_small(entry: FileEntry, target: Path, mode: int, data: bytes) -> None:
        """Create a (small, already verified) file with one write.

        A temp file + rename per small file costs ~20x more on ext4, and nothing is written before the
        content is known to be good."""
        # Exclusive create: whatever sits at the target (a link into the cache, a read-only file from an
        # earlier get) is replaced, never written through.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(target, flags, mode)
        except FileExistsError:
            target.unlink()
            fd = os.open(target, flags, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            target.unlink(missing_ok=True)
            raise
        os.close(fd)

    def write_large(entry: FileEntry, target: Path, mode: int) -> None:
        """Stream into a partial file beside the target and rename it into place once verified. An
        interrupted get leaves the partial file; the next one keeps its verified chunks."""
        part = target.parent / f".{target.name}.dvx-part"
        digest = xxhash.xxh3_128()
        try:
            copy_into_part(entry, part, digest)
        except (IntegrityError, NotFoundError):
            part.unlink(missing_ok=True)  # damaged or missing data: nothing worth resuming from
            raise
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                part.unlink(missing_ok=True)
            raise
        if digest.hexdigest() != entry.digest:
            part.unlink(missing_ok=True)
            raise IntegrityError("content does not match the recorded file digest")
        os.chmod(part, mode)
        os.replace(part, target)

    def copy_into_part(entry: FileEntry, part: Path, digest) -> None:
        with open(os.open(part, os.O_RDWR | os.O_CREAT, 0o600), "r+b", buffering=0) as out:
            done = _verified_prefix(out, entry, digest)
            out.truncate(sum(ref.size for ref in entry.chunks[:done]))
            out.seek(0, os.SEEK_END)
            if progress and done:
                progress(out.tell())
            for data in chunk_store.read_chunks(entry.chunks[done:]):
                digest.update(data)
                view = memoryview(data)
                while view:
                    view = view[out.write(view):]
                if progress:
                    progress(len(data))

    def already_there(entry: FileEntry, target: Path, mode: int) -> bool:
        """A file left by an earlier (perhaps interrupted) get into the same folder, with the right
        content: keep it instead of downloading it again."""
        try:
            st = target.lstat()
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size or _file_digest(target) != entry.digest:
            return False
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(target, mode)
        if progress:
            progress(entry.size)
        return True

    def write_one(entry: FileEntry, data: bytes | None = None) -> None:
        """Write one file; `data` is its verified content when the batch already read it."""
        target = root / entry.path
        folders.ensure(target.parent)
        mode = file_mode(entry)
        try:
            if entry.size <= _SMALL_FILE:
                if data is None:
                    data = verified_content(entry, chunk_store.read_chunks(entry.chunks))
                write_small(entry, target, mode, data)
                if progress:
                    progress(entry.size)
            else:
                write_large(entry, target, mode)
        except IntegrityError as exc:
            raise IntegrityError(f"{context}: file {entry.path}: {exc}") from None
        except NotFoundError as exc:  # a pack missing or cut short
            raise NotFoundError(f"{context}: file {entry.path}: {exc}") from None
        except IsADirectoryError:
            raise UsageError(f"cannot write {target}: a folder is in the way") from None
        except OSError as exc:
            if exc.errno == errno.EISDIR or target.is_dir():
                raise UsageError(f"cannot write {target}: a folder is in the way") from None
            raise StoreError(f"cannot write {target}: {exc.strerror or exc}") from None

    def write_batch(batch: list[FileEntry]) -> None:
        """Small files of a batch are neighbours in their packs: fetch their chunks in one pass."""
        if resuming:
            batch = [e for e in batch if not already_there(e, root / e.path, file_mode(e))]
        small = [e for e in batch if e.size <= _SMALL_FILE]
        contents: list[bytes] | None = None
        try:
            stream = chunk_store.read_chunks([ref for e in small for ref in e.chunks])
            contents = [verified_content(e, [next(stream) for _ in e.chunks]) for e in small]
        except (IntegrityError, NotFoundError):
            contents = None  # redo file by file below, so the error names the damaged file
        prepared = dict(zip((id(e) for e in small), contents)) if contents is not None else {}
        for entry in batch:
            write_one(entry, prepared.get(id(entry)))

    regular = [f for f in files if f.link is None]
    regular.sort(key=lambda f: f.path)  # creating files folder by folder is far cheaper than scattered
    # Every folder before any file (as restic does): ext4 then spreads the new folders, and with them
    # their files, over its block groups, instead of packing them where the last folder's files went.
    for folder in sorted({entry.path.rpartition("/")[0] for entry in regular}):
        folders.ensure(root / folder)
    batches = _batches(regular)
    if len(batches) == 1 or chunk_store.jobs == 1:
        for batch in batches:
            write_batch(batch)
    else:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(chunk_store.jobs) as pool:
            for _ in pool.map(write_batch, batches):
                pass
    for entry in (f for f in files if f.link is not None):
        target = root / entry.path
        folders.ensure(target.parent)
        try:
            if target.is_symlink() or target.exists():
                if target.is_dir() and not target.is_symlink():
                    raise UsageError(f"cannot create link {target}: a folder is in the way")
                target.unlink()
            os.symlink(entry.link, target)
        except OSError as exc:
            raise StoreError(f"cannot create link {target}: {exc.strerror or exc}") from None
