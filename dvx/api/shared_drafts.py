"""Shared drafts: N workers on different machines add disjoint parts of one new version through the
store alone, and one `commit` merges them (docs/scale.md#distributed-ingest).

A shared draft lives in the store, not in a local state folder, under an id anyone can open:

    drafts/<id>/draft.json                 the draft: name, parents, message, author (create-only)
    drafts/<id>/parts/<part id>.json.zst   one worker's `add` (or `remove`): its files (create-only)
    drafts/<id>/commit.json                how the draft ended: closing → committed, or discarded (CAS)

A worker's `add` stores its packs through the normal ingest path under a lease of its own (so gc keeps
them), then writes its part. The commit closes the draft (create-only `commit.json`), freezes the list
of parts by compare-and-swap (so a worker that added while the draft was closing learns for certain
whether its part is in), fixes the manifest's time, author and message (so every committer builds the
very same manifest), takes the commit over by compare-and-swap (one writer of the version), writes the
version with `write_version`, records it in `commit.json`, and only then releases the parts' leases and
deletes the parts. Each step resumes where a crashed commit stopped.
"""

from __future__ import annotations

import bisect
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec

from dvx.api.datasets import (
    check_tags_free,
    merge_parents,
    put_entries,
    store_scanned,
    version_from_record,
    with_default_name,
    write_version,
)
from dvx.api.garbage import LEASES, Lease, LeaseRecord, decode_document, encode_document
from dvx.api.model import AddResult, CommitResult
from dvx.api.progress import ProgressFactory, no_progress
from dvx.api.repo import Repo
from dvx.errors import (
    ConflictError,
    IntegrityError,
    NotFoundError,
    PreconditionFailed,
    UsageError,
)
from dvx.manifests import (
    FileEntry,
    Manifest,
    compress_manifest,
    decode_manifest,
    encode_manifest,
    folders_of,
    matches_glob,
    scan,
    validate_path,
)
from dvx.refs import VersionRecord, check_name, check_tag, now_iso

FORMAT_VERSION = 1
DRAFTS = "drafts"
# A commit whose committer has not finished after this long (or whose process on this machine is
# gone) may be taken over by another `commit` of the same draft.
COMMIT_STALE_AFTER = 15 * 60.0
# How long a second `commit` waits for a running one to record its version before giving up.
DEFAULT_COMMIT_WAIT = 60.0
_CAS_ATTEMPTS = 50
_ID = re.compile(r"[0-9a-f]{32}")

CLOSING, COMMITTED, DISCARDED = "closing", "committed", "discarded"


# -- documents --------------------------------------------------------------------------------------------
class DraftHeader(msgspec.Struct, kw_only=True):
    """drafts/<id>/draft.json: what the new version starts from."""

    format_version: int = FORMAT_VERSION
    id: str
    kind: str = "dataset"
    name: str
    parents: list[str] = []  # manifest ids
    parent_refs: list[str] = []  # the same as NAME@vN
    message: str = ""
    created: str
    author: str


class Committer(msgspec.Struct, kw_only=True):
    """The one commit call allowed to write the version (until it is stale)."""

    token: str
    by: str
    host: str
    pid: int
    at: float  # seconds since the epoch


class CommitRecord(msgspec.Struct, kw_only=True):
    """drafts/<id>/commit.json: absent while the draft is open."""

    format_version: int = FORMAT_VERSION
    draft: str
    state: str  # closing | committed | discarded
    by: str
    started: float
    parts: list[str] | None = None  # frozen once: the parts the version is made of
    # The manifest's fields, fixed once, so that every committer builds the same manifest, and the
    # xxh3-128 of that manifest's flat canonical document (encode_manifest): what each one must rebuild.
    created: str = ""
    author: str = ""
    message: str = ""
    fingerprint: str = ""
    floor: int = 0  # the highest version number of NAME before this commit allocated one
    committer: Committer | None = None
    version: int = 0
    ref: str = ""


@dataclass
class Part:
    """One worker's contribution: files added, or parent paths removed."""

    id: str
    author: str
    created: str
    lease: str = ""
    removed: list[str] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"id": self.id, "author": self.author, "created": self.created, "files": len(self.files),
                "bytes": sum(f.size for f in self.files), "removed": len(self.removed)}


