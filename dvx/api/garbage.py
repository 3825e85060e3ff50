"""Safe deletion and garbage collection: `dvx dataset|model delete`, `dvx gc`, and the leases writers take.

Deleting a version replaces its record by a tombstone (its number is never given out again); the data
it alone used becomes garbage. `dvx gc` removes garbage in two runs at least `grace` apart, and never
removes what a writer (an add, a commit, a model registration, a push or fetch) is about to reference.
No lock: three kinds of small documents on the store carry the protocol (docs/reliability.md argues it):

    leases/<id>.json                     a writer's announcement of the objects it will reference (CAS)
    gc/condemned-<utc time>-<id>.json    objects found unreachable and older than the grace (create-only)
    gc/sweep-<utc time>-<id>.json        "a gc is deleting these keys now" (create-only, removed after)

A gc run: (1) lists the condemnation records; those whose `deletable_after` has passed are ripe;
(2) announces a sweep of the ripe keys; (3) reads the leases, then (4) every live version record and its
manifest (what is reachable); (5) deletes the ripe objects that are still unreachable, unleased and the
same object that was condemned (same mtime): index segments first, then manifests, then packs, and
never after the sweep's time limit; (6) removes the records it finished and its sweep marker; (7) condemns
what is unreachable, unleased and older than the grace into a new record.

A writer: (1) writes its lease; (2) waits while a sweep that started before the lease was visible lists
one of its keys; (3) checks that the objects it will reference exist (re-storing or failing clearly if
not). Then nothing it references can be deleted: a gc that read the leases after (1) sees the lease (or,
once the writer has finished and dropped it, the new version), and one that read them before announced
its sweep before that, so the writer waited for it in (2) and saw its result in (3).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone

import msgspec

from dvx.api.repo import Repo
from dvx.chunks import load_config
from dvx.chunks.pack import index_key, pack_key
from dvx.errors import (
    ConflictError,
    IntegrityError,
    NotFoundError,
    PreconditionFailed,
    UsageError,
)
from dvx.fs import ObjectInfo, Store
from dvx.manifests import manifest_key
from dvx.manifests.paged import decode_root, read_pages
from dvx.refs import VersionRecord, parse_ref
from dvx.refs.store import DeletedVersion

FORMAT_VERSION = 1
KINDS = ("dataset", "model")
LEASES = "leases"
GC = "gc"

DEFAULT_GRACE = 24 * 3600.0
# Clocks of the machines sharing a store (and one store request) agree within this.
CLOCK_MARGIN = 120.0
# A gc ignores leases not updated for this long (drafts idle for a week); it may be set longer, not
# shorter than LEASE_MIN_MAX_AGE. A writer counts its lease as continuous only across updates less than
# LEASE_CONTINUITY apart, so a lease that might have lapsed protects nothing until written again.
LEASE_MAX_AGE = 7 * 86400.0
LEASE_MIN_MAX_AGE = 86400.0
LEASE_CONTINUITY = LEASE_MIN_MAX_AGE - 2 * CLOCK_MARGIN
# A lease write that takes longer than this is written again with a later "since" (see Lease.hold).
LEASE_WRITE_BOUND = 10.0
# A gc deletes nothing later than this after announcing its sweep (the rest waits for the next run).
SWEEP_LIMIT = 600.0
# Leftovers of interrupted local writes (.dvx-tmp/) are removed only when at least this old.
TEMP_MIN_AGE = 3600.0

_CAS_ATTEMPTS = 50
# Patterns, compiled by `re` on first use: writers import this module but only gc matches keys.
_PACK_RE = r"packs/([0-9a-f]{2})/([0-9a-f]{32})\.pack"
_INDEX_RE = r"index/([0-9a-f]{32})\.idx"
_MANIFEST_RE = r"manifests/([0-9a-f]{2})/([0-9a-f]{32})\.json\.zst"
_PAGE_RE = r"pages/([0-9a-f]{2})/([0-9a-f]{32})\.json\.zst"
_DURATION_RE = r"(\d+(?:\.\d+)?)([smhdw])"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# Writers' clock; tests may replace it. A gc run takes `now` as an argument instead.
_clock = time.time


class DataCollectedError(ConflictError):
    """Data a draft refers to was garbage-collected: the files must be added again (exit code 4)."""


# -- documents ------------------------------------------------------------------------------------------
class LeaseRecord(msgspec.Struct, kw_only=True):
    format_version: int = FORMAT_VERSION
    id: str
    purpose: str  # draft | register | transfer
    kind: str = ""
    name: str = ""
    by: str = ""
    updated: float  # seconds since the epoch: a gc ignores the lease LEASE_MAX_AGE after this
    # object key → since when (at the latest) the lease has continuously covered it
    keys: dict[str, float] = {}


class Condemned(msgspec.Struct, array_like=True, frozen=True):
    key: str
    size: int
    mtime: float


class CondemnationRecord(msgspec.Struct, kw_only=True):
    format_version: int = FORMAT_VERSION
    id: str
    by: str = ""
    condemned_at: float
    deletable_after: float
    grace: float
    objects: list[Condemned] = []


class SweepMarker(msgspec.Struct, kw_only=True):
    format_version: int = FORMAT_VERSION
    id: str
    by: str = ""
    started: float  # real time, before the marker was written
    until: float  # the gc issues no delete after this
    records: list[str] = []
    keys: list[str] = []


def encode_document(document) -> bytes:
    """A store document (lease, marker, record, shared-draft header) as canonical JSON."""
    return msgspec.json.encode(document, order="sorted")


def decode_document(data: bytes, kind, what: str, version: int = FORMAT_VERSION,
                    remedy: str | None = "remove it from the store"):
    """A store document of type `kind`, checked to be readable and of format `version`; `what` names it
    in errors, with `remedy` (if any) after a damaged one."""
    try:
        document = msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError as exc:
        raise IntegrityError(f"{what} is damaged ({exc})" + (f"; {remedy}" if remedy else "")) from None
    if document.format_version != version:
        raise IntegrityError(f"{what} has format_version {document.format_version}; upgrade dvx")
    return document


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def parse_duration(text: str | float | int) -> float:
    """'24h', '30m', '7d', '1h30m', '0s', '90' (seconds) → seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        value = str(text).strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", value):
            seconds = float(value)
        elif value and re.fullmatch(rf"(?:{_DURATION_RE})+", value):
            seconds = sum(float(n) * _UNITS[u] for n, u in re.findall(_DURATION_RE, value))
        else:
            raise UsageError(f"invalid duration {text!r}: write e.g. 24h, 30m, 7d, 1h30m or 0s")
    if seconds < 0:
        raise UsageError(f"invalid duration {text!r}: it cannot be negative")
    return seconds


