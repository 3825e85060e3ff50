"""Drafts and the dataset lifecycle: create → add / remove / sync → status → commit."""

from __future__ import annotations

import fnmatch
import os
import struct
import time
import uuid
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from itertools import chain, islice
from pathlib import Path
from urllib.parse import quote

import msgspec

from dvx.api.garbage import DataCollectedError, Lease, parent_pack_keys
from dvx.api.model import AddResult, CommitResult, Version
from dvx.api.progress import ProgressFactory, no_progress
from dvx.api.repo import Repo
from dvx.chunks import ChunkRef, ChunkStore
from dvx.chunks.pack import pack_key
from dvx.errors import ConflictError, NotFoundError, UsageError
from dvx.locks import FileLock
from dvx.manifests import (
    CachedContent,
    Change,
    FileEntry,
    Manifest,
    ScannedFile,
    StatCache,
    compress_manifest,
    diff_files,
    folders_of,
    manifest_key,
    scan,
    validate_path,
)
from dvx.manifests.model import validate_link
from dvx.manifests.paged import encode_paged, page_key
from dvx.manifests.scan import ensure_unchanged_since_scan
from dvx.refs import VersionRecord, check_name, check_tag, now_iso

DRAFT_FORMAT_VERSION = 3


class DraftState(msgspec.Struct, kw_only=True):
    format_version: int = DRAFT_FORMAT_VERSION
    kind: str = "dataset"
    name: str
    store_url: str
    parents: list[str] = []
    parent_refs: list[str] = []
    message: str = ""
    created: str
    metadata: dict = {}
    # Lineage beyond parents (a model's training data): manifest ids and the refs given.
    inputs: list[str] = []
    input_refs: list[str] = []
    # The draft is its parents' merged files plus these edits (small even for huge datasets).
    changed: list[FileEntry] = []
    removed: list[str] = []
    # Set by the first attempt to commit (saved before anything is written): a re-run after a crash
    # rebuilds the very same manifest, finds its version if it was made, and does not make another.
    commit_created: str = ""
    # Id of the draft's lease on the store (leases/<id>.json): the packs its changes use, so that garbage
    # collection keeps them until the commit references them (dvx/api/garbage.py).
    lease: str = ""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(DraftState)
_entries_decoder = msgspec.msgpack.Decoder(list[FileEntry])
# A draft file: this magic, then length-prefixed msgpack frames: the DraftState without its `changed`
# entries, then those entries in batches (a million-file draft is never one huge buffer in memory).
_DRAFT_MAGIC = b"DVXDRAFT"
_FRAME = struct.Struct("<Q")
_ENTRIES_PER_FRAME = 50_000


def _write_draft(f, state: DraftState) -> None:
    changed = state.changed
    f.write(_DRAFT_MAGIC)
    for frame in chain([_encoder.encode(msgspec.structs.replace(state, changed=[]))],
                       (_encoder.encode(changed[i:i + _ENTRIES_PER_FRAME])
                        for i in range(0, len(changed), _ENTRIES_PER_FRAME))):
        f.write(_FRAME.pack(len(frame)))
        f.write(frame)


def _read_draft(f) -> DraftState:
    """Inverse of _write_draft, a frame at a time; ValueError (or msgspec.DecodeError) when damaged."""
    if f.read(len(_DRAFT_MAGIC)) != _DRAFT_MAGIC:
        raise ValueError("not a draft file of this dvx version")
    state = None
    packs: dict[str, str] = {}
    changed: list[FileEntry] = []
    while header := f.read(_FRAME.size):
        (size,) = _FRAME.unpack(header)
        frame = f.read(size)
        if len(frame) != size:
            raise ValueError("draft file is cut short")
        if state is None:
            state = _decoder.decode(frame)
        else:
            changed.extend(shared_strings(_entries_decoder.decode(frame), packs))
    if state is None:
        raise ValueError("draft file is cut short")
    state.changed = changed
    return state


def shared_strings(entries: list[FileEntry], packs: dict[str, str]) -> list[FileEntry]:
    """Decoded entries with one string object per pack id (`packs` holds them) and a one-chunk file's
    digest shared with its chunk id: decoding gives every chunk its own copies, ~160 bytes a file."""
    out = []
    for entry in entries:
        chunks = entry.chunks
        if chunks:
            chunks = [ChunkRef(c.id, packs.setdefault(c.pack, c.pack), c.offset, c.length, c.size, c.codec)
                      for c in chunks]
            digest = chunks[0].id if len(chunks) == 1 and chunks[0].id == entry.digest else entry.digest
            entry = FileEntry(path=entry.path, size=entry.size, digest=digest, executable=entry.executable,
                              link=entry.link, chunks=chunks)
        out.append(entry)
    return out


