"""The project's pinned versions on this machine: `dvx pull` materialises them, `dvx status` reports drift.

Drift is anything that makes the code not see exactly the pinned data: a pinned version missing from
the store, a pinned folder not pulled, or files in it missing, modified or extra. An alias that has
moved since the pin was written is reported too, but is not drift (the pin is what the code uses).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from dvx.api.pinning import Pin, load_pins, resolve_pin
from dvx.api.progress import ProgressFactory, no_progress
from dvx.api.repo import Repo
from dvx.errors import DvxError, NotFoundError, UsageError
from dvx.manifests import CachedContent, FileEntry, ScannedFile, scan

_HASH_BLOCK = 8 << 20


@dataclass
class PullResult:
    pin: Pin
    path: Path  # the pinned folder, or the read-only cached copy for a pin without one
    files: int
    bytes: int

    def to_dict(self) -> dict:
        return {**self.pin.to_dict(), "path": str(self.path), "files": self.files, "bytes": self.bytes}


@dataclass
class PinStatus:
    pin: Pin
    store: str = "ok"  # ok | missing
    store_error: str | None = None
    folder: str = "none"  # none (no path) | absent | clean | drift
    missing: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    source_now: str | None = None  # NAME@vN the pin's source (an alias/tag) points at now, if different

    @property
    def clean(self) -> bool:
        return self.store == "ok" and self.folder in ("none", "clean")

    def to_dict(self) -> dict:
        return {**self.pin.to_dict(), "clean": self.clean, "store": self.store, "store_error": self.store_error,
                "folder": self.folder, "missing": self.missing, "modified": self.modified, "extra": self.extra,
                "source_now": self.source_now}


def _selected(repo: Repo, names: Sequence[str]) -> list[Pin]:
    pins = load_pins(repo.settings)
    if repo.settings.project_dir is None:
        raise UsageError("no project here: pins live in dvx.toml (run `dvx init`, then `dvx pin NAME@REF`)")
    if not names:
        return pins
    chosen = [p for p in pins if p.name in names]
    unknown = sorted(set(names) - {p.name for p in chosen})
    if unknown:
        raise NotFoundError(f"not pinned in {repo.settings.project_file}: {', '.join(unknown)}")
    return chosen


def pull(repo: Repo, names: Sequence[str] = (), *, progress: ProgressFactory = no_progress) -> list[PullResult]:
    """Materialise every pin (or those named): into its `path` as a writable copy (files already there
    and intact are kept), else as a read-only cached copy."""
    from dvx.api import reading

    results = []
    for pin in _selected(repo, names):
        record = resolve_pin(repo, pin)
        ref = f"{record.name}@v{record.version}"
        folder = pin.folder(repo.settings)
        path = reading.get(repo, ref, folder, kind=pin.kind, progress=progress)
        results.append(PullResult(pin, path, record.files, record.bytes))
    return results


def status(repo: Repo, names: Sequence[str] = ()) -> list[PinStatus]:
    """Each pin against the store and against its folder (see the module docstring)."""
    out = []
    for pin in _selected(repo, names):
        state = PinStatus(pin)
        out.append(state)
        try:
            record = resolve_pin(repo, pin)
            files = repo.read_manifest(record.manifest).files
        except DvxError as exc:
            state.store, state.store_error = "missing", str(exc)
            files = None
        if pin.source != pin.version:
            try:
                now = repo.resolve(pin.source, pin.kind)
                if now.manifest != pin.id:
                    state.source_now = now.ref
            except DvxError:
                pass
        folder = pin.folder(repo.settings)
        if folder is None:
            continue
        if not folder.is_dir():
            state.folder = "absent"
            continue
        if files is None:
            state.folder = "drift"
            continue
        _compare_folder(repo, folder, files, state)
        state.folder = "drift" if state.missing or state.modified or state.extra else "clean"
    return out


def _compare_folder(repo: Repo, folder: Path, files: list[FileEntry], state: PinStatus) -> None:
    """Missing, modified and extra files of `folder` against a manifest; unchanged files are recognised
    by the stat cache, the others are hashed once and remembered."""
    started = time.time()
    expected = {f.path: f for f in files}
    scanned = {f.path: f for f in scan(folder)}
    state.missing = sorted(p for p in expected if p not in scanned)
    state.extra = sorted(p for p in scanned if p not in expected)
    candidates = [scanned[p] for p in expected if p in scanned]
    cache = repo.stat_cache()
    hits = cache.lookup(candidates)
    confirmed: list[tuple[ScannedFile, CachedContent]] = []
    for local in candidates:
        entry = expected[local.path]
        if entry.link is not None or local.link is not None:
            if entry.link != local.link:
                state.modified.append(local.path)
            continue
        if local.size != entry.size or (entry.executable != local.executable and os.name != "nt"):
            state.modified.append(local.path)
            continue
        hit = hits.get(local.local)
        digest = hit.digest if hit is not None else _digest(local.local)
        if digest != entry.digest:
            state.modified.append(local.path)
        elif hit is None:
            confirmed.append((local, CachedContent(entry.size, entry.digest, entry.chunks)))
    cache.record(confirmed, since=started)
    state.modified.sort()


def _digest(path: str) -> str | None:
    hasher = xxhash.xxh3_128()
    try:
        with open(path, "rb", buffering=0) as f:
            while block := f.read(_HASH_BLOCK):
                hasher.update(block)
    except OSError:
        return None
    return hasher.hexdigest()
