"""The model registry: model versions (stored like datasets, so checkpoints share chunks), aliases that
move by compare-and-swap with their history, free tags, metrics, params and metadata that change
without changing a version's content id, and the datasets each version was trained on."""

from __future__ import annotations

import builtins
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from dvx.api.datasets import store_scanned, write_version
from dvx.api.garbage import Lease, parent_pack_keys
from dvx.api.model import Version
from dvx.api.progress import ProgressFactory, no_progress
from dvx.api.repo import Repo
from dvx.errors import ConflictError, NotFoundError, UsageError
from dvx.manifests import Manifest, scan
from dvx.refs import (
    Annotations,
    TagEvent,
    VersionRecord,
    check_name,
    check_tag,
    now_iso,
    parse_ref,
)
from dvx.refs.catalog import VersionNotes

KIND = "model"
SORT_KEYS = ("version", "created", "bytes")
_NO_NOTES = VersionNotes()


class ModelVersion(Version):
    """A model version with what the registry knows about it (`tags` are its aliases' names)."""

    kind: str = KIND
    labels: list[str] = msgspec.field(default_factory=list)  # free tags: `dvx model tag`
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    framework: str | None = None

    @property
    def aliases(self) -> list[str]:
        return self.tags

    def to_dict(self) -> dict:
        # Version.to_dict's shape, renamed for models (aliases are the tags, free tags the labels).
        out = msgspec.to_builtins(self)
        out["ref"] = self.ref
        out["aliases"] = out.pop("tags")
        out["tags"] = out.pop("labels")
        return out


class AliasHistory(msgspec.Struct):
    alias: str
    version: int | None  # None once deleted
    protected: bool
    history: list[TagEvent]

    def to_dict(self) -> dict:
        return {"alias": self.alias, "version": self.version, "protected": self.protected,
                "history": [{k: getattr(e, k) for k in ("at", "by", "action", "from_version", "to_version",
                                                          "message")} for e in self.history]}


class FetchedModel(msgspec.Struct):
    """What `Model.get` returns: where the files are, and which version they are."""

    path: Path
    version: ModelVersion

    @property
    def ref(self) -> str:
        return self.version.ref


# -- parsing helpers (shared by the CLI) -----------------------------------------------------------
def parse_pairs(pairs: Sequence[str] | Mapping[str, Any] | None, what: str, numeric: bool = False) -> dict:
    """`["lr=0.1", "arch=resnet"]` (or a dict) → dict; values become numbers where they look like numbers."""
    if pairs is None:
        return {}
    items = pairs.items() if isinstance(pairs, Mapping) else [_split_pair(p, what) for p in pairs]
    out = {}
    for key, value in items:
        if not isinstance(key, str) or not key or len(key) > 200:
            raise UsageError(f"invalid {what} name {key!r}")
        out[key] = _number(key, value, what) if numeric else _maybe_number(value)
    return out


def _split_pair(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"invalid {what} {text!r}: write KEY=VALUE")
    return key.strip(), value.strip()


