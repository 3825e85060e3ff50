"""Integrity verification of stored versions (`dvx verify`), with a damage report per file.

Three depths, from cheapest to most thorough:

- ``exists`` (default): no chunk data is downloaded. The version record resolves, the manifest is
  present and intact (its id is its hash), and every pack the manifest uses exists and is long enough
  for the furthest byte the version needs from it. One metadata request per distinct pack, in parallel.
  Finds deleted or truncated packs and damaged or missing manifests; cannot see a flipped byte.
- ``full``: the ``exists`` checks, then every chunk of every file is read and verified on its own (as
  every read does: decoded within its recorded size and re-hashed), and each file's digest is recomputed.
  A window of files (WINDOW_BYTES of content) at a time: its distinct chunks are read pack by pack in
  offset order, near ones merged into one range request, `jobs` requests in flight; a large file spans
  several windows and is hashed as a stream. Memory stays bounded whatever the version's size.
- ``sample``: the ``exists`` checks, then a random share of the version's distinct chunks is read and
  re-hashed. The choice depends only on the seed and the version, so a seed reproduces it.

Damage never stops the run: every problem becomes a `Problem` naming the version and, when files are
affected, each file (a missing pack or a damaged chunk is reported for every file that needs it).
"""

from __future__ import annotations

import math
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby, islice

import msgspec
import xxhash

from dvx.api.pinning import Pin, load_pins, resolve_pin
from dvx.api.progress import ProgressFactory, no_progress
from dvx.api.repo import Repo
from dvx.chunks import ChunkRef
from dvx.chunks.pack import pack_key
from dvx.chunks.store import MERGE_GAP, verify_chunk
from dvx.errors import IntegrityError, NotFoundError, StoreError, UsageError
from dvx.manifests import FileEntry
from dvx.refs import VersionRecord, parse_ref
from dvx.refs.store import VersionDeletedError

MODES = ("exists", "full", "sample")
KINDS = ("dataset", "model")
# full mode: raw file content held in memory at once.
WINDOW_BYTES = 64 << 20
# One range request asks for at most this many bytes of one pack; `jobs` of them are in flight at once.
READ_BATCH = 8 << 20
_DEFAULT_JOBS = 8


def short(object_id: str) -> str:
    """The first 12 hex digits of an id, for messages (the JSON output carries full ids)."""
    return object_id[:12] + "…" if len(object_id) > 12 else object_id


@dataclass
class Problem:
    """One thing found wrong. `path` is the dataset path of an affected file, None for a problem of the
    version itself (such as its manifest). `pack` / `chunk` are the full ids involved, when there are."""

    kind: str
    name: str
    version: str  # NAME@vN, or the reference as given when it could not be resolved
    path: str | None
    what: str
    pack: str | None = None
    chunk: str | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "version": self.version, "path": self.path,
                "what": self.what, "pack": self.pack, "chunk": self.chunk}


@dataclass
class VersionCheck:
    """What was checked of one version and what was found."""

    kind: str
    name: str
    version: str  # NAME@vN
    id: str | None  # manifest id (None when the version record itself could not be read)
    mode: str
    files: int = 0  # regular files in the version (links have no content)
    chunks: int = 0  # distinct chunks read and re-hashed (0 in exists mode)
    chunks_total: int = 0  # distinct chunks the version uses
    packs: int = 0  # distinct packs the version uses
    bytes_read: int = 0  # stored (compressed) bytes of the chunks read
    seconds: float = 0.0
    sample_digest: str | None = None  # sample mode: xxh3-128 of the sorted ids of the chunks checked
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def damaged_files(self) -> list[str]:
        return list(dict.fromkeys(p.path for p in self.problems if p.path is not None))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "version": self.version, "id": self.id, "mode": self.mode,
                "ok": self.ok, "files": self.files, "damaged_files": len(self.damaged_files),
                "chunks": self.chunks, "chunks_total": self.chunks_total, "packs": self.packs,
                "bytes_read": self.bytes_read, "seconds": round(self.seconds, 3),
                "sample_digest": self.sample_digest, "problems": len(self.problems)}


