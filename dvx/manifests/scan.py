"""Folder scanning: which local files an `add`/`sync` takes, and where they go in the dataset."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator

import msgspec

from dvx.errors import ConflictError, NotFoundError, UsageError
from dvx.manifests.model import check_link_chains, validate_link, validate_path

# Folders never swept into a dataset: dvx's own project state and git's.
ALWAYS_SKIPPED_DIRS = frozenset({".dvx", ".git"})


class ScannedFile(msgspec.Struct):
    path: str  # in the dataset
    local: str  # absolute local path
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    executable: bool
    link: str | None = None


def _excluded(rel: str, patterns: Iterable[str]) -> bool:
    """gitignore-like: a pattern with '/' matches the relative path, one without matches any name."""
    name = rel.rsplit("/", 1)[-1]
    for pattern in patterns:
        pattern = pattern.strip("/")
        if "/" in pattern:
            if fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(rel, pattern + "/*"):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def join_dataset_path(prefix: str, rel: str) -> str:
    """`rel` is built from directory entries (no '/', '.', '..' or NUL parts), so only the prefix, non-ASCII
    names and the portability rules (no backslash, no drive letter) need checking."""
    prefix = prefix.strip("/")
    path = f"{prefix}/{rel}" if prefix else rel
    if rel.isascii() and not prefix and "\\" not in rel and rel[1:2] != ":":
        return path
    return validate_path(path)


def _entry(dataset_path: str, local: str, st: os.stat_result, link: str | None = None) -> ScannedFile:
    return ScannedFile(dataset_path, local, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                       bool(st.st_mode & stat.S_IXUSR), link)


def _link_entry(dataset_path: str, local: str, st: os.stat_result, root_path: str) -> ScannedFile:
    target = os.readlink(local)
    # Validate against the dataset root: a link must not climb out of what is being added.
    validate_link(root_path, target)
    return ScannedFile(dataset_path, local, 0, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, False, target)


def scan(source: str | os.PathLike[str], to: str = "", exclude: Iterable[str] = (),
         skip: Iterable[str] = ()) -> Iterator[ScannedFile]:
    """Files under `source` mapped into the dataset: a folder's contents go under `to`, a file goes
    to `to/<its name>`. Symlinks are kept as links when they stay inside `source`; `skip` lists
    absolute paths (the project's state folder and dvx.toml) that are never taken."""
    exclude = list(exclude)
    skipped = {os.path.abspath(p) for p in skip}
    root = os.path.abspath(source)
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise NotFoundError(f"no such file or folder: {source}") from None
    if stat.S_ISLNK(st.st_mode):
        raise UsageError(f"{source} is a symlink; add the folder or file it points to")
    if stat.S_ISREG(st.st_mode):
        name = os.path.basename(root)
        yield _entry(join_dataset_path(to, name), root, st)
        return
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{source} is neither a file nor a folder")
    stack = [(root, "")]
    links: dict[str, str] = {}
    while stack:
        folder, rel_folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except PermissionError:
            raise UsageError(f"cannot read folder {folder}: permission denied") from None
        for entry in entries:
            rel = f"{rel_folder}/{entry.name}" if rel_folder else entry.name
            if entry.path in skipped or (exclude and _excluded(rel, exclude)):
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if entry.name not in ALWAYS_SKIPPED_DIRS:
                    stack.append((entry.path, rel))
            elif stat.S_ISLNK(st.st_mode):
                item = _link_entry(join_dataset_path(to, rel), entry.path, st, rel)
                links[rel] = item.link
                yield item
            elif stat.S_ISREG(st.st_mode):
                yield _entry(join_dataset_path(to, rel), entry.path, st)
            # sockets, fifos and devices are not data: skipped
    # Each link stays inside on its own; together they must too (`a -> ..` inside `d/`, then `d/b -> a/..`).
    # Raised after the last item: callers finish the scan before they change a draft.
    if links:
        check_link_chains(links)


def changed_since_scan(files: Iterable[ScannedFile]) -> list[str]:
    """Dataset paths of the regular files whose size, mtime, ctime or inode differ from what the scan
    saw, or that are gone: called after reading them, so a file written to while it was read (a log
    still growing, a checkpoint being saved) is reported instead of being stored torn."""
    changed = []
    for f in files:
        if f.link is not None:
            continue
        try:
            st = os.stat(f.local, follow_symlinks=False)
        except OSError:
            changed.append(f.path)
            continue
        if (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) != (f.size, f.mtime_ns, f.ctime_ns, f.inode):
            changed.append(f.path)
    return changed


def ensure_unchanged_since_scan(files: Iterable[ScannedFile]) -> None:
    """Raise ConflictError (exit 4) naming the files that changed while they were being read, so none is
    stored torn; the caller must not record what it read (draft, stat cache)."""
    changed = changed_since_scan(files)
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise ConflictError(f"{shown} changed while being added (still being written?); nothing was added: "
                            "add again once the writing has finished")