def _encode_part(kind: str, name: str, part: Part, draft_id: str) -> tuple[str, bytes]:
    """(part id, stored bytes). A part is a manifest document (its id is the document's hash, checked
    on read); kept behind this function so the part encoding can change with the manifest format."""
    manifest = Manifest(kind=kind, name=name, parents=[], created=part.created, author=part.author,
                        metadata={"shared_draft": draft_id, "lease": part.lease, "removed": part.removed,
                                  "nonce": uuid.uuid4().hex},
                        files=part.files)
    part_id, data = encode_manifest(manifest)
    return part_id, compress_manifest(data)


def _decode_part(part_id: str, stored: bytes) -> Part:
    manifest = decode_manifest(stored, part_id)
    meta = manifest.metadata
    removed = meta.get("removed", [])
    if not isinstance(removed, list) or not all(isinstance(p, str) for p in removed):
        raise IntegrityError(f"part {part_id} of a shared draft is damaged (its removals are not paths)")
    return Part(id=part_id, author=manifest.author, created=manifest.created, lease=str(meta.get("lease", "")),
                removed=[validate_path(p) for p in removed], files=manifest.files)


def _decode(data: bytes, kind, what: str):
    return decode_document(data, kind, what, FORMAT_VERSION, remedy=None)


# -- the draft --------------------------------------------------------------------------------------------
class SharedDraft:
    """A draft of the next version of a dataset (or model) that lives in the store: any process that
    can reach the store opens it by id and adds a part; one `commit` makes the version."""

    def __init__(self, repo: Repo, header: DraftHeader):
        self.repo = repo
        self.header = header

    @property
    def id(self) -> str:
        return self.header.id

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def kind(self) -> str:
        return self.header.kind

    def _key(self, rest: str) -> str:
        return f"{DRAFTS}/{self.id}/{rest}"

    # -- lifecycle ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, parents: Sequence[str] | None = None, message: str = "", *,
               store: str | None = None, repo: Repo | None = None, kind: str = "dataset") -> SharedDraft:
        """Open a shared draft of `name`; give `draft.id` to the workers. Parents default to the name's
        latest version (none for a new name); give several to merge (on a path, the first wins)."""
        repo = repo or Repo(store=store)
        check_name(name)
        refs = repo.refs(kind)
        if parents is None:
            latest = refs.latest(name) if repo.chunk_store_exists() else None
            records = [latest] if latest else []
        else:
            records = [repo.resolve(with_default_name(p, name), kind) for p in parents]
        repo.chunk_store(create=True)
        header = DraftHeader(id=uuid.uuid4().hex, kind=kind, name=name, parents=[r.manifest for r in records],
                             parent_refs=[r.ref for r in records], message=message, created=now_iso(),
                             author=repo.settings.author)
        repo.store.put_create(f"{DRAFTS}/{header.id}/draft.json", encode_document(header))
        return cls(repo, header)

    @classmethod
    def open(cls, draft_id: str, *, store: str | None = None, repo: Repo | None = None) -> SharedDraft:
        """The shared draft `draft_id` (as printed by `create`), on any machine that reaches the store."""
        draft_id = str(draft_id).strip().lower()
        if not _ID.fullmatch(draft_id):
            raise UsageError(f"invalid shared draft id {draft_id!r}: it is the 32 hex digits "
                             "`dvx dataset create NAME --shared` printed")
        repo = repo or Repo(store=store)
        key = f"{DRAFTS}/{draft_id}/draft.json"
        try:
            data = repo.store.read(key)
        except NotFoundError:
            raise NotFoundError(f"no shared draft {draft_id} in store {repo.settings.store_url}; "
                                "check the id and the --store") from None
        header = _decode(data, DraftHeader, f"shared draft {key}")
        if header.id != draft_id:
            raise IntegrityError(f"shared draft {key} names another id ({header.id})")
        return cls(repo, header)

    def close(self) -> None:
        """Release local handles (the stat cache); the draft itself stays in the store."""
        self.repo.close()

    def __enter__(self) -> SharedDraft:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- commit.json ----------------------------------------------------------------------------------
    def _read_record(self) -> tuple[CommitRecord | None, str | None]:
        data, token = self.repo.store.read_versioned(self._key("commit.json"))
        if data is None:
            return None, None
        return _decode(data, CommitRecord, f"shared draft record {self._key('commit.json')}"), token

    def _write_record(self, record: CommitRecord, token: str | None) -> str:
        return self.repo.store.put_if(self._key("commit.json"), encode_document(record), token)

    def _ended(self, record: CommitRecord) -> str:
        """Why the draft takes no more parts (for error messages)."""
        if record.state == COMMITTED:
            return f"shared draft {self.id} was committed as {record.ref}"
        if record.state == DISCARDED:
            return f"shared draft {self.id} of {self.name} was discarded"
        return f"shared draft {self.id} of {self.name} is being committed"

    def _freeze(self) -> tuple[CommitRecord | None, str | None]:
        """Once the draft is closing, fix which parts it is made of (the parts listed now: every part
        written before the listing). Anyone may do it: the first compare-and-swap wins."""
        for _ in range(_CAS_ATTEMPTS):
            record, token = self._read_record()
            if record is None or record.state != CLOSING or record.parts is not None:
                return record, token
            record.parts = self._part_ids()
            try:
                token = self._write_record(record, token)
            except PreconditionFailed:
                continue
            return record, token
        raise ConflictError(f"{self._key('commit.json')} keeps changing under concurrent writers; try again")

    # -- parts ------------------------------------------------------------------------------------------
    def _part_ids(self) -> list[str]:
        names = self.repo.store.list(self._key("parts"))
        return sorted(n.removesuffix(".json.zst") for n in names
                      if n.endswith(".json.zst") and _ID.fullmatch(n.removesuffix(".json.zst")))

    def _read_part(self, part_id: str) -> Part:
        key = self._key(f"parts/{part_id}.json.zst")
        try:
            return _decode_part(part_id, self.repo.store.read(key))
        except NotFoundError:
            raise NotFoundError(f"part {part_id} of shared draft {self.id} is missing from the store") from None

    def parts(self) -> list[Part]:
        """The parts added so far (after a commit: none; they are deleted once the version exists)."""
        return [self._read_part(p) for p in self._part_ids()]

    def _check_open(self) -> None:
        record, _ = self._read_record()
        if record is not None:
            raise ConflictError(f"{self._ended(record)}; it takes no more parts: create a new shared draft "
                                f"(`dvx {self.kind} create {self.name} --shared`)")

    def _lease(self, lease_id: str) -> Lease:
        return Lease(self.repo.store, lease_id, purpose="draft", kind=self.kind, name=self.name,
                     by=f"{self.repo.settings.author} (shared draft {self.id})")

    def _publish(self, part: Part, lease: Lease) -> str:
        """Write the part, then make sure it counts: if the draft closed meanwhile and its frozen parts
        leave this one out, take it back and fail (the files are not in the version)."""
        part_id, data = _encode_part(self.kind, self.name, part, self.id)
        key = self._key(f"parts/{part_id}.json.zst")
        self.repo.store.put_create(key, data)
        record, _ = self._freeze()
        if record is None or (record.state != DISCARDED and part_id in (record.parts or ())):
            return part_id
        self.repo.store.delete(key)
        lease.release()
        raise ConflictError(f"{self._ended(record)} without this part; its files are not in any version: "
                            f"add them to a new shared draft")

    def add(self, *paths: str | os.PathLike[str], to: str = "", exclude: Iterable[str] = (),
            progress: ProgressFactory = no_progress) -> AddResult:
        """Store the files under `paths` (a folder's contents go under `to`) and add them to the draft as
        one part. Parts must not overlap: a path added by two parts fails the commit. A part's file
        replaces a parent's file at the same path."""
        if not paths:
            raise UsageError("nothing to add: give at least one file or folder")
        to = to.strip("/")
        if to:
            validate_path(to)
        self._check_open()
        started = time.time()
        scanned = {}
        for path in paths:
            for item in scan(path, to=to, exclude=exclude, skip=self.repo.settings.never_swept()):
                scanned[item.path] = item
        lease = self._lease(uuid.uuid4().hex)
        entries, result = store_scanned(self.repo, list(scanned.values()), {}, progress, started, lease=lease)
        part = Part(id="", author=self.repo.settings.author, created=now_iso(), lease=lease.id, files=entries)
        self._publish(part, lease)
        return result

    def remove(self, *patterns: str) -> list[str]:
        """Remove the parents' files matching the globs (relative to the dataset root; a folder name
        removes its files), recorded as a part. Removals apply to the parents' files only: a file that a
        part adds is kept, whatever the order of the workers."""
        if not patterns:
            raise UsageError("nothing to remove: give at least one path or glob")
        self._check_open()
        base = self._base_files()
        removed = sorted(p for p in base if any(_matches(p, pattern) for pattern in patterns))
        if not removed:
            refs = ", ".join(self.header.parent_refs) or "no parent"
            raise NotFoundError(f"no file of {refs} matches {' '.join(patterns)}")
        part = Part(id="", author=self.repo.settings.author, created=now_iso(), removed=removed)
        self._publish(part, self._lease(uuid.uuid4().hex))
        return removed

    # -- merging ------------------------------------------------------------------------------------------
    def _base_files(self) -> dict[str, FileEntry]:
        manifests = []
        for index, parent in enumerate(self.header.parents):
            try:
                manifests.append(self.repo.read_manifest(parent))
            except NotFoundError:
                ref = self.header.parent_refs[index] if index < len(self.header.parent_refs) else parent
                raise NotFoundError(f"shared draft {self.id} starts from {ref}, which was deleted and its data "
                                    "collected; discard the draft and create it again") from None
        return merge_parents(manifests)

    def _merge(self, base: dict[str, FileEntry], parts: list[Part]) -> dict[str, FileEntry]:
        """The version's files: the parents' files less the removals, plus every part's files. Raises
        ConflictError naming the paths that two parts add (or where one adds a file and another a folder)."""
        owners: dict[str, list[Part]] = {}
        for part in parts:
            for entry in part.files:
                owners.setdefault(entry.path, []).append(part)
        clashes = {path: who for path, who in owners.items() if len(who) > 1}
        added = sorted(owners)
        for folder in folders_of(added) & set(owners):
            inside = added[bisect.bisect_right(added, folder + "/")]
            clashes[f"{folder} (a file) and {inside}"] = owners[folder] + owners[inside]
        if clashes:
            raise ConflictError(self._overlap_message(clashes))
        files = dict(base)
        for part in parts:
            for path in part.removed:
                files.pop(path, None)
        put_entries(files, [entry for part in parts for entry in part.files])
        return files

    def _overlap_message(self, clashes: dict[str, list[Part]]) -> str:
        def who(parts: list[Part]) -> str:
            return ", ".join(f"part {p.id[:8]} by {p.author}" for p in parts)

        shown = "; ".join(f"{path} ({who(parts)})" for path, parts in sorted(clashes.items())[:5])
        more = f"; and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        return (f"cannot commit shared draft {self.id} of {self.name}: {len(clashes)} path(s) are added by more "
                f"than one part: {shown}{more}. Nothing was written; discard the draft "
                f"(`dvx {self.kind} discard --draft {self.id}`) and add disjoint folders (--to puts each under "
                f"its own folder)")

    # -- commit ---------------------------------------------------------------------------------------------
    def commit(self, message: str | None = None, tags: Sequence[str] = (), *, force_tags: bool = False,
               wait: float = DEFAULT_COMMIT_WAIT) -> CommitResult:
        """Merge the parents' files and every part into one new version NAME@vN.

        Overlapping parts fail with ConflictError before anything is written. A draft already committed
        (by this or another process) fails with ConflictError naming its version; a commit running
        elsewhere is waited for up to `wait` seconds. Re-running a commit that crashed finishes it
        without making a second version."""
        for tag in tags:
            check_tag(tag)
        record, _ = self._read_record()
        if record is None:
            parts = self.parts()  # fail on overlaps while the draft is still open
            self._check_not_empty(parts)
            self._merge(self._base_files(), parts)
            self._check_tags(None, tags, force_tags)
            closing = CommitRecord(draft=self.id, state=CLOSING, by=self.repo.settings.author, started=time.time())
            self.repo.store.put_create(self._key("commit.json"), encode_document(closing))
        record, token = self._freeze()
        if record is None:
            raise ConflictError(f"shared draft {self.id} was reopened by a failed commit meanwhile; commit again")
        if record.state != CLOSING:
            self._clean_up(record)
            raise ConflictError(f"{self._ended(record)}; nothing more to commit")
        parts = [self._read_part(p) for p in record.parts or ()]
        base = self._base_files()
        try:
            self._check_not_empty(parts)
            files = self._merge(base, parts)
        except (ConflictError, UsageError):
            self.repo.store.delete(self._key("commit.json"))  # reopen: the parts stay, nothing else changed
            raise
        record, token = self._fix_manifest(record, token, message, files)
        manifest = self._manifest(record, files)
        if encode_manifest(manifest)[0] != record.fingerprint:
            raise IntegrityError(f"shared draft {self.id}: its parts no longer give the manifest its commit "
                                 f"started with; a part was changed or lost")
        return self._write_version(manifest, base, tags, force_tags, wait)

    def _manifest(self, record: CommitRecord, files: dict[str, FileEntry]) -> Manifest:
        """The new version's manifest: its metadata names the shared draft it was made from."""
        return Manifest(kind=self.kind, name=self.name, parents=list(self.header.parents), created=record.created,
                        author=record.author, message=record.message, metadata={"shared_draft": self.id},
                        files=list(files.values()))

    def _check_not_empty(self, parts: list[Part]) -> None:
        if not parts:
            raise UsageError(f"shared draft {self.id} of {self.name} has no parts; add files first "
                             f"(`dvx {self.kind} add PATH --draft {self.id}`)")

    def _fix_manifest(self, record: CommitRecord, token: str | None, message: str | None,
                      files: dict[str, FileEntry]) -> tuple[CommitRecord, str | None]:
        """Fix the manifest's time, author and message (and the version floor) once, so that every
        committer of this draft builds the same manifest from the frozen parts' `files`."""
        for _ in range(_CAS_ATTEMPTS):
            if record.fingerprint:
                return record, token
            numbers = self.repo.refs(self.kind).all_version_numbers(self.name)
            record.created, record.author = now_iso(), self.repo.settings.author
            record.message = message if message is not None else self.header.message
            record.floor = numbers[-1] if numbers else 0
            record.fingerprint, _ = encode_manifest(self._manifest(record, files))
            try:
                token = self._write_record(record, token)
                return record, token
            except PreconditionFailed:
                record, token = self._read_record()
                if record is None or record.state != CLOSING:
                    raise ConflictError(f"shared draft {self.id} changed while committing; commit again") from None
        raise ConflictError(f"{self._key('commit.json')} keeps changing under concurrent writers; try again")

    def _write_version(self, manifest: Manifest, base: dict[str, FileEntry], tags: Sequence[str],
                       force_tags: bool, wait: float) -> CommitResult:
        record, token = self._become_committer(wait)
        me = record.committer
        refs = self.repo.refs(self.kind)
        lease = Lease.new(self.repo.store, purpose="draft", kind=self.kind, name=self.name,
                          by=f"{self.repo.settings.author} (shared draft {self.id})")
        try:
            version = self._find_version(record)
            if version is None:
                self._check_tags(None, tags, force_tags)
                version = write_version(self.repo, manifest, base, self.header.parent_refs, lease=lease)
            for tag in tags:
                refs.set_tag(self.name, tag, version, by=self.repo.settings.author, force=force_tags)
            record = self._record_version(version, me)
        except BaseException:
            self._step_down(me)
            lease.release()
            raise
        lease.release()
        self._clean_up(record)
        tag_names = [t for t, r in refs.tags(self.name).items() if r.version == version.version]
        return CommitResult(version_from_record(version, tag_names, self.kind), created=True,
                            stored_bytes=version.new_bytes or 0)

    def _become_committer(self, wait: float) -> tuple[CommitRecord, str | None]:
        """Take the commit by compare-and-swap; while another live commit holds it, wait (up to `wait`
        seconds) for it to finish, then fail naming its version."""
        me = Committer(token=uuid.uuid4().hex, by=self.repo.settings.author, host=socket.gethostname(),
                       pid=os.getpid(), at=time.time())
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            record, token = self._read_record()
            if record is None or record.state != CLOSING:
                raise ConflictError(f"{self._ended(record)} by another commit" if record else
                                    f"shared draft {self.id} was reopened meanwhile; commit again")
            holder = record.committer
            if holder is None or _stale(holder):
                record.committer = me
                try:
                    return record, self._write_record(record, token)
                except PreconditionFailed:
                    continue
            if time.monotonic() > deadline:
                raise ConflictError(
                    f"shared draft {self.id} is being committed by {holder.by} (process {holder.pid} on "
                    f"{holder.host}) since {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(holder.at))} UTC; "
                    f"wait for it, or if it died, commit again after {COMMIT_STALE_AFTER / 60:g} minutes")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _record_version(self, version: VersionRecord, me: Committer) -> CommitRecord:
        """Write the version into commit.json. The first commit to record one wins; one that finds another
        version recorded (a stale commit that resumed late) deletes its own duplicate."""
        for _ in range(_CAS_ATTEMPTS):
            record, token = self._read_record()
            if record is not None and record.state == COMMITTED:
                if record.version != version.version:
                    self.repo.refs(self.kind).delete_version(
                        self.name, version.version, by=self.repo.settings.author,
                        message=f"duplicate of {record.ref} (shared draft {self.id})")
                    raise ConflictError(f"{self._ended(record)} by another commit")
                return record
            if record is None or record.state != CLOSING:
                raise ConflictError(f"shared draft {self.id} was discarded while committing; {version.ref} was "
                                    "made from it")
            record.state, record.version, record.ref = COMMITTED, version.version, version.ref
            try:
                self._write_record(record, token)
                return record
            except PreconditionFailed:
                continue
        raise ConflictError(f"{self._key('commit.json')} keeps changing under concurrent writers; try again")

    def _find_version(self, record: CommitRecord) -> VersionRecord | None:
        """The version this commit already made (a commit that died after allocating it), if any: above
        the floor, with the commit's fixed fields, made from this draft."""
        refs = self.repo.refs(self.kind)
        for number in refs.all_version_numbers(self.name):
            if number <= record.floor:
                continue
            try:
                version = refs.get_record(self.name, number)
            except NotFoundError:
                continue
            if isinstance(version, VersionRecord) and (version.created, version.author, version.message,
                                                       version.parents) == (
                    record.created, record.author, record.message, self.header.parents) \
                    and self.repo.manifest_root(version.manifest).metadata.get("shared_draft") == self.id:
                return version
        return None

    def _step_down(self, me: Committer) -> None:
        """After a failed commit, let the next one take over at once."""
        try:
            record, token = self._read_record()
            if record is not None and record.state == CLOSING and record.committer == me:
                record.committer = None
                self._write_record(record, token)
        except Exception:  # best effort: a stale committer is taken over anyway
            pass

    def _check_tags(self, version: VersionRecord | None, tags: Sequence[str], force: bool) -> None:
        check_tags_free(self.repo, self.kind, self.name, version, tags, force)

    # -- ending -------------------------------------------------------------------------------------------
    def discard(self) -> None:
        """Throw the draft away: its parts are deleted and their leases released (the uploaded data
        becomes garbage for `dvx gc`). A committed draft cannot be discarded."""
        for _ in range(_CAS_ATTEMPTS):
            record, token = self._read_record()
            if record is not None and record.state == COMMITTED:
                raise ConflictError(f"{self._ended(record)}; there is nothing to discard")
            if record is not None and record.state == CLOSING and record.committer is not None \
                    and not _stale(record.committer):
                raise ConflictError(f"{self._ended(record)}; it cannot be discarded now")
            if record is not None and record.state == DISCARDED:
                break
            ended = CommitRecord(draft=self.id, state=DISCARDED, by=self.repo.settings.author, started=time.time())
            try:
                self._write_record(ended, token)
                record = ended
                break
            except PreconditionFailed:
                continue
        else:
            raise ConflictError(f"{self._key('commit.json')} keeps changing under concurrent writers; try again")
        self._clean_up(record)

    def _clean_up(self, record: CommitRecord) -> None:
        """Once committed or discarded: release every lease of the draft (its parts', its commits' and
        those of adds that never wrote their part: all name the draft), then delete the parts.
        draft.json and commit.json stay, so that late workers and commits get a clear answer."""
        if record.state == CLOSING:
            return
        store = self.repo.store
        marker = f"(shared draft {self.id})"
        for name in store.list(LEASES):
            try:
                lease = msgspec.json.decode(store.read(f"{LEASES}/{name}"), type=LeaseRecord)
            except (NotFoundError, msgspec.DecodeError):
                continue
            if lease.by.endswith(marker) and _ID.fullmatch(lease.id):
                self._lease(lease.id).release()
        for part_id in self._part_ids():
            store.delete(self._key(f"parts/{part_id}.json.zst"))

    def status(self) -> dict:
        """The draft as stored: header, state (open, closing, committed, discarded), version, parts."""
        record, _ = self._read_record()
        parts = self.parts()
        return {"id": self.id, "name": self.name, "kind": self.kind, "parents": list(self.header.parent_refs),
                "message": self.header.message, "created": self.header.created, "author": self.header.author,
                "state": record.state if record else "open", "version": record.ref if record else None,
                "parts": [p.to_dict() for p in parts]}


# -- helpers ---------------------------------------------------------------------------------------------------
def _stale(holder: Committer) -> bool:
    """A committer that died on this machine, or that has held the commit for too long."""
    if time.time() - holder.at > COMMIT_STALE_AFTER:
        return True
    if holder.host != socket.gethostname():
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    return False


def _matches(path: str, pattern: str) -> bool:
    pattern = pattern.strip("/")
    return matches_glob(path, pattern) or matches_glob(path, pattern + "/*")
