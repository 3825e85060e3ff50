"""The porcelain: what `import dvx` offers and what the CLI calls. Every function takes `store=`
(a URL); without it the store comes from DVX_STORE, the project's dvx.toml, or the embedded default."""

from __future__ import annotations

import builtins
import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dvx.api.config import Settings, init_project, load_settings
from dvx.api.datasets import Dataset, Drafts
from dvx.api.model import AddResult, CommitResult, FileInfo, Version
from dvx.api.progress import ProgressFactory, no_progress
from dvx.api.repo import Repo
from dvx.manifests import Change, parse_part, select_files, summarise

if TYPE_CHECKING:
    from dvx.api.checks import CheckReport
    from dvx.api.garbage import DeleteResult, GcReport
    from dvx.api.integrity import VerifyReport
    from dvx.api.lineage_graph import LineageGraph
    from dvx.api.pinning import Pin
    from dvx.api.transfer import TransferResult
    from dvx.api.workspace import PinStatus, PullResult

# Loaded on first use, so that commands which don't need them (add, commit, get) start fast.
_LAZY = {
    "CheckReport": "checks", "CheckResult": "checks",
    "LineageEdge": "lineage_graph", "LineageGraph": "lineage_graph", "LineageNode": "lineage_graph",
    "FetchedModel": "models", "Model": "models", "ModelVersion": "models",
    "Pin": "pinning",
    "TransferResult": "transfer",
    "SharedDraft": "shared_drafts",
    "DeleteResult": "garbage", "GcReport": "garbage",
    "PinStatus": "workspace", "PullResult": "workspace",
    "Problem": "integrity", "VerifyReport": "integrity", "VersionCheck": "integrity",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"dvx.api.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'dvx.api' has no attribute {name!r}")


__all__ = [
    "AddResult", "Change", "CheckReport", "CheckResult", "CommitResult", "Dataset", "DeleteResult", "FetchedModel", "FileInfo", "GcReport", "LineageEdge", "LineageGraph",
    "LineageNode", "Model", "ModelVersion", "Pin", "PinStatus", "Problem", "PullResult", "Repo", "SharedDraft", "VerifyReport", "Version", "VersionCheck", "check", "datasets", "diff",
    "drafts", "fetch", "files", "gc", "get", "init", "lineage", "log", "ls", "open", "pin", "pins", "pull", "push", "show", "status", "store_info", "summarise", "tag", "verify", "version",
]


def _reading():
    """Loaded on first use: commands that only write (create, add, commit) never need it."""
    from dvx.api import reading

    return reading


def _globs(glob: Sequence[str] | str | None) -> builtins.list[str]:
    return [glob] if isinstance(glob, str) else builtins.list(glob or ())


def _part(part: tuple[int, int] | str | None) -> tuple[int, int] | None:
    return parse_part(part) if isinstance(part, str) else part


def get(ref: str, dest: str | os.PathLike[str] | None = None, glob: Sequence[str] | str | None = None,
        part: tuple[int, int] | str | None = None, link: str = "copy", *, store: str | None = None,
        progress: ProgressFactory = no_progress, shuffle_seed: int | None = None) -> Path:
    """Fetch a version: a read-only cached copy (no `dest`) or a writable copy in `dest`.
    `shuffle_seed` (with `part`) picks the seeded split of `dvx.files(..., shuffle_seed=...)`."""
    repo = Repo(store=store)
    try:
        return _reading().get(repo, ref, dest, glob=_globs(glob), part=_part(part), link=link, progress=progress,
                              shuffle_seed=shuffle_seed)
    finally:
        repo.close()


def open(ref_path: str, mode: str = "rb", encoding: str | None = None, *, store: str | None = None):
    """Open one file of a version for reading: `dvx.open("cifar@v4/labels.csv", "r")`."""
    return _reading().open_file(Repo(store=store), ref_path, mode, encoding)