def version_from_record(record: VersionRecord, tags: Iterable[str] = (), kind: str = "dataset") -> Version:
    return Version(name=record.name, version=record.version, id=record.manifest, created=record.created,
                   author=record.author, message=record.message, files=record.files, bytes=record.bytes,
                   parents=list(record.parent_refs), parent_ids=list(record.parents), tags=sorted(tags), kind=kind,
                   inputs=list(record.inputs), input_refs=list(record.input_refs), new_bytes=record.new_bytes)


class Drafts:
    """Draft files of one store in the state folder, plus the pointer to the current draft."""

    def __init__(self, repo: Repo, kind: str = "dataset"):
        self.repo = repo
        self.kind = kind
        self.folder = repo.settings.state_dir / "drafts" / repo.store_key

    def path(self, name: str) -> Path:
        return self.folder / f"{quote(name, safe='')}.{self.kind}.draft"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def names(self) -> list[str]:
        from urllib.parse import unquote

        suffix = f".{self.kind}.draft"
        if not self.folder.is_dir():
            return []
        return sorted(unquote(p.name[: -len(suffix)]) for p in self.folder.iterdir() if p.name.endswith(suffix))

    @contextmanager
    def locked(self, name: str):
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path(name)) + ".lock", timeout=600, what=f"the draft of {name}"):
            yield

    def load(self, name: str) -> DraftState:
        try:
            with open(self.path(name), "rb") as f:
                if f.read(len(_DRAFT_MAGIC)) != _DRAFT_MAGIC:
                    raise UsageError(f"draft of {name} was written by another dvx version; discard it "
                                     f"(`dvx {self.kind} discard {name}`) and start again")
                f.seek(0)
                state = _read_draft(f)
        except FileNotFoundError:
            raise NotFoundError(
                f"no draft of {name!r} for store {self.repo.settings.store_url}; "
                f"start one with `dvx {self.kind} create {name}`") from None
        except (msgspec.DecodeError, ValueError, struct.error, IndexError):
            raise UsageError(f"draft file {self.path(name)} is damaged; discard it with "
                             f"`dvx {self.kind} discard {name}`") from None
        if state.format_version != DRAFT_FORMAT_VERSION:
            raise UsageError(f"draft of {name} was written by another dvx version; discard it and start again")
        return state

    def save(self, state: DraftState) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(state.name)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            _write_draft(f, state)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)
        if self.current() == name:
            self._current_path().unlink(missing_ok=True)

    def _current_path(self) -> Path:
        return self.folder / f"CURRENT.{self.kind}"

    def current(self) -> str | None:
        try:
            return self._current_path().read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def set_current(self, name: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._current_path().write_text(name, encoding="utf-8")

    def pick(self, name: str | None) -> str:
        """An explicit name, else the current draft."""
        if name:
            return check_name(name)
        current = self.current()
        if current is None or not self.exists(current):
            raise NotFoundError(f"no current {self.kind} draft; start one with `dvx {self.kind} create NAME` "
                                f"or pass --{self.kind} NAME")
        return current


def merge_parents(manifests: Sequence[Manifest]) -> dict[str, FileEntry]:
    """Files of several parents; where they disagree about a path the FIRST parent wins: a later
    parent's file is dropped if an earlier one has a file or folder at that path or a file at one of
    its parent folders."""
    merged: dict[str, FileEntry] = {}
    folders: set[str] = set()
    for index, manifest in enumerate(manifests):
        if index == 0:
            merged.update(manifest.by_path())
            continue
        if index == 1:
            folders = folders_of(merged)
        taken = dict(merged)
        for entry in manifest.files:
            path = entry.path
            if path in taken or path in folders or _ancestor_in(path, taken):
                continue
            merged[path] = entry
        folders = folders_of(merged)
    return merged


def _ancestor_in(path: str, files: dict[str, FileEntry]) -> bool:
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        if path in files:
            return True
    return False


def put_entries(files: dict[str, FileEntry], entries: list[FileEntry]) -> None:
    """Insert entries, replacing a file that sits where a folder is needed and a folder where a file goes."""
    folders = folders_of(files)
    for entry in entries:
        parent = entry.path
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            files.pop(parent, None)
            folders.add(parent)
        if entry.path in folders:
            prefix = entry.path + "/"
            for path in [p for p in files if p.startswith(prefix)]:
                del files[path]
            folders.discard(entry.path)
        files[entry.path] = entry


class Dataset:
    """A draft of the next version of a dataset (or model, via `kind`)."""

    def __init__(self, repo: Repo, name: str, kind: str = "dataset"):
        self.repo = repo
        self.name = name
        self.kind = kind
        self.drafts = Drafts(repo, kind)

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, parents: Sequence[str] | None = None, message: str = "", *,
               store: str | None = None, repo: Repo | None = None, kind: str = "dataset",
               replace: bool = False, metadata: dict | None = None,
               inputs: Sequence[str] = ()) -> Dataset:
        """Open a draft of `name`. Parents default to the name's latest version; give several to merge.
        `inputs` are dataset refs the new version is made from (recorded by id for lineage)."""
        repo = repo or Repo(store=store)
        check_name(name)
        draft = cls(repo, name, kind)
        refs = repo.refs(kind)
        if parents is None:
            latest = refs.latest(name) if repo.chunk_store_exists() else None
            records = [latest] if latest else []
        else:
            records = [repo.resolve(with_default_name(p, name), kind) for p in parents]
        input_records = [repo.resolve(ref, "dataset") for ref in inputs]
        with draft.drafts.locked(name):
            if draft.drafts.exists(name) and not replace:
                raise ConflictError(
                    f"a draft of {name!r} is already open; commit it (`dvx {kind} commit`) or discard it "
                    f"(`dvx {kind} discard {name}`)")
            if draft.drafts.exists(name):
                draft._release_lease(_load_quietly(draft.drafts, name))
            repo.chunk_store(create=True)
            state = DraftState(kind=kind, name=name, store_url=repo.settings.store_url,
                               parents=[r.manifest for r in records], parent_refs=[r.ref for r in records],
                               message=message, created=now_iso(), metadata=dict(metadata or {}),
                               inputs=[r.manifest for r in input_records], input_refs=[r.ref for r in input_records])
            draft.drafts.save(state)
            draft.drafts.set_current(name)
        return draft

    @classmethod
    def open(cls, name: str | None = None, *, store: str | None = None, repo: Repo | None = None,
             kind: str = "dataset") -> Dataset:
        """The open draft `name`, or the current draft."""
        repo = repo or Repo(store=store)
        drafts = Drafts(repo, kind)
        return cls(repo, drafts.pick(name), kind)

    def discard(self) -> None:
        with self.drafts.locked(self.name):
            if not self.drafts.exists(self.name):
                raise NotFoundError(f"no draft of {self.name!r} to discard")
            self._release_lease(_load_quietly(self.drafts, self.name))
            self.drafts.delete(self.name)

    def state(self) -> DraftState:
        return self.drafts.load(self.name)

    def _lease(self, state: DraftState) -> Lease:
        """The draft's lease (its id is saved with the draft by the caller)."""
        if not state.lease:
            state.lease = uuid.uuid4().hex
        return Lease(self.repo.store, state.lease, purpose="draft", by=self.repo.settings.author, kind=self.kind,
                     name=self.name)

    def _parent_packs(self, state: DraftState) -> set[str]:
        return parent_pack_keys(self.repo, self.kind, state.parent_refs, state.parents)

    def _release_lease(self, state: DraftState | None) -> None:
        if state is not None and state.lease:
            self._lease(state).release()

    # -- the draft's file view -------------------------------------------------------------------
    def base_files(self, state: DraftState | None = None) -> dict[str, FileEntry]:
        """The parents' files merged (first parent wins)."""
        state = state or self.state()
        manifests = []
        for index, parent in enumerate(state.parents):
            try:
                manifests.append(self.repo.read_manifest(parent))
            except NotFoundError:
                ref = state.parent_refs[index] if index < len(state.parent_refs) else parent
                raise NotFoundError(
                    f"the draft of {self.name} starts from {ref}, which was deleted and its data collected; "
                    f"discard the draft (`dvx {self.kind} discard {self.name}`) and create it again") from None
        return merge_parents(manifests)

    def files(self, state: DraftState | None = None,
              base: dict[str, FileEntry] | None = None) -> dict[str, FileEntry]:
        """Every file of the draft as it stands: parents' files with the draft's edits applied."""
        state = state or self.state()
        files = dict(self.base_files(state) if base is None else base)
        for path in state.removed:
            files.pop(path, None)
        for entry in state.changed:
            files[entry.path] = entry
        return files

    def _save_files(self, state: DraftState, base: dict[str, FileEntry], files: dict[str, FileEntry]) -> None:
        state.changed = [e for p, e in files.items() if (b := base.get(p)) is None or not b.same_content(e)]
        state.removed = [p for p in base if p not in files]
        self.drafts.save(state)

    # -- changing the draft ----------------------------------------------------------------------
    def add(self, *paths: str | os.PathLike[str], to: str = "", exclude: Iterable[str] = (),
            progress: ProgressFactory = no_progress) -> AddResult:
        """Store the files under `paths` and put them in the draft (a folder's contents go under `to`)."""
        if not paths:
            raise UsageError("nothing to add: give at least one file or folder")
        if to:
            to = validate_path(to.strip("/")) if to.strip("/") else ""
        started = time.time()
        skip = self.repo.settings.never_swept()
        scanned = chain.from_iterable(scan(path, to=to, exclude=exclude, skip=skip) for path in paths)
        with self.drafts.locked(self.name):
            state = self.drafts.load(self.name)
            base = self.base_files(state)
            files = self.files(state, base)
            entries, result = store_in_batches(self.repo, scanned, files, progress, started,
                                               lease=self._lease(state), covered=self._parent_packs(state))
            put_entries(files, entries)
            self._save_files(state, base, files)
        return result

    def sync(self, folder: str | os.PathLike[str], exclude: Iterable[str] = (),
             progress: ProgressFactory = no_progress) -> list[Change]:
        """Make the draft's root equal `folder`: adds, modifies and removes. Returns what changed."""
        started = time.time()
        if not Path(folder).is_dir():
            if not os.path.lexists(folder):
                raise NotFoundError(f"no such file or folder: {folder}")
            raise UsageError(f"{folder} is not a folder; `sync` mirrors a folder into the dataset root")
        scanned = scan(folder, exclude=exclude, skip=self.repo.settings.never_swept())
        with self.drafts.locked(self.name):
            state = self.drafts.load(self.name)
            base = self.base_files(state)
            before = self.files(state, base)
            entries, _ = store_in_batches(self.repo, scanned, before, progress, started, lease=self._lease(state),
                                          covered=self._parent_packs(state))
            after = {e.path: e for e in entries}
            self._save_files(state, base, after)
        return diff_files(before, after)

    def remove(self, *patterns: str) -> list[str]:
        """Remove files matching the globs (relative to the dataset root; a folder name removes its files)."""
        if not patterns:
            raise UsageError("nothing to remove: give at least one path or glob")
        with self.drafts.locked(self.name):
            state = self.drafts.load(self.name)
            base = self.base_files(state)
            files = self.files(state, base)
            removed = sorted(p for p in files if any(_matches(p, pattern) for pattern in patterns))
            if not removed:
                raise NotFoundError(f"no file in the draft of {self.name} matches {' '.join(patterns)}")
            for path in removed:
                del files[path]
            self._save_files(state, base, files)
        return removed

    def status(self) -> list[Change]:
        state = self.state()
        base = self.base_files(state)
        return diff_files(base, self.files(state, base))

    # -- commit ----------------------------------------------------------------------------------
    def commit(self, message: str | None = None, tags: Sequence[str] = (), *, force_tags: bool = False,
               allow_empty: bool = False) -> CommitResult:
        """Write the manifest, then claim the next version number; the draft is closed afterwards.

        With nothing changed against a single parent, no new version is made (unless `allow_empty`).
        """
        repo = self.repo
        refs = repo.refs(self.kind)
        for tag in tags:
            check_tag(tag)
        with self.drafts.locked(self.name):
            state = self.drafts.load(self.name)
            # "Nothing to commit" only when the draft equals this name's latest version; a draft of
            # an older version (a rollback) or of another name's version still makes a new version.
            latest = refs.latest(self.name) if not state.changed and not state.removed else None
            unchanged = latest is not None and state.parents == [latest.manifest]
            if unchanged and not allow_empty:
                record = latest
                self._check_tags(record, tags, force_tags)
                self._apply_tags(record, tags, force_tags)
                self._release_lease(state)
                self.drafts.delete(self.name)
                return CommitResult(self._version(record), created=False)
            base = self.base_files(state)
            files = self.files(state, base)
            if not state.parents and not files and not allow_empty:
                raise UsageError(f"the draft of {self.name} is empty; add files first (`dvx {self.kind} add PATH`)")
            retry = bool(state.commit_created)
            state.commit_created = state.commit_created or now_iso()
            manifest = Manifest(kind=self.kind, name=self.name, parents=state.parents, created=state.commit_created,
                                author=repo.settings.author, message=message if message is not None else state.message,
                                metadata=state.metadata, files=list(files.values()))
            if tags:
                self._check_tags(None, tags, force_tags)
            lease = self._lease(state)
            self.drafts.save(state)  # the lease id and commit time, before anything is written
            done = None
            if retry:  # a commit killed after its version was made: find that version, don't make another
                manifest_id = encode_paged(manifest).id
                done = next((r for r in reversed(refs.versions(self.name)) if r.manifest == manifest_id), None)
            record = done or write_version(repo, manifest, base, state.parent_refs, state.inputs, state.input_refs,
                                           lease=lease)
            lease.release()
            self._apply_tags(record, tags, force_tags)
            self.drafts.delete(self.name)
        return CommitResult(self._version(record), created=True, stored_bytes=record.new_bytes)

    def _check_tags(self, record: VersionRecord | None, tags: Sequence[str], force: bool) -> None:
        check_tags_free(self.repo, self.kind, self.name, record, tags, force)

    def _apply_tags(self, record: VersionRecord, tags: Sequence[str], force: bool) -> None:
        refs = self.repo.refs(self.kind)
        for tag in tags:
            refs.set_tag(self.name, tag, record, by=self.repo.settings.author, force=force)

    def _version(self, record: VersionRecord) -> Version:
        tags = [t for t, r in self.repo.refs(self.kind).tags(self.name).items() if r.version == record.version]
        return version_from_record(record, tags, self.kind)