@dataclass
class VerifyReport:
    mode: str
    versions: list[VersionCheck]
    sample_percent: float | None = None
    seed: int | None = None  # sample mode: the seed used (chosen at random when none was given)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.versions)

    @property
    def problems(self) -> list[Problem]:
        return [p for v in self.versions for p in v.problems]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "mode": self.mode, "sample_percent": self.sample_percent, "seed": self.seed,
                "versions": [v.to_dict() for v in self.versions],
                "problems": [p.to_dict() for p in self.problems]}


@dataclass
class _Target:
    kind: str
    name: str
    label: str
    record: VersionRecord | None = None
    error: str | None = None  # why the version record could not be had (a version-level problem)


def verify(repo: Repo, refs: Sequence[str], *, kind: str | None = None, mode: str = "exists",
           sample_percent: float | None = None, seed: int | None = None,
           progress: ProgressFactory = no_progress) -> VerifyReport:
    """Check the versions `refs` name (default: every pin of the project) at depth `mode`.

    `kind` None takes a dataset of that name if there is one, else a model (pins carry their own kind).
    Unknown references raise NotFoundError before anything is checked; damage never raises, it is
    reported in the result (`report.ok` is False)."""
    if mode not in MODES:
        raise UsageError(f"invalid verify mode {mode!r}: use one of {', '.join(MODES)}")
    if kind is not None and kind not in KINDS:
        raise UsageError(f"invalid kind {kind!r}: use dataset or model")
    if mode == "sample":
        if sample_percent is None or not 0 < sample_percent <= 100:
            raise UsageError(f"invalid sample percentage {sample_percent!r}: give a number above 0 and at most 100")
        if seed is None:
            seed = secrets.randbelow(1 << 32)
    elif sample_percent is not None or seed is not None:
        raise UsageError("a sample percentage and a seed only apply to sample mode")
    targets = _targets(repo, refs, kind)
    jobs = repo.settings.jobs or _DEFAULT_JOBS
    with ThreadPoolExecutor(jobs, thread_name_prefix="dvx-verify") as pool:
        checker = _Checker(repo, pool, jobs, mode, sample_percent, seed, progress)
        versions = [checker.check(target) for target in targets]
    return VerifyReport(mode, versions, sample_percent, seed)


# -- what to check --------------------------------------------------------------------------------------
def _targets(repo: Repo, refs: Sequence[str], kind: str | None) -> list[_Target]:
    """Resolve everything first, so an unknown reference fails (exit 3) before any work is done."""
    targets: list[_Target] = []
    if not refs:
        if repo.settings.project_dir is None:
            raise UsageError("nothing to verify: name versions (dvx verify NAME@vN …), or run inside a project "
                             "that pins some (`dvx init`, then `dvx pin NAME@vN`)")
        pins = [p for p in load_pins(repo.settings) if kind is None or p.kind == kind]
        if not pins:
            what = f"no {kind} is" if kind else "nothing is"
            raise UsageError(f"{what} pinned in {repo.settings.project_file}: name versions to verify, or pin "
                             "some with `dvx pin NAME@vN`")
        targets = [_pin_target(repo, pin) for pin in pins]
    else:
        for ref in refs:
            target_kind = _kind_of(repo, parse_ref(ref).name, kind)
            targets.append(_ref_target(repo, ref, target_kind))
    unique: dict[tuple[str, str], _Target] = {}
    for target in targets:
        key = (target.kind, target.record.manifest if target.record else target.label)
        unique.setdefault(key, target)
    return list(unique.values())


def _kind_of(repo: Repo, name: str, kind: str | None) -> str:
    if kind is not None:
        return kind
    for candidate in KINDS:
        if repo.refs(candidate).version_numbers(name):
            return candidate
    for candidate in KINDS:  # only deleted versions: resolving says "was deleted"
        if repo.refs(candidate).all_version_numbers(name):
            return candidate
    for pin in load_pins(repo.settings):
        if pin.name == name:
            return pin.kind
    raise NotFoundError(f"no dataset or model named {name!r} in store {repo.store.url} "
                        "(see `dvx dataset list` and `dvx model list`)")