# -- the writer's side: leases ---------------------------------------------------------------------------
def _remove_dead_sweeps(store: Store) -> None:
    """Sweep markers left by a gc that died mid-sweep: past their deadline (plus the clock margin) that gc
    can delete nothing more, so the marker only keeps writers waiting; remove it."""
    for name in store.list(GC):
        if not (name.startswith("sweep-") and name.endswith(".json")):
            continue
        try:
            marker = decode_document(store.read(f"{GC}/{name}"), SweepMarker, f"gc sweep marker {GC}/{name}")
        except NotFoundError:
            continue
        if _clock() > marker.until + CLOCK_MARGIN:
            store.delete(f"{GC}/{name}")


def read_sweeps(store: Store) -> list[SweepMarker]:
    markers = []
    for name in store.list(GC):
        if not (name.startswith("sweep-") and name.endswith(".json")):
            continue
        try:
            data = store.read(f"{GC}/{name}")
        except NotFoundError:  # the sweep just ended
            continue
        markers.append(decode_document(data, SweepMarker, f"gc sweep marker {GC}/{name}"))
    return markers


class Lease:
    """A writer's announcement, on the store, of the objects it is about to reference.

    `hold(keys)` adds keys (by compare-and-swap, so one lease can be shared by the processes working on a
    draft); `secure(...)` then makes sure no gc that began before the lease was visible can still delete
    them, and says which are gone; `release()` drops the lease once the version record is written."""

    def __init__(self, store: Store, lease_id: str, *, purpose: str, by: str = "", kind: str = "",
                 name: str = ""):
        if not re.fullmatch(r"[0-9a-f]{32}", lease_id):
            raise UsageError(f"invalid lease id {lease_id!r}")
        self.store = store
        self.id = lease_id
        self.key = f"{LEASES}/{lease_id}.json"
        self.purpose, self.by, self.kind, self.name = purpose, by, kind, name
        self.since: dict[str, float] = {}  # key → covered continuously since (no earlier than this)

    @classmethod
    def new(cls, store: Store, **kwargs) -> Lease:
        return cls(store, uuid.uuid4().hex, **kwargs)

    def hold(self, keys: Iterable[str]) -> None:
        """Add `keys` to the lease and refresh it. A key's "since" is a time by which the lease listing
        it was certainly visible: the clock before the write plus LEASE_WRITE_BOUND, or, when the write
        took longer, the clock after it (written again). A lease last written more than LEASE_CONTINUITY
        ago may have been ignored by a gc meanwhile, so all its keys start afresh."""
        wanted = set(keys)
        floor: dict[str, float] = {}  # keys whose stored "since" must be raised after a slow write
        for _ in range(_CAS_ATTEMPTS):
            data, token = self.store.read_versioned(self.key)
            current = decode_document(data, LeaseRecord, f"lease {self.key}") if data is not None else None
            before = _clock()
            lapsed = current is None or before - current.updated > LEASE_CONTINUITY
            previous = {} if lapsed else dict(current.keys)
            every = wanted | (set(current.keys) if current is not None else set())
            fresh = {k for k in every if k not in previous}
            stored = {k: max(previous.get(k, before + LEASE_WRITE_BOUND), floor.get(k, 0.0)) for k in every}
            record = LeaseRecord(id=self.id, purpose=self.purpose, kind=self.kind, name=self.name, by=self.by,
                                 updated=before, keys=stored)
            try:
                self.store.put_if(self.key, encode_document(record), token)
            except PreconditionFailed:
                continue
            after = _clock()
            if after > before + LEASE_WRITE_BOUND and fresh - set(floor):
                floor.update({k: after for k in fresh})
                continue
            self.since = {k: min(after if k in fresh else self.since.get(k, stored[k]), stored[k]) for k in every}
            return
        raise ConflictError(f"lease {self.key} keeps changing under concurrent writers; try again")

    def secure(self, keys: Iterable[str], check: Iterable[str] = (),
               covered: Callable[[], set[str]] | None = None) -> set[str]:
        """Wait while a gc sweep that may have read the leases before this one listed any of `keys`
        (at worst SWEEP_LIMIT plus margins, when a gc died mid-sweep); then return the keys of `check`
        that are not in the store. `covered()` (evaluated after the wait) names keys known to exist
        anyway, such as the packs of a parent version that is still live; they are checked only if a
        sweep listed them."""
        keys, check = set(keys), set(check)
        waited: set[str] = set()
        delay = 0.02
        while True:
            now = _clock()
            risky: set[str] = set()
            for marker in read_sweeps(self.store):
                if now > marker.until + CLOCK_MARGIN:
                    continue  # a gc that died: it deletes nothing any more
                for key in keys.intersection(marker.keys):
                    if marker.started <= self.since.get(key, now) + CLOCK_MARGIN:
                        risky.add(key)
            if not risky:
                break
            waited |= risky
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        safe = covered() if covered is not None else set()
        todo = sorted((check - safe) | (check & waited))
        return {key for key, there in zip(todo, exist_all(self.store, todo)) if not there}

    def release(self) -> None:
        self.store.delete(self.key)