def files(ref: str, glob: Sequence[str] | str | None = None, part: tuple[int, int] | str | None = None, *,
          store: str | None = None, shuffle_seed: int | None = None) -> builtins.list[FileInfo]:
    """The files of a version (optionally a glob selection or one worker's part). Sorted by path;
    with `shuffle_seed`, split by that seed and in its shuffled order (pass the epoch to reshuffle)."""
    resolved = _reading().resolve(Repo(store=store), ref)
    globs, part = _globs(glob), _part(part)
    candidates = resolved.selected(globs) if globs and part is None else resolved.manifest.files
    return [FileInfo(f.path, f.size, f.digest, f.executable, f.link)
            for f in select_files(candidates, globs, part, shuffle_seed)]


def version(ref: str, *, store: str | None = None) -> Version:
    repo = Repo(store=store)
    return _reading().version_of(repo, _reading().resolve_record(repo, ref))


def ls(ref: str, path: str = "", recursive: bool = False, *, store: str | None = None) -> builtins.list[dict]:
    return _reading().ls(Repo(store=store), ref, path, recursive)


def diff(ref_a: str, ref_b: str, *, store: str | None = None) -> builtins.list[Change]:
    return _reading().diff(Repo(store=store), ref_a, ref_b)


def log(name: str, *, store: str | None = None) -> builtins.list[Version]:
    return _reading().log(Repo(store=store), name)


def datasets(*, store: str | None = None) -> builtins.list[dict]:
    return _reading().list_names(Repo(store=store))


def drafts(*, store: str | None = None) -> builtins.list[str]:
    return Drafts(Repo(store=store)).names()


def show(ref: str, *, store: str | None = None) -> dict:
    return _reading().show(Repo(store=store), ref)


def tag(ref: str, tag_name: str, force: bool = False, delete: bool = False, *, store: str | None = None) -> Version:
    return _reading().tag(Repo(store=store), ref, tag_name, force=force, delete=delete)


def push(refs: Sequence[str] | str, to: str, *, kind: str = "dataset", force_tags: bool = False,
         jobs: int | None = None, store: str | None = None, progress: ProgressFactory = no_progress) -> TransferResult:
    """Copy versions (with their lineage, data and tags; for models also aliases and annotations) from
    the active store to `to` (a URL or a store named in dvx.toml). Only packs `to` lacks are sent."""
    return _transfer(refs, store, to, push=True, kind=kind, force_tags=force_tags, jobs=jobs, progress=progress)


def fetch(refs: Sequence[str] | str, from_: str, *, kind: str = "dataset", force_tags: bool = False,
          jobs: int | None = None, store: str | None = None, progress: ProgressFactory = no_progress) -> TransferResult:
    """Copy versions (with their lineage, data and tags; for models also aliases and annotations) from
    `from_` into the active store."""
    return _transfer(refs, store, from_, push=False, kind=kind, force_tags=force_tags, jobs=jobs, progress=progress)


def _transfer(refs, store, other, *, push, kind, force_tags, jobs, progress) -> TransferResult:
    from dvx.api.transfer import copy_versions

    here = Repo(store=store)
    there = Repo.other(here.settings, other)
    source, dest = (here, there) if push else (there, here)
    try:
        return copy_versions(source, dest, [refs] if isinstance(refs, str) else builtins.list(refs), kind=kind,
                             force_tags=force_tags, jobs=jobs, progress=progress)
    finally:
        here.close()
        there.close()


def lineage(ref: str, kind: str | None = None, *, upstream: bool = True, downstream: bool = True,
            depth: int | None = None, store: str | None = None) -> LineageGraph:
    """The versions `ref` was made from (upstream) and the versions made from it (downstream)."""
    from dvx.api.lineage_graph import lineage as build

    repo = Repo(store=store)
    try:
        return build(repo, ref, kind, upstream=upstream, downstream=downstream, depth=depth)
    finally:
        repo.close()


def pin(ref: str, kind: str = "dataset", path: str | None = None, *, store: str | None = None) -> Pin:
    """Resolve `ref` (e.g. an alias) once and pin that exact version in the project's dvx.toml."""
    from dvx.api.pinning import pin as write_pin

    repo = Repo(store=store)
    try:
        return write_pin(repo, ref, kind, path)
    finally:
        repo.close()