def _ref_target(repo: Repo, ref: str, kind: str) -> _Target:
    # resolve_record: a bare NAME that the project pins means the pinned version (imported late: see dvx.api)
    from dvx.api.reading import resolve_record

    name = parse_ref(ref).name
    try:
        record = resolve_record(repo, ref, kind)
    except msgspec.MsgspecError as exc:  # a version or tag record that is not valid JSON any more
        return _Target(kind, name, ref, error=f"the version record of {ref} is damaged ({exc})")
    return _Target(kind, record.name, record.ref, record)


def _pin_target(repo: Repo, pin: Pin) -> _Target:
    try:
        record = resolve_pin(repo, pin)
    except VersionDeletedError as exc:
        return _Target(pin.kind, pin.name, pin.version, error=str(exc))
    except NotFoundError:
        return _Target(pin.kind, pin.name, pin.version,
                       error=f"the pinned version (id {short(pin.id)}) is not in this store")
    except msgspec.MsgspecError as exc:
        return _Target(pin.kind, pin.name, pin.version, error=f"the version record is damaged ({exc})")
    return _Target(pin.kind, record.name, record.ref, record)


# -- checking -------------------------------------------------------------------------------------------
class _Checker:
    def __init__(self, repo: Repo, pool: ThreadPoolExecutor, jobs: int, mode: str, sample_percent: float | None,
                 seed: int | None, progress: ProgressFactory):
        self.repo = repo
        self.pool = pool
        self.ahead = jobs  # range requests in flight while reading
        self.mode = mode
        self.sample_percent = sample_percent
        self.seed = seed
        self.progress = progress
        # pack id → its size in bytes, or why its size could not be had. Shared by every version checked.
        self._pack_sizes: dict[str, int | str] = {}

    def check(self, target: _Target) -> VersionCheck:
        started = time.monotonic()
        record = target.record
        result = VersionCheck(target.kind, target.name, target.label, record.manifest if record else None,
                              self.mode)
        try:
            if record is None:
                self._problem(result, None, target.error or "the version record could not be read")
            else:
                self._check_version(result, record)
        finally:
            result.seconds = time.monotonic() - started
        return result

    def _problem(self, result: VersionCheck, path: str | None, what: str, pack: str | None = None,
                 chunk: str | None = None) -> None:
        result.problems.append(Problem(result.kind, result.name, result.version, path, what, pack, chunk))

    def _check_version(self, result: VersionCheck, record: VersionRecord) -> None:
        manifest_id = record.manifest
        try:
            manifest = self.repo.read_manifest(manifest_id)
        except IntegrityError as exc:
            self._problem(result, None, f"manifest {short(manifest_id)} is damaged ({_reason(exc)})")
            return
        except NotFoundError:
            self._problem(result, None, f"manifest {short(manifest_id)} is missing")
            return
        except (StoreError, UsageError) as exc:  # UsageError: a manifest whose paths break the rules
            self._problem(result, None, f"manifest {short(manifest_id)} could not be read ({exc})")
            return
        files = [f for f in manifest.files if f.link is None]
        result.files = len(files)
        needs: dict[str, int] = {}  # pack → the furthest byte the version reads from it
        distinct: dict[ChunkRef, None] = {}
        for entry in files:
            for ref in entry.chunks:
                needs[ref.pack] = max(needs.get(ref.pack, 0), ref.offset + ref.length)
                distinct[ref] = None
        result.packs = len(needs)
        result.chunks_total = len(distinct)
        sizes = self._pack_sizes_of(needs)
        sound = []  # files whose packs are all there and long enough
        for entry in files:
            file_needs: dict[str, int] = {}
            for ref in entry.chunks:
                file_needs[ref.pack] = max(file_needs.get(ref.pack, 0), ref.offset + ref.length)
            intact = True
            for pack, need in file_needs.items():
                size = sizes[pack]
                if isinstance(size, str):
                    self._problem(result, entry.path, size, pack=pack)
                elif size < need:  # only the files that need bytes past the cut are affected
                    self._problem(result, entry.path, f"pack {short(pack)} is truncated (has {size} bytes, "
                                                      f"needs {need})", pack=pack)
                else:
                    continue
                intact = False
            if intact:
                sound.append(entry)
        if self.mode == "full":
            self._full(result, sound)
        elif self.mode == "sample":
            population = sorted((r for r in distinct if isinstance(sizes[r.pack], int)
                                 and r.offset + r.length <= sizes[r.pack]), key=lambda r: (r.id, r.pack, r.offset))
            self._sample(result, files, population, manifest_id)

    # -- exists: one size lookup per pack ---------------------------------------------------------
    def _pack_sizes_of(self, packs: Iterable[str]) -> dict[str, int | str]:
        """pack → its size in bytes, or what is wrong with it (missing, unreadable). Each pack is looked
        up once per run, `jobs` at a time."""
        wanted = list(packs)
        todo = [p for p in wanted if p not in self._pack_sizes]
        for pack, size in zip(todo, self.pool.map(self._pack_size, todo)):
            self._pack_sizes[pack] = size
        return {p: self._pack_sizes[p] for p in wanted}

    def _pack_size(self, pack: str) -> int | str:
        try:
            return self.repo.store.info(pack_key(pack)).size
        except NotFoundError:
            return f"pack {short(pack)} is missing"
        except StoreError as exc:
            return f"pack {short(pack)} could not be checked ({exc})"

    # -- full: every chunk of every file, and every file's digest ---------------------------------
    def _full(self, result: VersionCheck, files: list[FileEntry]) -> None:
        failures: dict[ChunkRef, str] = {}
        checked: set[ChunkRef] = set()
        total = sum(r.length for r in {r: None for f in files for r in f.chunks})
        hashers: dict[int, xxhash.xxh3_128] = {}
        damaged: dict[int, set[ChunkRef]] = {}  # file index → damaged chunks already reported for it
        content: dict[ChunkRef, bytes] = {}  # the current window's chunks
        with self.progress(f"verifying {result.version}", total) as advance:

            def keep(ref: ChunkRef, data: bytes) -> None:
                content[ref] = data
                if ref not in checked:
                    checked.add(ref)
                    advance(ref.length)

            for window in _windows(files, WINDOW_BYTES):
                wanted = {r: None for _, entry, start, stop in window for r in entry.chunks[start:stop]
                          if r not in failures}
                refs = sorted(wanted, key=lambda r: (r.pack, r.offset))
                failures.update(self._read(result, refs, keep))
                checked.update(refs)
                for index, entry, start, stop in window:
                    for ref in entry.chunks[start:stop]:
                        if ref in failures:
                            reported = damaged.setdefault(index, set())
                            if ref not in reported:
                                reported.add(ref)
                                self._problem(result, entry.path, failures[ref], pack=ref.pack, chunk=ref.id)
                        elif index not in damaged:
                            hashers.setdefault(index, xxhash.xxh3_128()).update(content[ref])
                    if stop == len(entry.chunks):
                        hasher = hashers.pop(index, None) or xxhash.xxh3_128()
                        if index not in damaged:
                            self._check_content(result, entry, hasher)
                content.clear()
        result.chunks = len(checked)

    def _check_content(self, result: VersionCheck, entry: FileEntry, hasher: xxhash.xxh3_128) -> None:
        size = sum(r.size for r in entry.chunks)
        if hasher.hexdigest() != entry.digest:
            self._problem(result, entry.path, "content does not match the recorded digest")
        elif size != entry.size:
            self._problem(result, entry.path, f"content is {size} bytes, the manifest records {entry.size}")

    # -- reading ----------------------------------------------------------------------------------
    def _read(self, result: VersionCheck, refs: list[ChunkRef],
              deliver: Callable[[ChunkRef, bytes], None]) -> dict[ChunkRef, str]:
        """Read `refs` (sorted by pack and offset) in merged range requests of one pack each, `jobs` of
        them in flight, and verify every chunk on its own (`verify_chunk`: decode within the recorded
        size, re-hash), handing the good ones to `deliver` in order. Returns the chunks that failed, with
        why: a damaged chunk or a failed request never stops the others."""
        failures: dict[ChunkRef, str] = {}
        batches = _batches(refs, READ_BATCH)
        store = self.repo.store

        def fetch(pack: str, spans: list[_Span]) -> list[bytes] | Exception:
            try:
                return store.read_ranges(pack_key(pack), [(span.start, span.end) for span in spans])
            except (NotFoundError, StoreError) as exc:
                return exc

        window: deque[tuple[str, list[_Span], Future]] = deque(
            (pack, spans, self.pool.submit(fetch, pack, spans)) for pack, spans in islice(batches, self.ahead))
        try:
            while window:
                pack, spans, future = window.popleft()
                outcome = future.result()
                for pack_next, spans_next in islice(batches, 1):
                    window.append((pack_next, spans_next, self.pool.submit(fetch, pack_next, spans_next)))
                if isinstance(outcome, Exception):
                    for span in spans:
                        for ref in span.members:
                            failures[ref] = (f"chunk {short(ref.id)} could not be read from pack "
                                             f"{short(pack)} ({outcome})")
                    continue
                for blob, span in zip(outcome, spans):
                    result.bytes_read += len(blob)
                    for ref in span.members:
                        payload = blob[ref.offset - span.start: ref.offset - span.start + ref.length]
                        try:
                            data = verify_chunk(ref, payload)
                        except IntegrityError as exc:
                            failures[ref] = f"chunk {short(ref.id)} is damaged ({_reason(exc)})"
                            continue
                        deliver(ref, data)
        finally:
            for _pack, _spans, future in window:
                future.cancel()
        return failures

    # -- sample: a seeded random share of the distinct chunks -------------------------------------
    def _sample(self, result: VersionCheck, files: list[FileEntry], population: list[ChunkRef],
                manifest_id: str) -> None:
        assert self.sample_percent is not None
        count = len(population)
        wanted = min(count, max(1, math.ceil(count * self.sample_percent / 100 - 1e-9))) if count else 0
        chosen = random.Random(f"{self.seed}:{manifest_id}").sample(population, wanted)
        result.sample_digest = xxhash.xxh3_128_hexdigest("\n".join(sorted(r.id for r in chosen)).encode())
        result.chunks = len(chosen)
        if not chosen:
            return
        chosen.sort(key=lambda r: (r.pack, r.offset))
        with self.progress(f"verifying {result.version}", sum(r.length for r in chosen)) as advance:
            failures = self._read(result, chosen, lambda ref, data: advance(ref.length))
        if failures:
            for entry in files:
                for ref in dict.fromkeys(r for r in entry.chunks if r in failures):
                    self._problem(result, entry.path, failures[ref], pack=ref.pack, chunk=ref.id)