def exist_all(store: Store, keys: list[str]) -> list[bool]:
    if len(keys) <= 4 or not store.latency_bound:
        return [store.exists(k) for k in keys]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(min(16, len(keys)), thread_name_prefix="dvx-exists") as pool:
        return list(pool.map(store.exists, keys))


def manifest_pack_keys(packs: Iterable[str]) -> set[str]:
    return {pack_key(p) for p in packs}


def parent_pack_keys(repo: Repo, kind: str, parent_refs: Iterable[str], parent_ids: Iterable[str]) -> set[str]:
    """Keys of the packs and manifest pages of the parents that are still live versions now (re-read): a
    live version's objects exist and stay (the writer that made it secured them, and it is reachable). Parents since deleted give
    nothing, so their packs get checked."""
    keys: set[str] = set()
    for ref, manifest_id in zip(parent_refs, parent_ids):
        try:
            parsed = parse_ref(ref)
            number = parsed.version_number
            if number is None:
                continue
            record = repo.refs(kind).get_record(parsed.name, number)
            if not isinstance(record, VersionRecord) or record.manifest != manifest_id:
                continue
            keys |= manifest_pack_keys({c.pack for f in repo.read_manifest(manifest_id).files for c in f.chunks})
            keys |= repo.manifest_keys(manifest_id)
        except (NotFoundError, UsageError, IntegrityError):
            continue
    return keys


