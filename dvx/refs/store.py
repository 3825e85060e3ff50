"""Refs on the store: numbered versions (allocated by create-only writes), movable pointers (dataset
tags, model aliases) and per-version annotations (moved / updated by CAS, keeping their history).

    refs/<kind>/<quoted name>/versions/<n, 10 digits>.json      create-only, one per version
    refs/datasets/<quoted name>/tags/<tag>.json                  compare-and-swap, keeps its history
    refs/models/<quoted name>/aliases/<alias>.json               the same, for models
    refs/<kind>/<quoted name>/annotations/<n, 10 digits>.json   compare-and-swap: tags, metrics, params, metadata
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote

import msgspec

from dvx.errors import ConflictError, IntegrityError, NotFoundError, PreconditionFailed, UsageError
from dvx.fs import Store
from dvx.refs.names import ID_PREFIX_RE, Ref, check_name, check_tag

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

    def version_numbers(self, name: str) -> list[int]:
        numbers = []
        for entry in self.store.list(f"{self._name_dir(name)}/versions"):
            stem = entry.removesuffix(".json")
            if stem.isdigit() and entry.endswith(".json"):
                numbers.append(int(stem))
        return sorted(numbers)

    def get_version(self, name: str, number: int) -> VersionRecord:
        try:
            data = self.store.read(self._version_key(name, number))
        except NotFoundError:
            raise NotFoundError(f"{name}@v{number} does not exist (see `dvx {self.kind} log {name}`)") from None
        try:
            return msgspec.json.decode(data, type=VersionRecord)
        except msgspec.DecodeError as exc:
            raise IntegrityError(f"the version record of {name}@v{number} is damaged ({exc})") from None

    def versions(self, name: str) -> list[VersionRecord]:
        return [self.get_version(name, n) for n in self.version_numbers(name)]

    def latest(self, name: str) -> VersionRecord | None:
        numbers = self.version_numbers(name)
        return self.get_version(name, numbers[-1]) if numbers else None

    def allocate(self, record: VersionRecord) -> VersionRecord:
        """Give `record` the next free version number: create-only, so racing writers get N and N+1."""
        numbers = self.version_numbers(record.name)
        number = numbers[-1] + 1 if numbers else 1
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
        if self.store.put_create(self._version_key(name, number), data):
            return True
        if self.version_bytes(name, number) == data:
            return False
        raise ConflictError(f"{name}@v{number} already exists in {self.store.url} and is a different version "
                            f"(the two stores' histories of {name!r} have diverged)")

    # -- tags ----------------------------------------------------------------------------------
    def tag_names(self, name: str) -> list[str]:
        return sorted(t.removesuffix(".json") for t in self.store.list(f"{self._name_dir(name)}/{self._pointers}")
                      if t.endswith(".json"))

    def get_tag(self, name: str, tag: str) -> TagRecord | None:
        data, _ = self.store.read_versioned(self._tag_key(name, check_tag(tag)))
        return None if data is None else msgspec.json.decode(data, type=TagRecord)

    def tags(self, name: str) -> dict[str, TagRecord]:
        out = {}
        for tag in self.tag_names(name):
            record = self.get_tag(name, tag)
            if record is not None and record.version is not None:
                out[tag] = record
        return out

    def set_tag(self, name: str, tag: str, target: VersionRecord | None, *, by: str, force: bool = False,
                message: str = "", move: bool = False, protect: bool | None = None) -> TagRecord:
        """Point `tag` at `target` (None deletes it) by compare-and-swap, appending to its history.

        Moving a tag that points elsewhere needs `force`, unless `move` (model aliases move by design);
        a protected one always needs `force`. `protect` sets or clears the protection."""
        check_tag(tag)
        word = self.pointer_word
        key = self._tag_key(name, tag)
        for _ in range(_CAS_ATTEMPTS):
            data, token = self.store.read_versioned(key)
            record = msgspec.json.decode(data, type=TagRecord) if data else TagRecord(tag=tag, version=None,
                                                                                      manifest=None)
            current = record.version
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
        key = self._annotations_key(name, number)
        for _ in range(_CAS_ATTEMPTS):
            data, token = self.store.read_versioned(key)
            record = Annotations() if data is None else msgspec.json.decode(data, type=Annotations)
            summary = change(record)
            if not summary:
                return record
            record.history.append(AnnotationEvent(at=now_iso(), by=by, changes=summary))
            try:
                self.store.put_if(key, msgspec.json.encode(record, order="sorted"), token)
                return record
            except PreconditionFailed:
                continue
        raise ConflictError(f"annotations of {name}@v{number} keep changing under concurrent writers; try again")

    # -- resolution ----------------------------------------------------------------------------
    def resolve(self, ref: Ref) -> VersionRecord:
        """The version a reference means: vN, a tag, an id prefix, or (no selector) the latest."""
        if ref.selector is None or ref.selector == "latest":
            record = self.latest(ref.name)
            if record is None:
                raise NotFoundError(self._missing_name_message(ref.name))
            return record
        number = ref.version_number
        if number is not None:
            if not self.version_numbers(ref.name):
                raise NotFoundError(self._missing_name_message(ref.name))
            return self.get_version(ref.name, number)
        try:
            tag = self.get_tag(ref.name, ref.selector)
        except UsageError:
            tag = None
        if tag is not None and tag.version is not None:
            return self.get_version(ref.name, tag.version)
        if ID_PREFIX_RE.fullmatch(ref.selector):
            matches = [r for r in self.versions(ref.name) if r.manifest.startswith(ref.selector)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise UsageError(f"version id prefix {ref.selector!r} of {ref.name} is ambiguous; give more digits")
        if not self.version_numbers(ref.name):
            raise NotFoundError(self._missing_name_message(ref.name))
        raise NotFoundError(f"{ref} does not exist: no version, tag or version id {ref.selector!r} "
                            f"(see `dvx {self.kind} log {ref.name}`)")

    def _missing_name_message(self, name: str) -> str:
        return f"no {self.kind} named {name!r} in this store (see `dvx {self.kind} list`)"