def pins(*, store: str | None = None) -> builtins.list[Pin]:
    """The project's pins (empty outside a project)."""
    from dvx.api.pinning import load_pins

    return load_pins(load_settings(store))


def pull(names: Sequence[str] = (), *, store: str | None = None,
         progress: ProgressFactory = no_progress) -> builtins.list[PullResult]:
    """Materialise the project's pins (or those named) into their folders."""
    from dvx.api import workspace

    repo = Repo(store=store)
    try:
        return workspace.pull(repo, names, progress=progress)
    finally:
        repo.close()


def status(names: Sequence[str] = (), *, store: str | None = None) -> builtins.list[PinStatus]:
    """Each pin against the store and its folder: missing, modified and extra files."""
    from dvx.api import workspace

    repo = Repo(store=store)
    try:
        return workspace.status(repo, names)
    finally:
        repo.close()


def check(names: Sequence[str] | str = (), *, store: str | None = None) -> CheckReport:
    """Check the project's pinned versions (all with an expect table, or `names`) against their expectations."""
    from dvx.api import checks

    repo = Repo(store=store)
    try:
        return checks.run_checks(repo, [names] if isinstance(names, str) else names)
    finally:
        repo.close()


def verify(refs: Sequence[str] | str = (), *, kind: str | None = None, mode: str = "exists",
           sample_percent: float | None = None, seed: int | None = None, store: str | None = None,
           progress: ProgressFactory = no_progress) -> VerifyReport:
    """Check that versions (default: the project's pins) are intact in the store. `mode` "exists" checks
    manifests and packs without reading data, "full" re-hashes every chunk and file, "sample" a random
    `sample_percent` of the chunks. Damage is reported in the result (`.ok`, `.problems`), not raised."""
    from dvx.api.integrity import verify as run_verify

    repo = Repo(store=store)
    try:
        return run_verify(repo, [refs] if isinstance(refs, str) else builtins.list(refs), kind=kind, mode=mode,
                          sample_percent=sample_percent, seed=seed, progress=progress)
    finally:
        repo.close()


def gc(*, grace: float | str = "24h", dry_run: bool = False, now: float | None = None,
       store: str | None = None) -> GcReport:
    """Delete stored data no version references, in two runs at least `grace` apart (docs/reliability.md).
    `now` (seconds since the epoch) replaces the clock, for tests."""
    from dvx.api.garbage import collect_garbage

    repo = Repo(store=store)
    try:
        return collect_garbage(repo, grace=grace, dry_run=dry_run, now=now)
    finally:
        repo.close()


def delete(ref: str, *, kind: str = "dataset", all_versions: bool = False, force: bool = False,
           message: str = "", store: str | None = None) -> DeleteResult:
    """Delete a version (all_versions: every version of NAME); ConflictError while others depend on it, unless force."""
    from dvx.api.garbage import delete_versions

    repo = Repo(store=store)
    try:
        return delete_versions(repo, ref, kind=kind, all_versions=all_versions, force=force, message=message)
    finally:
        repo.close()


def init(folder: str | os.PathLike[str] = ".", store: str | None = None) -> Path:
    """Make `folder` a dvx project: writes dvx.toml (optionally pinning a store) and .dvx/."""
    return init_project(folder, store)


def store_info(*, store: str | None = None) -> dict:
    """Which store is active and why, and where local state and caches live."""
    settings: Settings = load_settings(store)
    repo = Repo(settings)
    exists = repo.chunk_store_exists()
    info = {
        "url": settings.store_url,
        "source": settings.store_source,
        "initialised": exists,
        "project": str(settings.project_dir) if settings.project_dir else None,
        "state_dir": str(settings.state_dir),
        "cache_dir": str(settings.cache_dir),
        "cache_max_bytes": settings.cache_max_bytes,
    }
    if exists:
        config = repo.chunk_store().config
        info.update({"store_id": config.store_id, "format_version": config.format_version,
                     "chunker": {"min_size": config.chunker.min_size, "avg_size": config.chunker.avg_size,
                                 "max_size": config.chunker.max_size},
                     "pack_size": config.pack_size})
    return info