# -- deleting versions -----------------------------------------------------------------------------------
class DeleteResult(msgspec.Struct):
    kind: str
    deleted: list[str] = msgspec.field(default_factory=list)  # NAME@vN
    ids: list[str] = msgspec.field(default_factory=list)
    tags_deleted: list[str] = msgspec.field(default_factory=list)  # NAME@TAG (aliases for models)
    dependents: list[str] = msgspec.field(default_factory=list)  # what still referred to them (only with force)
    forced: bool = False

    def to_dict(self) -> dict:
        return {"kind": self.kind, "deleted": self.deleted, "ids": self.ids, "tags_deleted": self.tags_deleted,
                "dependents": self.dependents, "forced": self.forced}


def delete_versions(repo: Repo, ref: str, *, kind: str = "dataset", all_versions: bool = False,
                    force: bool = False, message: str = "") -> DeleteResult:
    """Delete one version (`NAME@vN`, a tag or an id prefix) or, with `all_versions`, every version of
    NAME. Refused (ConflictError, exit 4) while something else depends on it, unless `force`: a version of
    another name made from it (parent) or from it as input (a model trained on it), a tag or alias
    pointing at it, or a pin of this project. Tags and aliases pointing at it are deleted with it (their
    history kept). Its number is never reused; its data is freed by `dvx gc`."""
    if kind not in KINDS:
        raise UsageError(f"invalid kind {kind!r}: use dataset or model")
    refs = repo.refs(kind)
    parsed = parse_ref(ref)
    word = refs.pointer_word
    if all_versions:
        if parsed.selector is not None:
            raise UsageError(f"--all deletes every version of a name: give {parsed.name}, not {ref}")
        targets = refs.versions(parsed.name)
        if not targets:
            refs.resolve(parsed)  # the precise "no such name" / "every version was deleted" error
    else:
        if parsed.selector is None:
            raise UsageError(f"say which version to delete: `dvx {kind} delete {parsed.name}@vN`, or "
                             f"`dvx {kind} delete {parsed.name} --all` for every version")
        targets = [refs.resolve(parsed)]
    name = parsed.name
    numbers = {t.version for t in targets}
    pointers = sorted(tag for tag, record in refs.tags(name).items() if record.version in numbers)
    blockers = _dependents(repo, kind, targets)
    blockers += [f"{word} {name}@{tag} points at {name}@v{refs.get_tag(name, tag).version}" for tag in pointers]
    if blockers and not force:
        what = targets[0].ref if len(targets) == 1 else f"{len(targets)} versions of {name}"
        raise ConflictError(f"{what} is still needed: {'; '.join(blockers)}. Pass --force to delete anyway "
                            f"(its {word}s go with it; the others keep a record of it)")
    result = DeleteResult(kind=kind, forced=bool(blockers) and force, dependents=blockers if force else [])
    by = repo.settings.author
    # One name-catalog update for the whole deletion (not one per version and tag): see dvx/refs/catalog.py.
    with refs.catalog.updating(name) as about_to_write:
        about_to_write()
        for target in targets:
            refs.delete_version(name, target.version, by=by, message=message)
            result.deleted.append(target.ref)
            result.ids.append(target.manifest)
        for tag in pointers:
            record = refs.get_tag(name, tag)
            if record is None or record.version not in numbers:
                continue
            refs.set_tag(name, tag, None, by=by, force=True, expected=record.version,
                         message=f"{name}@v{record.version} was deleted")
            result.tags_deleted.append(f"{name}@{tag}")
    return result