# Files scanned, read and stored per batch: bounds the memory of one add to what its entries need (a
# batch's scan records, stat-cache hits and chunk lists come and go), whatever the file count.
STORE_BATCH_FILES = 100_000


def check_tags_free(repo: Repo, kind: str, name: str, record: VersionRecord | None, tags: Sequence[str],
                    force: bool) -> None:
    """ConflictError if a tag of `tags` already points at a version other than `record` (without `force`)."""
    refs = repo.refs(kind)
    for tag in tags:
        existing = refs.get_tag(name, tag)
        if existing and existing.version is not None and not force and (
                record is None or existing.version != record.version):
            raise ConflictError(f"tag {tag!r} already points at {name}@v{existing.version}; use --force to move it")


def store_in_batches(repo: Repo, scanned: Iterable[ScannedFile], known: dict[str, FileEntry],
                     progress: ProgressFactory, scanned_at: float, lease: Lease | None = None,
                     covered: set[str] = frozenset()) -> tuple[list[FileEntry], AddResult]:
    """store_scanned over `scanned` (an iterable, consumed STORE_BATCH_FILES at a time)."""
    entries: list[FileEntry] = []
    total = AddResult()
    scanned = iter(scanned)
    while batch := list(islice(scanned, STORE_BATCH_FILES)):
        got, result = store_scanned(repo, batch, known, progress, scanned_at, lease=lease, covered=covered)
        entries.extend(got)
        for name, value in result.to_dict().items():
            setattr(total, name, getattr(total, name) + value)
        del batch, got
    return entries, total


