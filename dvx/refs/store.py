"""Refs on the store: numbered versions (allocated by create-only writes), movable pointers (dataset
tags, model aliases) and per-version annotations (moved / updated by CAS, keeping their history).

    refs/<kind>/<quoted name>/versions/<n, 10 digits>.json      create-only, one per version; replaced
                                                                 once by a tombstone (CAS) when deleted
    refs/<kind>/<quoted name>/versions/<n>.deleted.json          create-only marker: vN was deleted
    refs/datasets/<quoted name>/tags/<tag>.json                  compare-and-swap, keeps its history
    refs/models/<quoted name>/aliases/<alias>.json               the same, for models
    refs/<kind>/<quoted name>/annotations/<n, 10 digits>.json   compare-and-swap: tags, metrics, params, metadata

Every write here that changes what listings show is wrapped in `self.catalog.updating(name)`, which
keeps the derived name catalog (dvx/refs/catalog.py, under refs/catalog/) in step.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import msgspec

from dvx.errors import (
    ConflictError,
    IntegrityError,
    NotFoundError,
    PreconditionFailed,
    UsageError,
)
from dvx.fs import Store
from dvx.refs.names import ID_PREFIX_RE, Ref, check_name, check_tag

if TYPE_CHECKING:
    from dvx.refs.catalog import Catalog

FORMAT_VERSION = 1
_CAS_ATTEMPTS = 50
KIND_FOLDERS = {"dataset": "datasets", "model": "models"}
# What a movable name pointing at one version is called, per kind (and its folder).
POINTER_WORDS = {"dataset": "tag", "model": "alias"}
_POINTER_FOLDERS = {"dataset": "tags", "model": "aliases"}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class VersionRecord(msgspec.Struct, kw_only=True):
    format_version: int = FORMAT_VERSION
    name: str
    version: int
    manifest: str
    created: str
    author: str
    message: str = ""
    files: int = 0
    bytes: int = 0
    parents: list[str] = []
    parent_refs: list[str] = []
    # Lineage beyond parents: manifest ids of the versions this one was made from (a model's training
    # datasets), with their refs as written at the time.
    inputs: list[str] = []
    input_refs: list[str] = []
    # Stored (compressed) bytes of chunks that none of the parents has: what this version added.
    new_bytes: int | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"


class Deletion(msgspec.Struct, kw_only=True, omit_defaults=True):
    at: str
    by: str
    message: str = ""


class DeletedVersion(msgspec.Struct, kw_only=True):
    """What a version record becomes when its version is deleted (a tombstone): the number stays
    taken, so it is never given to another version, and readers can say "was deleted"."""

    format_version: int = FORMAT_VERSION
    name: str
    version: int
    deleted: Deletion
    deleted_manifest: str  # the id the version had

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"


class _DeletedProbe(msgspec.Struct):
    deleted: Any = None


class VersionDeletedError(NotFoundError):
    """A reference names a version that was deleted (exit code 3, like any missing version)."""

    def __init__(self, tombstone: DeletedVersion, via: str | None = None, what: str | None = None,
                 hint: str = ""):
        self.tombstone = tombstone
        note = f": {tombstone.deleted.message}" if tombstone.deleted.message else ""
        what = what or (f"{via} points at {tombstone.ref}, which" if via else tombstone.ref)
        super().__init__(f"{what} was deleted (by {tombstone.deleted.by} at {tombstone.deleted.at}{note})"
                         + (f"; {hint}" if hint else ""))


class TagEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    at: str
    by: str
    action: str  # set | move | delete
    to_version: int | None = None
    from_version: int | None = None
    message: str = ""


class TagRecord(msgspec.Struct, kw_only=True):
    format_version: int = FORMAT_VERSION
    tag: str
    version: int | None  # None once deleted (history is kept)
    manifest: str | None
    history: list[TagEvent] = []
    protected: bool = False  # moving or deleting it needs force


class AnnotationEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    at: str
    by: str
    changes: dict[str, Any]  # {"metrics": {...}, "tags_added": [...], ...}: what this update did


class Annotations(msgspec.Struct, kw_only=True):
    """What may change about a version without changing its content id."""

    format_version: int = FORMAT_VERSION
    tags: list[str] = []
    metrics: dict[str, float] = {}
    params: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    history: list[AnnotationEvent] = []


class Refs:
    """Versions and tags of one kind ("dataset" or "model") in a store."""

    def __init__(self, store: Store, kind: str = "dataset"):
        self.store = store
        self.kind = kind
        self._root = f"refs/{KIND_FOLDERS[kind]}"
        self.pointer_word = POINTER_WORDS[kind]
        self._pointers = _POINTER_FOLDERS[kind]

    @cached_property
    def catalog(self) -> Catalog:
        """The name catalog of this kind (derived from these refs, updated after each write here)."""
        from dvx.refs.catalog import Catalog

        return Catalog(self)

    def _name_dir(self, name: str) -> str:
        return f"{self._root}/{quote(check_name(name), safe='')}"

    def _version_key(self, name: str, number: int) -> str:
        return f"{self._name_dir(name)}/versions/{number:010d}.json"

    def _tag_key(self, name: str, tag: str) -> str:
        return f"{self._name_dir(name)}/{self._pointers}/{tag}.json"

    def _annotations_key(self, name: str, number: int) -> str:
        return f"{self._name_dir(name)}/annotations/{number:010d}.json"

    # -- versions ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(unquote(n) for n in self.store.list(self._root))

    def _listing(self, name: str) -> tuple[list[int], set[int]]:
        """(every version number ever allocated, the numbers marked deleted), from one listing."""
        numbers, deleted = [], set()
        for entry in self.store.list(f"{self._name_dir(name)}/versions"):
            stem = entry.removesuffix(".json")
            if not entry.endswith(".json"):
                continue
            if stem.isdigit():
                numbers.append(int(stem))
            elif stem.endswith(".deleted") and stem[:-8].isdigit():
                deleted.add(int(stem[:-8]))
        return sorted(numbers), deleted

    def version_numbers(self, name: str) -> list[int]:
        """Numbers of the versions that exist (deleted ones left out), ascending."""
        numbers, deleted = self._listing(name)
        return [n for n in numbers if n not in deleted]

    def all_version_numbers(self, name: str) -> list[int]:
        """Every number ever given out, deleted versions included (never given out again)."""
        return self._listing(name)[0]

    def deleted_numbers(self, name: str) -> list[int]:
        return sorted(self._listing(name)[1])

    def get_record(self, name: str, number: int) -> VersionRecord | DeletedVersion:
        """The record of name@vN as stored: a VersionRecord, or the tombstone of a deleted version."""
        try:
            data = self.store.read(self._version_key(name, number))
        except NotFoundError:
            raise NotFoundError(f"{name}@v{number} does not exist (see `dvx {self.kind} log {name}`)") from None
        return self._decode_record(name, number, data)

    def _decode_record(self, name: str, number: int, data: bytes) -> VersionRecord | DeletedVersion:
        try:
            if msgspec.json.decode(data, type=_DeletedProbe).deleted is not None:
                return msgspec.json.decode(data, type=DeletedVersion)
            return msgspec.json.decode(data, type=VersionRecord)
        except msgspec.DecodeError as exc:
            raise IntegrityError(f"the version record of {name}@v{number} is damaged ({exc})") from None

    def get_version(self, name: str, number: int) -> VersionRecord:
        """name@vN; VersionDeletedError (a NotFoundError) when it was deleted."""
        record = self.get_record(name, number)
        if isinstance(record, DeletedVersion):
            raise VersionDeletedError(record)
        return record

    def versions(self, name: str) -> list[VersionRecord]:
        """The live versions of `name`, oldest first: one listing, then every record (read in parallel,
        as a long lineage on a cloud store would otherwise wait for each request in turn)."""
        numbers = self.version_numbers(name)
        records = _parallel(lambda number: self.get_record(name, number), numbers)
        # A tombstone whose marker a crash left unwritten is left out.
        return [r for r in records if isinstance(r, VersionRecord)]

    def latest(self, name: str) -> VersionRecord | None:
        for number in reversed(self.version_numbers(name)):
            record = self.get_record(name, number)
            if isinstance(record, VersionRecord):
                return record
        return None

    def allocate(self, record: VersionRecord) -> VersionRecord:
        """Give `record` the next free version number: create-only, so racing writers get N and N+1.
        Numbers of deleted versions stay taken."""
        numbers = self.all_version_numbers(record.name)
        number = numbers[-1] + 1 if numbers else 1
        with self.catalog.updating(record.name) as about_to_write:
            about_to_write()
            while True:
                record.version = number
                data = msgspec.json.encode(record, order="sorted")
                # A create whose response was lost and was retried by the SDK finds its own record there.
                if self.store.put_create(self._version_key(record.name, number), data) or \
                        self.version_bytes(record.name, number) == data:
                    return record
                number += 1

    def version_bytes(self, name: str, number: int) -> bytes | None:
        """The stored record of name@vN exactly as written (copies keep it byte for byte)."""
        try:
            return self.store.read(self._version_key(name, number))
        except NotFoundError:
            return None

    def import_version(self, name: str, number: int, data: bytes) -> bool:
        """Place a version record copied from another store under the same number. True if written,
        False if the identical record was already here; ConflictError if name@vN here is another version."""
        record = msgspec.json.decode(data, type=VersionRecord)
        if (record.name, record.version) != (name, number):
            raise ConflictError(f"version record for {name}@v{number} names {record.ref} instead")
        with self.catalog.updating(name) as about_to_write:
            about_to_write()
            if self.store.put_create(self._version_key(name, number), data):
                return True
        if self.version_bytes(name, number) == data:
            return False
        raise ConflictError(f"{name}@v{number} already exists in {self.store.url} and is a different version "
                            f"(the two stores' histories of {name!r} have diverged)")

    def delete_version(self, name: str, number: int, *, by: str, message: str = "") -> DeletedVersion:
        """Replace name@vN's record by a tombstone (compare-and-swap), then write its `.deleted` marker
        (which lets listings skip it without reading it). Idempotent: deleting a deleted version again
        completes a marker a crash left unwritten and returns the existing tombstone."""
        with self.catalog.updating(name) as about_to_write:
            return self._delete_version(name, number, by, message, about_to_write)

    def _delete_version(self, name: str, number: int, by: str, message: str,
                        about_to_write: Callable[[], None]) -> DeletedVersion:
        key = self._version_key(name, number)
        for _ in range(_CAS_ATTEMPTS):
            data, token = self.store.read_versioned(key)
            if data is None:
                raise NotFoundError(f"{name}@v{number} does not exist (see `dvx {self.kind} log {name}`)")
            record = self._decode_record(name, number, data)
            if isinstance(record, DeletedVersion):
                tombstone = record
                break
            tombstone = DeletedVersion(name=name, version=number, deleted_manifest=record.manifest,
                                       deleted=Deletion(at=now_iso(), by=by, message=message))
            about_to_write()
            try:
                self.store.put_if(key, msgspec.json.encode(tombstone, order="sorted"), token)
                break
            except PreconditionFailed:
                continue
        else:
            raise ConflictError(f"{name}@v{number} keeps changing under concurrent writers; try again")
        marker = {"format_version": FORMAT_VERSION, "name": name, "version": number, "at": tombstone.deleted.at,
                  "by": tombstone.deleted.by}
        about_to_write()
        self.store.put_create(self._deleted_key(name, number), msgspec.json.encode(marker, order="sorted"))
        return tombstone

    def _deleted_key(self, name: str, number: int) -> str:
        return f"{self._name_dir(name)}/versions/{number:010d}.deleted.json"

    def tombstones(self, name: str) -> list[DeletedVersion]:
        """The deleted versions of `name` (those whose marker was written), oldest first."""
        out = []
        for number in self.deleted_numbers(name):
            try:
                record = self.get_record(name, number)
            except NotFoundError:
                continue
            if isinstance(record, DeletedVersion):
                out.append(record)
        return out

    # -- tags ----------------------------------------------------------------------------------
    def tag_names(self, name: str) -> list[str]:
        return sorted(t.removesuffix(".json") for t in self.store.list(f"{self._name_dir(name)}/{self._pointers}")
                      if t.endswith(".json"))

    def get_tag(self, name: str, tag: str) -> TagRecord | None:
        data, _ = self.store.read_versioned(self._tag_key(name, check_tag(tag)))
        return None if data is None else msgspec.json.decode(data, type=TagRecord)

    def tags(self, name: str) -> dict[str, TagRecord]:
        """The live tags (aliases) of `name`: one listing, then every tag record (read in parallel)."""
        names = self.tag_names(name)
        records = _parallel(lambda tag: self.get_tag(name, tag), names)
        return {tag: r for tag, r in zip(names, records) if r is not None and r.version is not None}

    def set_tag(self, name: str, tag: str, target: VersionRecord | None, *, by: str, force: bool = False,
                message: str = "", move: bool = False, protect: bool | None = None,
                expected: int | None = None) -> TagRecord:
        """Point `tag` at `target` (None deletes it) by compare-and-swap, appending to its history.

        Moving a tag that points elsewhere needs `force`, unless `move` (model aliases move by design);
        a protected one always needs `force`. `protect` sets or clears the protection. With `expected`,
        the tag changes only while it still points at that version number (else it is returned as is)."""
        check_tag(tag)
        with self.catalog.updating(name) as about_to_write:
            return self._set_tag(name, tag, target, by=by, force=force, message=message, move=move,
                                 protect=protect, expected=expected, about_to_write=about_to_write)

    def _set_tag(self, name: str, tag: str, target: VersionRecord | None, *, by: str, force: bool,
                 message: str, move: bool, protect: bool | None, expected: int | None,
                 about_to_write: Callable[[], None]) -> TagRecord:
        word = self.pointer_word
        key = self._tag_key(name, tag)
        for _ in range(_CAS_ATTEMPTS):
            data, token = self.store.read_versioned(key)
            record = msgspec.json.decode(data, type=TagRecord) if data else TagRecord(tag=tag, version=None,
                                                                                      manifest=None)
            current = record.version
            if expected is not None and current != expected:
                return record
            if record.protected and not force and (target is None or current not in (None, target.version)):
                raise ConflictError(f"{word} {tag!r} of {name} is protected (at {name}@v{current}); "
                                    f"use --force to {'delete' if target is None else 'move'} it")
            if target is None:
                if current is None:
                    raise NotFoundError(f"{word} {tag!r} of {name} does not exist")
                event = TagEvent(at=now_iso(), by=by, action="delete", from_version=current, message=message)
                record.version, record.manifest = None, None
            else:
                if current == target.version and (protect is None or protect == record.protected):
                    return record
                if current not in (None, target.version) and not (force or move):
                    raise ConflictError(
                        f"{word} {tag!r} already points at {name}@v{current}; use --force to move it")
                action = "set" if current is None else ("move" if current != target.version else "protect")
                event = TagEvent(at=now_iso(), by=by, action=action, to_version=target.version,
                                 from_version=current, message=message)
                record.version, record.manifest = target.version, target.manifest
            if protect is not None and protect != record.protected:
                record.protected = protect
                if event.action == "protect" and not protect:
                    event.action = "unprotect"
            record.history.append(event)
            about_to_write()
            try:
                self.store.put_if(key, msgspec.json.encode(record, order="sorted"), token)
                return record
            except PreconditionFailed:
                continue
        raise ConflictError(f"{word} {tag!r} of {name} keeps changing under concurrent writers; try again")

    # -- annotations ---------------------------------------------------------------------------
    def get_annotations(self, name: str, number: int) -> Annotations:
        data, _ = self.store.read_versioned(self._annotations_key(name, number))
        return Annotations() if data is None else msgspec.json.decode(data, type=Annotations)

    def update_annotations(self, name: str, number: int, change: Callable[[Annotations], dict[str, Any]], *,
                           by: str) -> Annotations:
        """Apply `change` (which edits the record in place and returns a summary of what it did, {} for
        nothing) by compare-and-swap, retrying on concurrent updates; the summary joins the history."""
        self.get_version(name, number)  # the version must exist
        with self.catalog.updating(name) as about_to_write:
            return self._update_annotations(name, number, change, by,
                                            about_to_write if self.kind == "model" else lambda: None)

    def _update_annotations(self, name: str, number: int, change: Callable[[Annotations], dict[str, Any]],
                            by: str, about_to_write: Callable[[], None]) -> Annotations:
        key = self._annotations_key(name, number)
        for _ in range(_CAS_ATTEMPTS):
            data, token = self.store.read_versioned(key)
            record = Annotations() if data is None else msgspec.json.decode(data, type=Annotations)
            summary = change(record)
            if not summary:
                return record
            record.history.append(AnnotationEvent(at=now_iso(), by=by, changes=summary))
            about_to_write()  # listings show a model version's annotations (datasets' they don't)
            try:
                self.store.put_if(key, msgspec.json.encode(record, order="sorted"), token)
                return record
            except PreconditionFailed:
                continue
        raise ConflictError(f"annotations of {name}@v{number} keep changing under concurrent writers; try again")

    # -- resolution ----------------------------------------------------------------------------
    def resolve(self, ref: Ref) -> VersionRecord:
        """The version a reference means: vN, a tag, an id prefix, or (no selector) the latest.
        A deleted version is absent: VersionDeletedError (a NotFoundError) says it was deleted."""
        if ref.selector is None or ref.selector == "latest":
            record = self.latest(ref.name)
            if record is None:
                raise NotFoundError(self._missing_name_message(ref.name))
            return record
        number = ref.version_number
        if number is not None:
            try:
                return self.get_version(ref.name, number)  # one read; a listing only to explain a miss
            except VersionDeletedError:
                raise
            except NotFoundError:
                if not self.all_version_numbers(ref.name):
                    raise NotFoundError(self._missing_name_message(ref.name)) from None
                raise
        try:
            tag = self.get_tag(ref.name, ref.selector)
        except UsageError:
            tag = None
        if tag is not None and tag.version is not None:
            record = self.get_record(ref.name, tag.version)
            if isinstance(record, DeletedVersion):
                raise VersionDeletedError(record, via=str(ref))
            return record
        if ID_PREFIX_RE.fullmatch(ref.selector):
            matches = [r for r in self.versions(ref.name) if r.manifest.startswith(ref.selector)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise UsageError(f"version id prefix {ref.selector!r} of {ref.name} is ambiguous; give more digits")
            for tombstone in self.tombstones(ref.name):
                if tombstone.deleted_manifest.startswith(ref.selector):
                    raise VersionDeletedError(tombstone)
        if not self.all_version_numbers(ref.name):
            raise NotFoundError(self._missing_name_message(ref.name))
        raise NotFoundError(f"{ref} does not exist: no version, tag or version id {ref.selector!r} "
                            f"(see `dvx {self.kind} log {ref.name}`)")

    def _missing_name_message(self, name: str) -> str:
        if self.all_version_numbers(name):
            return f"every version of {self.kind} {name!r} was deleted (see `dvx {self.kind} list`)"
        return f"no {self.kind} named {name!r} in this store (see `dvx {self.kind} list`)"


_PARALLEL_READS = 16
_SERIAL_BELOW = 4  # fewer reads than this are not worth a thread pool


def _parallel(read: Callable[[Any], Any], items: list) -> list:
    """`[read(item) for item in items]`, the reads overlapping in a thread pool when there are several
    (store requests wait on the network; a local store's reads release the GIL too)."""
    if len(items) < _SERIAL_BELOW:
        return [read(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(min(_PARALLEL_READS, len(items)), thread_name_prefix="dvx-refs") as pool:
        return list(pool.map(read, items))