def _dependents(repo: Repo, kind: str, targets: list[VersionRecord]) -> list[str]:
    ids = {t.manifest for t in targets}
    chosen = {(t.name, t.version) for t in targets}
    name = targets[0].name
    found = []
    for other_kind in KINDS:
        refs = repo.refs(other_kind)
        for other in refs.names():
            for record in refs.versions(other):
                if other_kind == kind and (record.name, record.version) in chosen:
                    continue
                if kind == "dataset" and ids.intersection(record.inputs):
                    verb = "was trained on" if other_kind == "model" else "was made from"
                    found.append(f"{other_kind} {record.ref} {verb} it")
                if other_kind == kind and record.name != name and ids.intersection(record.parents):
                    found.append(f"{other_kind} {record.ref} has it as parent")
    from dvx.api.pinning import load_pins

    for pin in load_pins(repo.settings):
        if pin.kind == kind and pin.id in ids:
            found.append(f"{repo.settings.project_file} pins it ({pin.version})")
    return found


# -- garbage collection ----------------------------------------------------------------------------------
class GcObject(msgspec.Struct):
    key: str
    size: int
    mtime: float

    def to_dict(self) -> dict:
        return {"key": self.key, "size": self.size, "mtime": iso(self.mtime)}


def _total(objects: list[GcObject]) -> int:
    return sum(o.size for o in objects)


class GcReport(msgspec.Struct):
    store: str
    dry_run: bool
    grace: float
    now: float
    versions: int = 0  # live versions seen
    reachable_manifests: int = 0
    reachable_packs: int = 0
    condemned: list[GcObject] = msgspec.field(default_factory=list)  # this run (dry run: would be)
    record: str | None = None  # the condemnation record written
    deletable_after: float | None = None
    deleted: list[GcObject] = msgspec.field(default_factory=list)  # this run (dry run: would be)
    temporaries: list[GcObject] = msgspec.field(default_factory=list)  # interrupted local writes removed
    kept_by_leases: list[GcObject] = msgspec.field(default_factory=list)  # garbage but leased by a writer
    pardoned: list[GcObject] = msgspec.field(default_factory=list)  # condemned earlier, referenced again
    pending: list[GcObject] = msgspec.field(default_factory=list)  # condemned earlier, deletable later
    next_deletable_after: float | None = None
    records_processed: int = 0
    leases: list[dict] = msgspec.field(default_factory=list)  # live leases: id, purpose, name, by, updated, keys
    expired_leases: int = 0
    incomplete: bool = False  # the sweep hit its time limit; the next run continues

    @property
    def bytes_freed(self) -> int:
        return _total(self.deleted) + _total(self.temporaries)

    def to_dict(self) -> dict:
        def block(objects: list[GcObject], **extra) -> dict:
            return {"objects": len(objects), "bytes": _total(objects), **extra,
                    "keys": [o.key for o in objects]}

        return {
            "store": self.store, "dry_run": self.dry_run, "grace_seconds": self.grace, "now": iso(self.now),
            "reachable": {"versions": self.versions, "manifests": self.reachable_manifests,
                          "packs": self.reachable_packs},
            "condemned": block(self.condemned, record=self.record, deletable_after=iso(self.deletable_after)),
            "deleted": block(self.deleted),
            "temporaries": block(self.temporaries),
            "bytes_freed": self.bytes_freed,
            "kept_by_leases": block(self.kept_by_leases),
            "pardoned": block(self.pardoned),
            "pending": block(self.pending, next_deletable_after=iso(self.next_deletable_after)),
            "records_processed": self.records_processed,
            "leases": {"live": len(self.leases), "expired": self.expired_leases, "holders": self.leases},
            "incomplete": self.incomplete,
        }