def store_scanned(repo: Repo, scanned: list[ScannedFile], known: dict[str, FileEntry],
                  progress: ProgressFactory, scanned_at: float, lease: Lease | None = None,
                  covered: set[str] = frozenset()) -> tuple[list[FileEntry], AddResult]:
    """FileEntries for scanned files: reused when the stat cache says unchanged, else read and stored.

    `known` (the current files, e.g. a draft's) lets an unchanged file reuse its entry without decoding
    the cached chunk list. With a `lease`, the packs the entries use are added to it and secured against
    garbage collection, except `covered` ones (pack keys of live parent versions, checked again at
    commit); content whose pack turns out to be gone (collected garbage that the index, the stat cache
    or the draft still named) is stored again."""
    chunk_store = repo.chunk_store(create=True)
    cache = repo.stat_cache()
    result = AddResult(files=len(scanned), bytes=sum(f.size for f in scanned))
    entries: dict[str, FileEntry] = {}
    read: set[str] = set()
    gone: set[str] = set()  # pack ids found missing after the lease
    todo = scanned
    for _ in range(_STORE_ATTEMPTS):
        got = _store_files(repo, chunk_store, cache, todo, known, progress, scanned_at, gone, result, read,
                           check_hits=lease is None)
        entries.update(got)
        if lease is None:
            break
        keys = {pack_key(pack) for pack in {c.pack for e in got.values() for c in e.chunks}} - covered
        lease.hold(keys)
        missing = lease.secure(keys, check=keys)
        if not missing:
            break
        lost = {key.rsplit("/", 1)[1].removesuffix(".pack") for key in missing}
        gone |= lost
        chunk_store.forget_packs(lost)
        todo = [f for f in scanned if any(c.pack in gone for c in entries[f.path].chunks)]
    else:
        raise DataCollectedError(f"stored data keeps disappearing from store {repo.store.url} while adding "
                                 "(is a gc with a very short grace running?); re-add the files")
    result.unchanged_files = sum(1 for f in scanned if f.link is None) - len(read)
    return [entries[f.path] for f in scanned], result