def _windows(files: list[FileEntry], limit: int) -> Iterator[list[tuple[int, FileEntry, int, int]]]:
    """Consecutive (file index, entry, first chunk, end chunk) segments of at most `limit` raw bytes each;
    a large file is split over several windows, in order, so its digest can be computed as a stream."""
    window: list[tuple[int, FileEntry, int, int]] = []
    size = 0
    for index, entry in enumerate(files):
        start = 0
        for i, ref in enumerate(entry.chunks):
            if size + ref.size > limit and (window or i > start):
                if i > start:
                    window.append((index, entry, start, i))
                    start = i
                yield window
                window, size = [], 0
            size += ref.size
        window.append((index, entry, start, len(entry.chunks)))
    if window:
        yield window


@dataclass
class _Span:
    """One range request: bytes [start, end) of a pack, covering `members` (near chunks merged)."""

    start: int
    end: int
    members: list[ChunkRef]


def _batches(refs: list[ChunkRef], limit: int) -> Iterator[tuple[str, list[_Span]]]:
    """(pack, spans) of at most `limit` bytes each, for `refs` sorted by pack and offset. Chunks less
    than MERGE_GAP apart share a span (reading the gap is cheaper than another request)."""
    for pack, grouped in groupby(refs, key=lambda r: r.pack):
        spans: list[_Span] = []
        size = 0
        for ref in grouped:
            end = ref.offset + ref.length
            if spans and size + ref.length > limit:
                yield pack, spans
                spans, size = [], 0
            last = spans[-1] if spans else None
            if last is not None and 0 <= ref.offset - last.end <= MERGE_GAP:
                size += end - last.end
                last.end = end
                last.members.append(ref)
            else:
                spans.append(_Span(ref.offset, end, [ref]))
                size += ref.length
        if spans:
            yield pack, spans


def _reason(error: Exception) -> str:
    """The parenthesised detail of an integrity message ('content does not match its id'), or the whole."""
    text = str(error)
    if text.endswith(")") and " (" in text:
        return text[text.index(" (") + 2:-1]
    return text
