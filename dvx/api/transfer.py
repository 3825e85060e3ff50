"""Copy versions between stores (`dvx push` / `dvx fetch`).

A version moves with its whole lineage (every ancestor through `parent_refs`), byte for byte: packs
keep their ids, manifests their ids, version records their numbers. So a version has the same
content id in every store, and only packs the destination lacks are transferred. Write order follows
BRIEF §4: packs (each before its index segment), then manifests, then version records, then tags.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from dvx.api.progress import ProgressFactory, no_progress
from dvx.api.repo import Repo
from dvx.chunks import copy_pack, init_config_like, load_config, stored_pack_ids
from dvx.errors import ConflictError, NotFoundError, UsageError
from dvx.manifests import manifest_key
from dvx.refs import VersionRecord, parse_ref


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
    oldest first within each name."""
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
        todo.extend(repo.resolve(parent, kind) for parent in record.parent_refs)
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
    present = stored_pack_ids(dest.store)
    missing = [p for p in needed_packs if p not in present]
    result.packs_present = len(needed_packs) - len(missing)
    with progress(f"copying {len(missing)} packs to {dest.store.url}", len(missing)) as advance:
        def one(pack_id: str) -> int:
            moved = copy_pack(source.store, dest.store, pack_id)
            advance(1)
            return moved

        workers = max(1, jobs or source.settings.jobs or 4)
        with ThreadPoolExecutor(workers) as pool:
            for moved in pool.map(one, missing):
                result.bytes_copied += moved
                result.packs_copied += 1

    for mid in manifest_ids:
        if dest.store.put_create(manifest_key(mid), source.store.read(manifest_key(mid))):
            result.manifests_copied += 1

    for record in records:
        data, was_there = record_bytes[record.ref]
        if not was_there and dst_refs.import_version(record.name, record.version, data):
            result.versions_copied.append(record.ref)
        else:
            result.versions_present.append(record.ref)

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
    return result
