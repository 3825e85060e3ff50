"""Copy versions between stores (`dvx push` / `dvx fetch`).

A version moves with its whole lineage (every ancestor through `parent_refs`), byte for byte: packs
keep their ids, manifests their ids, version records their numbers. So a version has the same
content id in every store, and only packs the destination lacks are transferred. Write order follows
BRIEF §4: packs (each before its index segment), then manifests, then version records, then tags.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

from dvx.api.garbage import Lease
from dvx.api.progress import ProgressFactory, no_progress
from dvx.api.repo import Repo
from dvx.chunks import copy_pack, init_config_like, load_config, stored_pack_ids
from dvx.chunks.pack import pack_key
from dvx.errors import ConflictError, NotFoundError, UsageError
from dvx.manifests import manifest_key
from dvx.refs import VersionRecord, parse_ref
from dvx.refs.store import DeletedVersion, VersionDeletedError


@dataclass
class TransferResult:
    source: str
    destination: str
    versions_copied: list[str] = field(default_factory=list)
    versions_present: list[str] = field(default_factory=list)
    packs_copied: int = 0
    packs_present: int = 0
    bytes_copied: int = 0
    manifests_copied: int = 0
    tags_set: list[str] = field(default_factory=list)
    tags_kept: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _lineage(repo: Repo, refs: Sequence[str], kind: str) -> list[VersionRecord]:
    """The versions `refs` name (a bare NAME means all its versions) and all their ancestors,
    oldest first within each name. Deleted versions are absent: naming one is an error, and an
    ancestor that was deleted is left out (its descendants are complete without it)."""
    wanted: dict[tuple[str, int], VersionRecord] = {}
    todo: list[VersionRecord] = []
    for text in refs:
        ref = parse_ref(text)
        if ref.selector is None:
            records = repo.refs(kind).versions(ref.name)
            if not records:
                raise NotFoundError(f"no {kind} named {ref.name!r} in store {repo.store.url}")
            todo.extend(records)
        else:
            todo.append(repo.resolve(ref, kind))
    while todo:
        record = todo.pop()
        if (record.name, record.version) in wanted:
            continue
        wanted[(record.name, record.version)] = record
        for parent in record.parent_refs:
            try:
                todo.append(repo.resolve(parent, kind))
            except VersionDeletedError:
                continue
    return [wanted[key] for key in sorted(wanted)]


def copy_versions(source: Repo, dest: Repo, refs: Sequence[str], *, kind: str = "dataset",
                  force_tags: bool = False, jobs: int | None = None,
                  progress: ProgressFactory = no_progress) -> TransferResult:
    """Make `dest` hold the versions `refs` name in `source` (with their lineage and tags)."""
    if not refs:
        raise UsageError("name at least one version to copy (NAME for all its versions, or NAME@vN)")
    if source.settings.store_url == dest.settings.store_url:
        raise UsageError(f"source and destination are the same store ({source.settings.store_url})")
    result = TransferResult(source.store.url, dest.store.url)
    records = _lineage(source, refs, kind)
    src_refs, dst_refs = source.refs(kind), dest.refs(kind)

    # Refuse diverged histories before moving any data.
    record_bytes = {}
    for record in records:
        data = src_refs.version_bytes(record.name, record.version)
        there = dst_refs.version_bytes(record.name, record.version)
        if there is not None and there != data:
            here = dst_refs.get_record(record.name, record.version)
            if isinstance(here, DeletedVersion):
                raise ConflictError(f"{record.ref} was deleted in {dest.store.url} (by {here.deleted.by} at "
                                    f"{here.deleted.at}); its number is not given out again, so it cannot be "
                                    "copied back")
            raise ConflictError(f"{record.ref} already exists in {dest.store.url} and is a different version "
                                f"(the two stores' histories of {record.name!r} have diverged)")
        record_bytes[record.ref] = (data, there is not None)

    config = load_config(source.store, create=False)
    if config is None:
        raise NotFoundError(f"store {source.store.url} is empty")
    init_config_like(dest.store, config)

    manifest_ids = list(dict.fromkeys(r.manifest for r in records))
    needed_packs = sorted({ref.pack for mid in manifest_ids for f in source.read_manifest(mid).files
                           for ref in f.chunks})
    # Announce what the copied versions will reference, so a gc in the destination keeps it (packs it
    # already holds may be unreferenced garbage there: dvx/api/garbage.py).
    lease = Lease.new(dest.store, purpose="transfer", by=dest.settings.author, kind=kind,
                      name=",".join(sorted({r.name for r in records})))
    keys = {pack_key(p) for p in needed_packs} | {k for m in manifest_ids for k in source.manifest_keys(m)}
    lease.hold(keys)
    try:
        _copy_data(source, dest, lease, keys, needed_packs, manifest_ids, records, record_bytes, kind, result, jobs,
                   progress)
        _copy_refs(source, dest, records, record_bytes, kind, force_tags, result)
    finally:
        lease.release()
    return result


def _copy_data(source: Repo, dest: Repo, lease: Lease, keys: set[str], needed_packs: list[str],
               manifest_ids: list[str], records: list[VersionRecord], record_bytes: dict, kind: str,
               result: TransferResult, jobs: int | None, progress: ProgressFactory) -> None:
    """Packs the destination lacks, then the manifests. Once the lease is secured, the packs it already
    held are checked too (they may have been garbage a gc was deleting); any gone is copied after all."""
    present = stored_pack_ids(dest.store)
    todo = [p for p in needed_packs if p not in present]
    workers = max(1, jobs or source.settings.jobs or 4)
    copied: set[str] = set()

    def covered() -> set[str]:
        """Packs of the versions the destination already holds, live, byte for byte: they stay."""
        out: set[str] = set()
        for record in records:
            if record_bytes[record.ref][1] and isinstance(
                    dest.refs(kind).get_record(record.name, record.version), VersionRecord):
                out |= {pack_key(c.pack) for f in source.read_manifest(record.manifest).files for c in f.chunks}
        return out

    for _ in range(8):
        if todo:
            with progress(f"copying {len(todo)} packs to {dest.store.url}", len(todo)) as advance:
                def one(pack_id: str) -> int:
                    moved = copy_pack(source.store, dest.store, pack_id)
                    advance(1)
                    return moved

                from concurrent.futures import ThreadPoolExecutor
                with ThreadPoolExecutor(workers) as pool:
                    for pack_id, moved in zip(todo, pool.map(one, todo)):
                        result.bytes_copied += moved
                        copied.add(pack_id)
        gone = lease.secure(keys, check={pack_key(p) for p in needed_packs}, covered=covered)
        todo = sorted(k.rsplit("/", 1)[1].removesuffix(".pack") for k in gone)
        if not todo:
            break
    else:
        raise ConflictError(f"packs keep disappearing from {dest.store.url} while copying (is a gc with a very "
                            "short grace running there?); try again")
    result.packs_copied = len(copied)
    result.packs_present = len(needed_packs) - len(copied)

    pages = sorted({k for mid in manifest_ids for k in source.manifest_keys(mid)} - {manifest_key(m) for m in manifest_ids})
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(workers) as pool:  # pages before the roots that list them
        list(pool.map(lambda key: dest.store.put_create(key, source.store.read(key)), pages))
    for mid in manifest_ids:
        if dest.store.put_create(manifest_key(mid), source.store.read(manifest_key(mid))):
            result.manifests_copied += 1


def _copy_refs(source: Repo, dest: Repo, records: list[VersionRecord], record_bytes: dict, kind: str,
               force_tags: bool, result: TransferResult) -> None:
    src_refs, dst_refs = source.refs(kind), dest.refs(kind)
    # One name-catalog update per name at the end (not one per version, tag and annotation).
    with ExitStack() as catalog_updates:
        for name in sorted({r.name for r in records}):
            catalog_updates.enter_context(dst_refs.catalog.updating(name))()
        _copy_refs_of(source, dest, src_refs, dst_refs, records, record_bytes, force_tags, result)


def _copy_refs_of(source: Repo, dest: Repo, src_refs, dst_refs, records: list[VersionRecord], record_bytes: dict,
                  force_tags: bool, result: TransferResult) -> None:
    for record in records:
        data, was_there = record_bytes[record.ref]
        if not was_there and dst_refs.import_version(record.name, record.version, data):
            result.versions_copied.append(record.ref)
        else:
            result.versions_present.append(record.ref)

    for record in records:  # tags, metrics, params, metadata: only into versions that have none yet
        _copy_annotations(src_refs, dst_refs, record, source.store.url, dest.settings.author)

    copied = {(r.name, r.version) for r in records}
    for name in sorted({r.name for r in records}):
        for tag, tag_record in src_refs.tags(name).items():
            if (name, tag_record.version) not in copied:
                continue
            target = dst_refs.get_version(name, tag_record.version)
            try:
                before = dst_refs.get_tag(name, tag)
                dst_refs.set_tag(name, tag, target, by=dest.settings.author, force=force_tags,
                                 message=f"copied from {source.store.url}")
            except ConflictError:
                result.tags_kept.append(f"{name}@{tag}")
                continue
            if before is None or before.version != target.version:
                result.tags_set.append(f"{name}@{tag}")


def _copy_annotations(src_refs, dst_refs, record: VersionRecord, origin: str, by: str) -> None:
    notes = src_refs.get_annotations(record.name, record.version)
    if not (notes.tags or notes.metrics or notes.params or notes.metadata):
        return

    def copy(dest) -> dict:
        if dest.tags or dest.metrics or dest.params or dest.metadata or dest.history:
            return {}  # the destination has its own story for this version: keep it
        dest.tags, dest.metrics, dest.params, dest.metadata = notes.tags, notes.metrics, notes.params, notes.metadata
        dest.history = list(notes.history)
        return {"copied_from": origin}

    dst_refs.update_annotations(record.name, record.version, copy, by=by)