def collect_garbage(repo: Repo, *, grace: float | str = DEFAULT_GRACE, dry_run: bool = False,
                    now: float | None = None, lease_max_age: float | str = LEASE_MAX_AGE,
                    sweep_limit: float = SWEEP_LIMIT, jobs: int | None = None) -> GcReport:
    """One gc run (see the module docstring). `now` (seconds since the epoch) replaces the clock for
    ages and deadlines, so tests need not sleep; the sweep's time limit always runs on the real clock.
    With `dry_run` nothing is written or deleted; the report says what would be."""
    grace = parse_duration(grace)
    lease_max_age = parse_duration(lease_max_age)
    if lease_max_age < LEASE_MIN_MAX_AGE:
        raise UsageError(f"the lease maximum age must be at least {LEASE_MIN_MAX_AGE / 3600:g} hours")
    store = repo.store
    t_now = _clock() if now is None else float(now)
    report = GcReport(store=store.url, dry_run=dry_run, grace=grace, now=t_now)
    if load_config(store, create=False) is None:
        return report  # nothing was ever written here
    by = repo.settings.author
    jobs = jobs or repo.settings.jobs or 8

    records = _read_records(store)
    ripe = {key: r for key, r in records.items() if r.deletable_after <= t_now}
    pending = {key: r for key, r in records.items() if key not in ripe}
    ripe_objects: dict[str, set[float]] = {}
    for record in ripe.values():
        for obj in record.objects:
            ripe_objects.setdefault(obj.key, set()).add(obj.mtime)

    if not dry_run:
        _remove_dead_sweeps(store)
    marker_key = None
    deadline = _clock() + sweep_limit
    if ripe and not dry_run:
        started = _clock()
        deadline = started + sweep_limit
        marker_id = uuid.uuid4().hex
        marker_key = f"{GC}/sweep-{_stamp(started)}-{marker_id[:8]}.json"
        swept = set(ripe_objects) | {index_key(i) for kind, i in map(_classify, ripe_objects) if kind == "pack"}
        store.put_create(marker_key, encode_document(SweepMarker(id=marker_id, by=by, started=started, until=deadline,
                                                         records=sorted(ripe), keys=sorted(swept))))
    try:
        leased = _read_leases(store, t_now, lease_max_age, report)  # after the marker,
        manifests, pages, packs = _reachable(repo, jobs, report)  # and the refs after the leases
        listed = {info.key: info for prefix in ("index", "manifests", "pages", "packs") for info in store.scan(prefix)}

        def reachable(key: str) -> bool:
            kind, object_id = _classify(key)
            if kind in ("pack", "index"):
                return object_id in packs
            if kind == "page":
                return object_id in pages
            return kind != "manifest" or object_id in manifests  # not ours to judge: never deleted

        def held(key: str) -> bool:
            kind, object_id = _classify(key)
            return (pack_key(object_id) if kind == "index" else key) in leased

        def protected(key: str) -> bool:
            return reachable(key) or held(key)

        # -- sweep: delete ripe objects that are still garbage ----------------------------------------
        doomed: dict[str, list[str]] = {"index": [], "manifest": [], "page": [], "pack": []}
        doomed_packs: set[str] = set()
        for key in sorted(ripe_objects):
            kind, object_id = _classify(key)
            info = listed.get(key)
            if kind is None or info is None:
                continue  # gone already (or not ours)
            obj = GcObject(key, info.size, info.mtime)
            if protected(key):
                if kind != "index":
                    (report.pardoned if reachable(key) else report.kept_by_leases).append(obj)
            elif info.mtime not in ripe_objects[key]:
                continue  # written again since it was condemned: judged afresh later
            else:
                doomed[kind].append(key)
                if kind == "pack":
                    doomed_packs.add(object_id)
        # An index segment goes with its pack, or alone when its pack is absent; a kept pack keeps its
        # segment (writers find its chunks through it).
        doomed["index"] = [k for k in doomed["index"]
                           if _classify(k)[1] in doomed_packs or pack_key(_classify(k)[1]) not in listed]
        for object_id in doomed_packs:
            if index_key(object_id) in listed and index_key(object_id) not in doomed["index"]:
                doomed["index"].append(index_key(object_id))
        for phase in ("index", "manifest", "page", "pack"):
            keys = sorted(doomed[phase])
            if dry_run:
                report.deleted.extend(GcObject(k, listed[k].size, listed[k].mtime) for k in keys)
                continue
            done = _delete_all(store, keys, deadline, jobs)
            report.deleted.extend(GcObject(k, listed[k].size, listed[k].mtime) for k in done)
            if len(done) < len(keys):
                report.incomplete = True
                break
        if not dry_run and not report.incomplete:
            for key in sorted(ripe):
                store.delete(key)
            report.records_processed = len(ripe)
    finally:
        if marker_key is not None:
            store.delete(marker_key)

    # -- condemn: unreachable, unleased and older than the grace ---------------------------------------
    deleted_keys = {o.key for o in report.deleted}
    awaiting: set[str] = {o.key for r in pending.values() for o in r.objects}
    if report.incomplete:
        awaiting |= set(ripe_objects)
    for record in pending.values():
        for obj in record.objects:
            info = listed.get(obj.key)
            if info is not None and info.mtime == obj.mtime and not protected(obj.key):
                report.pending.append(GcObject(obj.key, info.size, info.mtime))
    if report.pending:
        report.next_deletable_after = min(r.deletable_after for r in pending.values())
    candidates: dict[str, ObjectInfo] = {}
    reported = {o.key for o in report.kept_by_leases}
    for key, info in listed.items():
        kind, object_id = _classify(key)
        if kind is None or key in deleted_keys or key in awaiting or key in reported or t_now - info.mtime < grace:
            continue
        if protected(key):
            if kind != "index" and not reachable(key):
                report.kept_by_leases.append(GcObject(key, info.size, info.mtime))
            continue
        if kind != "index":
            candidates[key] = info
    for key, info in listed.items():  # index segments follow their pack
        kind, object_id = _classify(key)
        if kind != "index" or key in deleted_keys or key in awaiting or t_now - info.mtime < grace \
                or protected(key):
            continue
        pack = pack_key(object_id)
        if pack in candidates or (pack not in listed and pack not in deleted_keys):
            candidates[key] = info
    report.condemned = [GcObject(k, i.size, i.mtime) for k, i in sorted(candidates.items())]
    if report.condemned:
        report.deletable_after = t_now + grace
        if not dry_run:
            record_id = uuid.uuid4().hex
            report.record = f"{GC}/condemned-{_stamp(t_now)}-{record_id[:8]}.json"
            store.put_create(report.record, encode_document(CondemnationRecord(
                id=record_id, by=by, condemned_at=t_now, deletable_after=t_now + grace, grace=grace,
                objects=[Condemned(o.key, o.size, o.mtime) for o in report.condemned])))
    report.temporaries = [GcObject(i.key, i.size, i.mtime) for i in
                          store.sweep_temporaries(t_now - max(grace, TEMP_MIN_AGE), dry_run=dry_run)]
    return report