_STORE_ATTEMPTS = 8


def _store_files(repo: Repo, chunk_store: ChunkStore, cache: StatCache, scanned: list[ScannedFile],
                 known: dict[str, FileEntry], progress: ProgressFactory, scanned_at: float, gone: set[str],
                 result: AddResult, read: set[str], check_hits: bool) -> dict[str, FileEntry]:
    """One pass of store_scanned: entries by path. Content in a pack of `gone` is stored again."""
    # When most files are already in the draft, hits only need their digests (chunk lists on demand).
    hits = cache.lookup(scanned, with_chunks=len(known) < len(scanned) // 2)
    entries: dict[str, FileEntry] = {}
    pack_alive: dict[str, bool] = {}
    to_read: list[ScannedFile] = []
    for f in scanned:
        if f.link is not None:
            entries[f.path] = FileEntry(path=f.path, link=f.link)
            continue
        hit = hits.get(f.local)
        if hit is None:
            to_read.append(f)
            continue
        current = known.get(f.path)
        if current is not None and current.digest == hit.digest and current.size == hit.size \
                and current.link is None and not (gone and any(c.pack in gone for c in current.chunks)):
            entries[f.path] = current if current.executable == f.executable else FileEntry(
                path=f.path, size=current.size, digest=current.digest, executable=f.executable,
                chunks=current.chunks)
            continue
        try:
            chunks = hit.chunks()
        except KeyError:
            to_read.append(f)
            continue
        for ref in chunks:
            if ref.pack not in pack_alive:
                # With a lease, store_scanned checks the packs after leasing them (and reads again if gone).
                pack_alive[ref.pack] = ref.pack not in gone and (not check_hits or repo.store.exists(pack_key(ref.pack)))
        if all(pack_alive[c.pack] for c in chunks):
            entries[f.path] = FileEntry(path=f.path, size=hit.size, digest=hit.digest,
                                        executable=f.executable, chunks=chunks)
        else:
            to_read.append(f)
    if to_read:
        total = sum(f.size for f in to_read)
        with progress(f"storing {len(to_read)} files", total) as advance:
            ingested, writer = chunk_store.ingest(((f, f.local) for f in to_read), progress=advance)
        ensure_unchanged_since_scan(to_read)  # a file written to while read is not stored torn
        fresh = []
        for item in ingested:
            f = item.source
            entries[f.path] = FileEntry(path=f.path, size=item.size, digest=item.digest,
                                        executable=f.executable, chunks=item.chunks)
            fresh.append((f, CachedContent(item.size, item.digest, item.chunks)))
        cache.record(fresh, since=scanned_at)
        read.update(f.path for f in to_read)
        result.read_files, result.read_bytes = len(read), result.read_bytes + total
        result.stored_bytes += writer.stored_bytes
        result.packs += writer.packs_written
    return entries


def write_version(repo: Repo, manifest: Manifest, base: dict[str, FileEntry], parent_refs: Sequence[str],
                  inputs: Sequence[str] = (), input_refs: Sequence[str] = (),
                  lease: Lease | None = None) -> VersionRecord:
    """Store the manifest, then claim the next version number of its name (BRIEF §4 order).

    With a `lease`, first add the manifest and every pack it uses to the lease and secure them against
    garbage collection; a pack that is gone (collected after the draft's lease lapsed, or with a
    deleted parent) fails the commit with DataCollectedError naming the files to add again."""
    known_chunks = {c.id for f in base.values() for c in f.chunks}
    new_chunks = {c.id: c.length for f in manifest.files for c in f.chunks if c.id not in known_chunks}
    new_bytes = sum(new_chunks.values())
    del known_chunks, new_chunks
    for f in manifest.files:  # entries taken from a parent were checked when it was read
        if base.get(f.path) is not f:
            validate_path(f.path)
            if f.link is not None:
                validate_link(f.path, f.link)
    encoded = encode_paged(manifest, reuse=repo.reusable_pages(manifest.parents), each_checked=True)
    key = manifest_key(encoded.id)
    pages = {page_key(ref.id): data for ref, data in encoded.pages}
    parent_pages: set[str] = set()
    for parent in manifest.parents:
        try:
            parent_pages |= repo.manifest_keys(parent)
        except NotFoundError:
            pass
    reused = pages.keys() & parent_pages  # in the store while those parents live: not written again
    if lease is not None:
        packs = {pack_key(pack) for pack in {c.pack for f in manifest.files for c in f.chunks}}
        lease.hold(packs | pages.keys() | {key})
        missing = lease.secure(packs | pages.keys() | {key}, check=packs | reused, covered=lambda: parent_pack_keys(
            repo, manifest.kind, parent_refs, manifest.parents))
        if missing - reused:
            raise DataCollectedError(_collected_message(manifest, missing - reused))
        if missing:  # pages of a parent deleted meanwhile: build and store them again
            pages = {page_key(ref.id): data for ref, data in encode_paged(manifest, each_checked=True).pages}
            reused -= missing
    _put_all_created(repo, {k: data for k, data in pages.items() if k not in reused})
    repo.store.put_create(key, compress_manifest(encoded.data))
    return repo.refs(manifest.kind).allocate(VersionRecord(
        name=manifest.name, version=0, manifest=encoded.id, created=manifest.created,
        author=manifest.author, message=manifest.message, files=len(manifest.files),
        bytes=manifest.total_size, parents=list(manifest.parents), parent_refs=list(parent_refs),
        inputs=list(inputs), input_refs=list(input_refs), new_bytes=new_bytes))


def _put_all_created(repo: Repo, objects: dict[str, bytes]) -> None:
    """Create-only writes of `objects` (key → stored bytes), sent in parallel (a few at a time on a
    local disk, where each costs an fsync rather than a round trip)."""
    def put(item: tuple[str, bytes]) -> None:
        repo.store.put_create(item[0], item[1])

    if len(objects) <= 2:
        for item in objects.items():
            put(item)
        return
    from concurrent.futures import ThreadPoolExecutor
    threads = min(16 if repo.store.latency_bound else 4, len(objects))
    with ThreadPoolExecutor(threads, thread_name_prefix="dvx-pages") as pool:
        list(pool.map(put, objects.items()))


def _collected_message(manifest: Manifest, missing: set[str]) -> str:
    paths = [f.path for f in manifest.files if any(pack_key(c.pack) in missing for c in f.chunks)]
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    redo = ("re-add them (`dvx dataset add PATH...` reads them again from disk), then commit again"
            if manifest.kind == "dataset" else "register the model again (`dvx model register` re-reads the files)")
    return (f"cannot commit {manifest.name}: the stored content of {len(paths)} file(s) was garbage-collected "
            f"(unreferenced for longer than the gc grace: its draft sat unused for over a day, or came from a "
            f"deleted version): {shown}; {redo}")


def _load_quietly(drafts: Drafts, name: str) -> DraftState | None:
    try:
        return drafts.load(name)
    except (NotFoundError, UsageError):
        return None


def with_default_name(ref: str, name: str) -> str:
    """`--parent v2` is short for `--parent NAME@v2`."""
    return f"{name}@{ref}" if "@" not in ref and (ref.startswith("v") and ref[1:].isdigit()) else ref


def _matches(path: str, pattern: str) -> bool:
    pattern = pattern.strip("/")
    return (fnmatch.fnmatchcase(path, pattern) or path.startswith(pattern + "/")
            or fnmatch.fnmatchcase(path, pattern + "/*"))