def _maybe_number(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    for convert in (int, float):
        try:
            number = convert(value)
        except ValueError:
            continue
        return number if math.isfinite(number) else value
    return value


def _number(key: str, value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} {key}={value!r} is not a number") from None
    if not math.isfinite(number) or isinstance(value, bool):
        raise UsageError(f"{what} {key}={value!r} is not a finite number")
    return int(number) if isinstance(value, int) else number


def parse_sort(sort: str | None) -> tuple[str, bool] | None:
    """`accuracy:desc` → ("accuracy", True); `version`, `created`, `bytes` sort by those fields."""
    if not sort:
        return None
    key, _, order = sort.partition(":")
    if order not in ("", "asc", "desc") or not key:
        raise UsageError(f"invalid sort {sort!r}: write KEY, KEY:asc or KEY:desc (KEY a metric or "
                         f"{', '.join(SORT_KEYS)})")
    return key, order == "desc"


# -- reading -------------------------------------------------------------------------------------
def _aliases_by_version(repo: Repo, name: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for alias, record in repo.refs(KIND).tags(name).items():
        out.setdefault(record.version, []).append(alias)
    return out


def model_version(repo: Repo, record: VersionRecord, aliases: Sequence[str] | None = None,
                  annotations: Annotations | VersionNotes | None = None) -> ModelVersion:
    """A version record with its aliases and annotations (read from the refs unless given)."""
    if aliases is None:
        aliases = _aliases_by_version(repo, record.name).get(record.version, [])
    notes = annotations or repo.refs(KIND).get_annotations(record.name, record.version)
    # The fields version_from_record gives, built in one step (listings build ten thousand of these).
    return ModelVersion(name=record.name, version=record.version, id=record.manifest, created=record.created,
                        author=record.author, message=record.message, files=record.files, bytes=record.bytes,
                        parents=list(record.parent_refs), parent_ids=list(record.parents), tags=sorted(aliases),
                        inputs=list(record.inputs), input_refs=list(record.input_refs), new_bytes=record.new_bytes,
                        labels=sorted(notes.tags), metrics=dict(notes.metrics), params=dict(notes.params),
                        metadata=dict(notes.metadata), framework=notes.metadata.get("framework"))

def resolve(repo: Repo, ref: str) -> VersionRecord:
    """As for datasets, a bare NAME that the project pins means the pinned version."""
    from dvx.api.reading import resolve_record

    return resolve_record(repo, ref, KIND)


def show(repo: Repo, ref: str) -> dict:
    """Everything about one version, with logical bytes and the stored bytes its parents did not have."""
    from dvx.api import reading

    record = resolve(repo, ref)
    out = reading.show(repo, ref, KIND)
    out.update(model_version(repo, record).to_dict())
    return out


def log(repo: Repo, name: str) -> tuple[builtins.list[ModelVersion], builtins.list[AliasHistory]]:
    """Versions (newest first) and every alias with its full history (deleted aliases included)."""
    refs = repo.refs(KIND)
    records = refs.versions(name)
    if not records:
        raise NotFoundError(f"no model named {name!r} in this store (see `dvx model list`)")
    aliases = _aliases_by_version(repo, name)
    versions = [model_version(repo, r, aliases.get(r.version, [])) for r in reversed(records)]
    histories = []
    for alias in refs.tag_names(name):
        tag = refs.get_tag(name, alias)
        if tag is not None:
            histories.append(AliasHistory(alias, tag.version, tag.protected, list(tag.history)))
    return versions, histories


def list_versions(repo: Repo, name: str | None = None, *, alias: str | None = None, tag: str | None = None,
                  sort: str | None = None, all_versions: bool = False,
                  limit: int | None = None) -> builtins.list[ModelVersion]:
    """Model versions: by default the latest of each model; `alias` picks the version each model's
    alias points at; `tag` every version carrying that tag; `all_versions` every version.
    `sort` is a metric or field, with `:desc` for best-first (versions without the metric go last).
    Across all models, the latest (or aliased) versions come from the name catalog."""
    ordering = parse_sort(sort)
    if alias is not None:
        check_tag(alias)
    if tag is not None:
        check_tag(tag)
    if name is None and tag is None and not all_versions:
        rows = _listed_from_catalog(repo, alias)
    else:
        rows = _listed_from_refs(repo, name, alias, tag, all_versions or ordering is not None and bool(name))
    if ordering is not None:
        rows = _sorted(rows, *ordering)
    return rows[:limit] if limit else rows


def _listed_from_refs(repo: Repo, name: str | None, alias: str | None, tag: str | None,
                      every_version: bool) -> builtins.list[ModelVersion]:
    """The versions `list_versions` picks, read from the refs (one model, or every version of each)."""
    refs = repo.refs(KIND)
    names = [check_name(name)] if name else refs.names()
    if name and not refs.version_numbers(name):
        raise NotFoundError(f"no model named {name!r} in this store (see `dvx model list`)")
    rows: list[ModelVersion] = []
    for model in names:
        aliases = _aliases_by_version(repo, model)
        numbers = refs.version_numbers(model)
        if not numbers:
            continue
        if alias is not None:
            pointer = refs.get_tag(model, alias)
            picked = [pointer.version] if pointer is not None and pointer.version is not None else []
        elif tag is not None or every_version:
            picked = numbers
        else:
            picked = numbers[-1:]
        for number in picked:
            notes = refs.get_annotations(model, number)
            if tag is not None and tag not in notes.tags:
                continue
            rows.append(model_version(repo, refs.get_version(model, number), aliases.get(number, []), notes))
    return rows


def _listed_from_catalog(repo: Repo, alias: str | None) -> builtins.list[ModelVersion]:
    """The latest version of each model (or the one its `alias` points at), from the name catalog: a
    fixed number of store requests however many models there are."""
    rows = []
    for entry in repo.refs(KIND).catalog.entries().values():
        number = entry.latest if alias is None else entry.pointers.get(alias)
        if number is None:
            continue
        rows.append(model_version(repo, entry.record(number), entry.pointers_at(number),
                                  entry.notes.get(str(number)) or _NO_NOTES))
    return rows


def _sorted(rows: builtins.list[ModelVersion], key: str, descending: bool) -> builtins.list[ModelVersion]:
    if key in SORT_KEYS:
        return sorted(rows, key=lambda v: (getattr(v, key), v.name, v.version), reverse=descending)
    present = [v for v in rows if isinstance(v.metrics.get(key), (int, float))]
    missing = [v for v in rows if not isinstance(v.metrics.get(key), (int, float))]
    if not present:
        raise NotFoundError(f"no listed model version has a metric {key!r}")
    present.sort(key=lambda v: (v.metrics[key], v.name, v.version), reverse=descending)
    return present + missing


def get(repo: Repo, ref: str, dest: str | os.PathLike[str] | None = None, *,
        progress: ProgressFactory = no_progress) -> FetchedModel:
    from dvx.api import reading

    record = resolve(repo, ref)
    # By number, so an alias moving meanwhile can't give files of one version and the record of another.
    path = reading.get(repo, f"{record.name}@v{record.version}", dest, kind=KIND, progress=progress)
    return FetchedModel(path, model_version(repo, record))


# -- writing -------------------------------------------------------------------------------------
def register(repo: Repo, name: str, paths: Sequence[str | os.PathLike[str]], *, datasets: Sequence[str] = (),
             metrics: Mapping[str, Any] | Sequence[str] | None = None,
             params: Mapping[str, Any] | Sequence[str] | None = None,
             metadata: Mapping[str, Any] | Sequence[str] | None = None, framework: str | None = None,
             message: str = "", aliases: Sequence[str] = (), tags: Sequence[str] = (), parent: str | None = None,
             force: bool = False, exclude: Sequence[str] = (),
             progress: ProgressFactory = no_progress) -> ModelVersion:
    """Store the files at `paths` as the next version of model `name` (a folder's contents go to the
    version's root, a file by its name) and record what it was trained on.

    The parent (for lineage and for "what did this version add") is the model's latest version unless
    `parent` names another model version. Only chunks the store lacks are written."""
    check_name(name)
    if not paths:
        raise UsageError("nothing to register: give at least one file or folder")
    metrics_ = parse_pairs(metrics, "metric", numeric=True)
    params_ = parse_pairs(params, "param")
    metadata_ = parse_pairs(metadata, "metadata")
    if framework:
        metadata_["framework"] = framework
    for alias in aliases:
        check_tag(alias)
    for label in tags:
        check_tag(label)
    refs = repo.refs(KIND)
    repo.chunk_store(create=True)
    inputs = [repo.resolve(ref, "dataset") for ref in datasets]
    if parent is not None:
        parents = [repo.resolve(parent if "@" in parent else f"{name}@{parent}", KIND)]
    else:
        latest = refs.latest(name)
        parents = [latest] if latest else []
    _check_aliases_movable(repo, name, aliases, force)

    started = time.time()
    scanned = {}
    for path in paths:
        for item in scan(path, exclude=exclude, skip=repo.settings.never_swept()):
            if item.path in scanned:
                raise UsageError(f"two of the given paths both give {item.path}; register them under "
                                 "distinct names")
            scanned[item.path] = item
    if not scanned:
        raise UsageError(f"nothing to register: {' '.join(map(str, paths))} holds no files")
    base = {}
    for record in parents:
        base.update(repo.read_manifest(record.manifest).by_path())
    # The packs stored here are unreferenced until the version record exists: announce them to gc.
    lease = Lease.new(repo.store, purpose="register", by=repo.settings.author, kind=KIND, name=name)
    try:
        covered = parent_pack_keys(repo, KIND, [r.ref for r in parents], [r.manifest for r in parents])
        entries, _ = store_scanned(repo, list(scanned.values()), base, progress, started, lease=lease,
                                   covered=covered)
        manifest = Manifest(kind=KIND, name=name, parents=[r.manifest for r in parents], created=now_iso(),
                            author=repo.settings.author, message=message, metadata=metadata_, files=entries)
        record = write_version(repo, manifest, base, [r.ref for r in parents], [r.manifest for r in inputs],
                               [r.ref for r in inputs], lease=lease)
    finally:
        lease.release()
    if metrics_ or params_ or metadata_ or tags:
        def initial(notes: Annotations) -> dict:
            notes.metrics.update(metrics_)
            notes.params.update(params_)
            notes.metadata.update(metadata_)
            notes.tags = sorted(set(notes.tags) | set(tags))
            return {k: v for k, v in (("metrics", metrics_), ("params", params_), ("metadata", metadata_),
                                      ("tags_added", sorted(set(tags)))) if v}

        refs.update_annotations(name, record.version, initial, by=repo.settings.author)
    for alias in aliases:
        refs.set_tag(name, alias, record, by=repo.settings.author, move=True, force=force,
                     message=message or f"registered {record.ref}")
    return model_version(repo, record)


def _check_aliases_movable(repo: Repo, name: str, aliases: Sequence[str], force: bool) -> None:
    """Refuse before anything is stored when a protected alias would have to move."""
    if force:
        return
    for alias in aliases:
        current = repo.refs(KIND).get_tag(name, alias)
        if current is not None and current.protected and current.version is not None:
            raise ConflictError(f"alias {alias!r} of {name} is protected (at {name}@v{current.version}); "
                                "use --force to move it")


def set_alias(repo: Repo, ref: str, alias: str, *, delete: bool = False, force: bool = False,
              protect: bool | None = None, message: str = "") -> AliasHistory:
    """Point `alias` at the version `ref` names (moving it from where it was), or delete it."""
    parsed = parse_ref(ref)
    refs = repo.refs(KIND)
    if delete:
        if parsed.selector is not None:
            raise UsageError(f"to delete an alias give the model name only: dvx model alias {parsed.name} "
                             f"{alias} --delete")
        if not refs.version_numbers(parsed.name):
            raise NotFoundError(f"no model named {parsed.name!r} in this store (see `dvx model list`)")
        target = None
    else:
        if parsed.selector is None:
            raise UsageError(f"say which version: dvx model alias {parsed.name}@vN {alias}")
        target = refs.resolve(parsed)
    record = refs.set_tag(parsed.name, alias, target, by=repo.settings.author, force=force, move=True,
                          protect=protect, message=message)
    return AliasHistory(alias, record.version, record.protected, list(record.history))


def tag(repo: Repo, ref: str, label: str, *, delete: bool = False) -> ModelVersion:
    """Add (or remove) a free tag on one version; many versions may carry the same tag."""
    check_tag(label)
    record = resolve(repo, ref)

    def change(notes: Annotations) -> dict:
        if delete:
            if label not in notes.tags:
                raise NotFoundError(f"{record.ref} has no tag {label!r}")
            notes.tags.remove(label)
            return {"tags_removed": [label]}
        if label in notes.tags:
            return {}
        notes.tags = sorted([*notes.tags, label])
        return {"tags_added": [label]}

    notes = repo.refs(KIND).update_annotations(record.name, record.version, change, by=repo.settings.author)
    return model_version(repo, record, annotations=notes)


def update(repo: Repo, ref: str, *, metrics: Mapping[str, Any] | Sequence[str] | None = None,
           params: Mapping[str, Any] | Sequence[str] | None = None,
           metadata: Mapping[str, Any] | Sequence[str] | None = None) -> ModelVersion:
    """Record or change metrics, params and metadata of a version; its content id stays the same."""
    metrics_ = parse_pairs(metrics, "metric", numeric=True)
    params_ = parse_pairs(params, "param")
    metadata_ = parse_pairs(metadata, "metadata")
    if not (metrics_ or params_ or metadata_):
        raise UsageError("nothing to update: give --metric, --param or --meta KEY=VALUE")
    record = resolve(repo, ref)

    def change(notes: Annotations) -> dict:
        summary = {}
        for field_name, values in (("metrics", metrics_), ("params", params_), ("metadata", metadata_)):
            current = getattr(notes, field_name)
            changed = {k: v for k, v in values.items() if current.get(k, object()) != v}
            if changed:
                current.update(changed)
                summary[field_name] = changed
        return summary

    notes = repo.refs(KIND).update_annotations(record.name, record.version, change, by=repo.settings.author)
    return model_version(repo, record, annotations=notes)


def names(repo: Repo) -> builtins.list[str]:
    return repo.refs(KIND).names()


# -- the Python face ----------------------------------------------------------------------------
class Model:
    """The registry from Python: `dvx.Model.register(...)`, `dvx.Model.get("resnet@production").path`."""

    @staticmethod
    def register(name: str, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                 datasets: Sequence[str] | str = (), metrics: Mapping[str, Any] | Sequence[str] | None = None,
                 params: Mapping[str, Any] | Sequence[str] | None = None,
                 metadata: Mapping[str, Any] | Sequence[str] | None = None,
                 framework: str | None = None, message: str = "", aliases: Sequence[str] | str = (),
                 tags: Sequence[str] | str = (), parent: str | None = None, force: bool = False,
                 exclude: Sequence[str] = (), store: str | None = None,
                 progress: ProgressFactory = no_progress) -> ModelVersion:
        """Register files (e.g. a checkpoint just saved by a training script) as the next version."""
        with _repo(store) as repo:
            return register(repo, name, _listed(paths), datasets=_listed(datasets), metrics=metrics,
                            params=params, metadata=metadata, framework=framework, message=message,
                            aliases=_listed(aliases), tags=_listed(tags), parent=parent, force=force,
                            exclude=exclude, progress=progress)

    @staticmethod
    def get(ref: str, dest: str | os.PathLike[str] | None = None, *, store: str | None = None,
            progress: ProgressFactory = no_progress) -> FetchedModel:
        """The files of a version: `.path` is a read-only cached copy (or `dest`, writable)."""
        with _repo(store) as repo:
            return get(repo, ref, dest, progress=progress)

    @staticmethod
    def show(ref: str, *, store: str | None = None) -> dict:
        with _repo(store) as repo:
            return show(repo, ref)

    @staticmethod
    def version(ref: str, *, store: str | None = None) -> ModelVersion:
        with _repo(store) as repo:
            return model_version(repo, resolve(repo, ref))

    @staticmethod
    def list(name: str | None = None, *, alias: str | None = None, tag: str | None = None,
             sort: str | None = None, all_versions: bool = False, limit: int | None = None,
             store: str | None = None) -> builtins.list[ModelVersion]:
        with _repo(store) as repo:
            return list_versions(repo, name, alias=alias, tag=tag, sort=sort, all_versions=all_versions,
                                 limit=limit)

    @staticmethod
    def best(name: str, metric: str, *, mode: str = "max", store: str | None = None) -> ModelVersion:
        """The version of `name` with the highest (mode="max") or lowest ("min") value of `metric`."""
        if mode not in ("max", "min"):
            raise UsageError(f"invalid mode {mode!r}: 'max' or 'min'")
        rows = Model.list(name, sort=f"{metric}:{'desc' if mode == 'max' else 'asc'}", all_versions=True,
                          store=store)
        if metric not in rows[0].metrics:
            raise NotFoundError(f"no version of {name} has a metric {metric!r}")
        return rows[0]

    @staticmethod
    def log(name: str, *, store: str | None = None) -> tuple[builtins.list[ModelVersion],
                                                             builtins.list[AliasHistory]]:
        with _repo(store) as repo:
            return log(repo, name)

    @staticmethod
    def alias(ref: str, alias: str, *, delete: bool = False, force: bool = False, protect: bool | None = None,
              message: str = "", store: str | None = None) -> AliasHistory:
        with _repo(store) as repo:
            return set_alias(repo, ref, alias, delete=delete, force=force, protect=protect, message=message)

    @staticmethod
    def tag(ref: str, tag_name: str, *, delete: bool = False, store: str | None = None) -> ModelVersion:
        with _repo(store) as repo:
            return tag(repo, ref, tag_name, delete=delete)

    @staticmethod
    def update(ref: str, *, metrics: Mapping[str, Any] | Sequence[str] | None = None,
               params: Mapping[str, Any] | Sequence[str] | None = None,
               metadata: Mapping[str, Any] | Sequence[str] | None = None, store: str | None = None) -> ModelVersion:
        with _repo(store) as repo:
            return update(repo, ref, metrics=metrics, params=params, metadata=metadata)

    @staticmethod
    def names(*, store: str | None = None) -> builtins.list[str]:
        with _repo(store) as repo:
            return names(repo)


class _repo:
    """`with _repo(store) as repo:` — a Repo closed afterwards."""

    def __init__(self, store: str | None):
        self.repo = Repo(store=store)

    def __enter__(self) -> Repo:
        return self.repo

    def __exit__(self, *exc) -> None:
        self.repo.close()


def _listed(value) -> builtins.list:
    if value is None:
        return []
    return [value] if isinstance(value, (str, os.PathLike)) else builtins.list(value)