def _classify(key: str) -> tuple[str | None, str]:
    if (m := re.fullmatch(_PACK_RE, key)) and m.group(2).startswith(m.group(1)):
        return "pack", m.group(2)
    if m := re.fullmatch(_INDEX_RE, key):
        return "index", m.group(1)
    if (m := re.fullmatch(_MANIFEST_RE, key)) and m.group(2).startswith(m.group(1)):
        return "manifest", m.group(2)
    if (m := re.fullmatch(_PAGE_RE, key)) and m.group(2).startswith(m.group(1)):
        return "page", m.group(2)
    return None, ""


def _delete_all(store: Store, keys: list[str], deadline: float, jobs: int) -> list[str]:
    """Delete `keys` (in parallel), issuing no delete after `deadline` (real clock); the keys deleted."""

    def one(key: str) -> str | None:
        if _clock() >= deadline - CLOCK_MARGIN / 4:
            return None
        store.delete(key)
        return key

    if len(keys) <= 4:
        return [k for k in map(one, keys) if k is not None]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(min(jobs, len(keys)), thread_name_prefix="dvx-gc") as pool:
        return [k for k in pool.map(one, keys) if k is not None]


def _read_records(store: Store) -> dict[str, CondemnationRecord]:
    records = {}
    for name in store.list(GC):
        if not (name.startswith("condemned-") and name.endswith(".json")):
            continue
        key = f"{GC}/{name}"
        try:
            data = store.read(key)
        except NotFoundError:  # another gc finished it
            continue
        records[key] = decode_document(data, CondemnationRecord, f"condemnation record {key}")
    return records


def _read_leases(store: Store, now: float, max_age: float, report: GcReport) -> set[str]:
    """Keys held by live leases. A damaged lease stops the run: what it protects is unknown."""
    keys: set[str] = set()
    for name in store.list(LEASES):
        if not name.endswith(".json"):
            continue
        try:
            data = store.read(f"{LEASES}/{name}")
        except NotFoundError:  # released meanwhile
            continue
        lease = decode_document(data, LeaseRecord, f"lease {LEASES}/{name}")
        if now - lease.updated > max_age:
            report.expired_leases += 1
            continue
        keys.update(lease.keys)
        report.leases.append({"id": lease.id, "purpose": lease.purpose, "kind": lease.kind, "name": lease.name,
                              "by": lease.by, "updated": iso(lease.updated), "keys": len(lease.keys)})
    return keys


# Pack sets of manifests and of their pages (immutable, content-addressed): kept across runs of one process.
_PACKS_OF: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
_PAGE_PACKS: dict[str, frozenset[str]] = {}


def _reachable(repo: Repo, jobs: int, report: GcReport) -> tuple[set[str], set[str], set[str]]:
    """(manifest ids, page ids, pack ids) referenced by every live version record of every dataset and
    model. A version whose record, manifest or page cannot be read stops the run before anything is
    deleted."""
    if len(_PAGE_PACKS) > 1_000_000:
        _PAGE_PACKS.clear()
    wanted = [(kind, name, number) for kind in KINDS for name in repo.refs(kind).names()
              for number in repo.refs(kind).all_version_numbers(name)]

    def record_of(item: tuple[str, str, int]) -> VersionRecord | DeletedVersion | None:
        kind, name, number = item
        try:
            return repo.refs(kind).get_record(name, number)
        except NotFoundError:
            return None

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="dvx-gc-refs") as pool:
        live = [r for r in pool.map(record_of, wanted) if isinstance(r, VersionRecord)]
        manifests = {r.manifest: r for r in live}

        def packs_of(manifest_id: str) -> tuple[frozenset[str], frozenset[str]]:
            """(pack ids, page ids) of one manifest; pages shared with manifests seen before are not read."""
            cached = _PACKS_OF.get(manifest_id)
            if cached is not None:
                return cached
            try:
                root = decode_root(repo.store.read(manifest_key(manifest_id)), manifest_id)
                todo = [i for i, page in enumerate(root.pages) if page.id not in _PAGE_PACKS]
                for index, files in zip(todo, read_pages(repo.store.read, root, todo)):
                    _PAGE_PACKS[root.pages[index].id] = frozenset(c.pack for f in files for c in f.chunks)
            except NotFoundError:
                raise IntegrityError(f"{manifests[manifest_id].ref}: manifest {manifest_id} is missing; gc stops "
                                     "without deleting anything (see `dvx verify`)") from None
            except (IntegrityError, UsageError) as exc:
                raise IntegrityError(f"{manifests[manifest_id].ref}: manifest {manifest_id} is damaged ({exc}); "
                                     "gc stops without deleting anything (see `dvx verify`)") from None
            packs = set().union(*(_PAGE_PACKS[p.id] for p in root.pages)) if root.pages else set()
            packs |= {c.pack for f in root.inline or () for c in f.chunks}
            found = (frozenset(packs), frozenset(p.id for p in root.pages))
            if len(_PACKS_OF) < 100_000:
                _PACKS_OF[manifest_id] = found
            return found

        packs: set[str] = set()
        pages: set[str] = set()
        for found_packs, found_pages in pool.map(packs_of, sorted(manifests)):
            packs |= found_packs
            pages |= found_pages
    report.versions, report.reachable_manifests, report.reachable_packs = len(live), len(manifests), len(packs)
    return set(manifests), pages, packs
