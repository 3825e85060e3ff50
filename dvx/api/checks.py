"""`dvx check`: declarative expectations on pinned versions, for CI (docs/check.md).

The project file says what a pinned version must look like:

    [datasets."vision/cifar".expect]
    files = { min = 1000, max = 60000 }            # file count
    bytes = { max = "2GiB" }                       # sum of file sizes (ints or size strings)
    require = ["labels.csv", "train"]              # each glob matches at least one file
    forbid = ["*.tmp", "*/.DS_Store"]              # no file matches any of these
    changes = { added = 0.1, removed = 0.05, modified = 0.2 }   # shares of the first parent's file count

    [[datasets."vision/cifar".expect.csv]]         # any number of these
    glob = "labels.csv"
    columns = ["image", "label"]
    rows = { min = 1000 }

    [[datasets."vision/cifar".expect.parquet]]
    glob = "features/*.parquet"
    columns = ["id"]
    types = { id = "int64" }

Every table is validated (unknown keys, types, bounds, globs) before anything is read, so a typo is a
UsageError (exit 2), never a silently skipped check. Checks read only what they need: counts, globs and
changes use the manifests; CSV files are streamed (only the header when no row count is asked for);
Parquet files are read by their footer.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import posixpath
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dvx.api.config import parse_size
from dvx.api.pinning import KIND_TABLES, Pin, load_pins, resolve_pin
from dvx.api.reading import ChunkedReader
from dvx.api.repo import Repo
from dvx.errors import IntegrityError, NotFoundError, UsageError
from dvx.manifests import FileEntry, Manifest, diff_files, matches_glob
from dvx.refs import VersionRecord

EXPECT_KEYS = ("files", "bytes", "require", "forbid", "changes", "csv", "parquet")
CHANGE_KEYS = ("added", "removed", "modified")
CSV_KEYS = ("glob", "columns", "exact", "rows", "rows_total", "delimiter", "encoding")
PARQUET_KEYS = ("glob", "columns", "types", "rows", "rows_total")
PARQUET_HINT = 'pip install "dvx[parquet]"'
LISTED = 100  # paths listed in a check's details before the list is cut (the count stays exact)
_MAX_LINKS = 40  # symlink hops followed inside a version before giving up
_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# -- the expectations, validated ------------------------------------------------------------------------

@dataclass(frozen=True)
class Bounds:
    min: int | None = None
    max: int | None = None

    def holds(self, value: int) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"exactly {self.min}" if self.min == self.max else f"between {self.min} and {self.max}"
        return f"at least {self.min}" if self.min is not None else f"at most {self.max}"

    def to_dict(self) -> dict:
        return {"min": self.min, "max": self.max}


@dataclass(frozen=True)
class CsvExpectation:
    glob: str
    columns: tuple[str, ...] | None = None
    exact: bool = False
    rows: Bounds | None = None
    rows_total: Bounds | None = None
    delimiter: str = ","
    encoding: str = "utf-8-sig"  # UTF-8; a byte-order mark is not part of the first column's name


@dataclass(frozen=True)
class ParquetExpectation:
    glob: str
    columns: tuple[str, ...] | None = None
    types: dict[str, str] = field(default_factory=dict)
    rows: Bounds | None = None
    rows_total: Bounds | None = None


@dataclass(frozen=True)
class Expectations:
    files: Bounds | None = None
    bytes: Bounds | None = None
    require: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()
    changes: dict[str, float] = field(default_factory=dict)
    csv: tuple[CsvExpectation, ...] = ()
    parquet: tuple[ParquetExpectation, ...] = ()

    def __bool__(self) -> bool:
        return any((self.files, self.bytes, self.require, self.forbid, self.changes, self.csv, self.parquet))


class _Where:
    """Names the file, table and key of a bad value in the UsageError it raises."""

    def __init__(self, project_file: str, pin: Pin):
        self.table = f'[{KIND_TABLES[pin.kind]}."{pin.name}".expect]'
        self.project_file = project_file

    def error(self, key: str, problem: str) -> UsageError:
        return UsageError(f"{self.project_file}: {self.table} {key}: {problem}")


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), f"a {type(value).__name__}")


def _table(value: Any, key: str, known: Sequence[str], where: _Where) -> dict:
    if not isinstance(value, dict):
        raise where.error(key, f"must be a table, like {key} = {{ {known[0]} = … }}, not {_type_name(value)}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise where.error(key, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return value


def _count(value: Any, key: str, where: _Where, sizes: bool) -> int:
    if sizes and isinstance(value, str):
        try:
            return parse_size(value)
        except UsageError:
            raise where.error(key, f"invalid size {value!r}: use a number of bytes or e.g. \"500MiB\", "
                                   f"\"2GB\"") from None
    if isinstance(value, bool) or not isinstance(value, int):
        expected = "a whole number of bytes or a size such as \"500MiB\"" if sizes else "a whole number"
        raise where.error(key, f"must be {expected}, not {_type_name(value)} ({value!r})")
    if value < 0:
        raise where.error(key, f"must be 0 or more, not {value}")
    return value


def _bounds(value: Any, key: str, where: _Where, sizes: bool = False) -> Bounds:
    table = _table(value, key, ("min", "max"), where)
    if not table:
        raise where.error(key, "needs min, max or both, like { min = 1 }")
    low = _count(table["min"], f"{key}.min", where, sizes) if "min" in table else None
    high = _count(table["max"], f"{key}.max", where, sizes) if "max" in table else None
    if low is not None and high is not None and low > high:
        raise where.error(key, f"min ({table['min']}) is greater than max ({table['max']})")
    return Bounds(low, high)


def check_glob(pattern: Any, key: str, where: _Where) -> str:
    """A glob as `dvx get --glob` takes it: dataset-relative, '/'-separated, with balanced brackets."""
    if not isinstance(pattern, str):
        raise where.error(key, f"must be a glob string, not {_type_name(pattern)} ({pattern!r})")
    stripped = pattern.strip("/")
    if not stripped.strip():
        raise where.error(key, f"empty glob {pattern!r}")
    if "\x00" in pattern or "\\" in pattern:
        raise where.error(key, f"invalid glob {pattern!r}: dataset paths use '/' (no backslashes or NUL)")
    if any(part in (".", "..") for part in stripped.split("/")):
        raise where.error(key, f"invalid glob {pattern!r}: no '.' or '..' parts (paths are dataset-relative)")
    depth = 0
    for char in stripped:
        if char == "[" and depth == 0:
            depth = 1
        elif char == "]" and depth == 1:
            depth = 0
    if depth:
        raise where.error(key, f"invalid glob {pattern!r}: '[' without a closing ']'")
    return pattern


def _globs(value: Any, key: str, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise where.error(key, f"must be a list of globs, like {key} = [\"train/*\"], not {_type_name(value)}")
    return tuple(check_glob(g, f"{key}[{i}]", where) for i, g in enumerate(value))


def _names(value: Any, key: str, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
        raise where.error(key, "must be a non-empty list of column names (strings)")
    return tuple(value)


def _share(value: Any, key: str, where: _Where, at_most_one: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (at_most_one and value > 1):
        limit = "between 0 and 1 (a share of the parent's files, e.g. 0.1 for 10%)" if at_most_one else \
            "0 or more (a share of the parent's files, e.g. 0.1 for 10%)"
        raise where.error(key, f"must be a number {limit}, not {value!r}")
    return float(value)


def _tables(value: Any, key: str, where: _Where) -> list[dict]:
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise where.error(key, f"must be tables: write [[… .expect.{key}]] once per expectation")
    return value


def _csv(value: dict, index: int, where: _Where) -> CsvExpectation:
    key = f"csv[{index}]"
    table = _table(value, key, CSV_KEYS, where)
    if "glob" not in table:
        raise where.error(key, "needs glob = \"…\" (the files it applies to)")
    glob = check_glob(table["glob"], f"{key}.glob", where)
    columns = _names(table["columns"], f"{key}.columns", where) if "columns" in table else None
    exact = table.get("exact", False)
    if not isinstance(exact, bool):
        raise where.error(f"{key}.exact", f"must be true or false, not {exact!r}")
    if exact and columns is None:
        raise where.error(f"{key}.exact", "exact = true needs columns = [...] (the exact header)")
    rows = _bounds(table["rows"], f"{key}.rows", where) if "rows" in table else None
    total = _bounds(table["rows_total"], f"{key}.rows_total", where) if "rows_total" in table else None
    if columns is None and rows is None and total is None:
        raise where.error(key, "needs columns, rows or rows_total (what to check in the matched files)")
    delimiter = table.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\"\r\n":
        raise where.error(f"{key}.delimiter", f"must be one character such as \",\", \";\" or \"\\t\", "
                                              f"not {delimiter!r}")
    encoding = table.get("encoding", "utf-8-sig")
    if not isinstance(encoding, str):
        raise where.error(f"{key}.encoding", f"must be an encoding name such as \"utf-8\", not {encoding!r}")
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise where.error(f"{key}.encoding", f"unknown encoding {encoding!r}") from None
    if codec.name == "utf-8":
        encoding = "utf-8-sig"
    return CsvExpectation(glob, columns, exact, rows, total, delimiter, encoding)


def _parquet(value: dict, index: int, where: _Where) -> ParquetExpectation:
    key = f"parquet[{index}]"
    table = _table(value, key, PARQUET_KEYS, where)
    if "glob" not in table:
        raise where.error(key, "needs glob = \"…\" (the files it applies to)")
    glob = check_glob(table["glob"], f"{key}.glob", where)
    columns = _names(table["columns"], f"{key}.columns", where) if "columns" in table else None
    types = table.get("types", {})
    if not isinstance(types, dict) or not all(isinstance(t, str) and t.strip() for t in types.values()):
        raise where.error(f"{key}.types", "must be a table of column = \"arrow type\", like { id = \"int64\" }")
    rows = _bounds(table["rows"], f"{key}.rows", where) if "rows" in table else None
    total = _bounds(table["rows_total"], f"{key}.rows_total", where) if "rows_total" in table else None
    if columns is None and not types and rows is None and total is None:
        raise where.error(key, "needs columns, types, rows or rows_total (what to check in the matched files)")
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise where.error(key, f"checking Parquet files needs pyarrow: {PARQUET_HINT}") from None
    normal = {}
    for column, name in types.items():
        try:
            normal[column] = str(pyarrow.type_for_alias(name.strip()))  # "float64" → "double", "str" → "string"
        except (ValueError, KeyError):
            normal[column] = name.strip()
    return ParquetExpectation(glob, columns, normal, rows, total)


def parse_expectations(expect: dict, where: _Where) -> Expectations:
    """Validate one pin's raw `expect` table (as TOML gave it) into Expectations; UsageError on any mistake."""
    unknown = sorted(set(expect) - set(EXPECT_KEYS))
    if unknown:
        raise UsageError(f"{where.project_file}: {where.table} has unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(EXPECT_KEYS)})")
    changes = {}
    if "changes" in expect:
        table = _table(expect["changes"], "changes", CHANGE_KEYS, where)
        if not table:
            raise where.error("changes", f"needs one or more of {', '.join(CHANGE_KEYS)}")
        changes = {k: _share(table[k], f"changes.{k}", where, k != "added") for k in CHANGE_KEYS if k in table}
    return Expectations(
        files=_bounds(expect["files"], "files", where) if "files" in expect else None,
        bytes=_bounds(expect["bytes"], "bytes", where, sizes=True) if "bytes" in expect else None,
        require=_globs(expect["require"], "require", where) if "require" in expect else (),
        forbid=_globs(expect["forbid"], "forbid", where) if "forbid" in expect else (),
        changes=changes,
        csv=tuple(_csv(t, i, where) for i, t in enumerate(_tables(expect.get("csv", []), "csv", where))),
        parquet=tuple(_parquet(t, i, where) for i, t in enumerate(_tables(expect.get("parquet", []), "parquet",
                                                                          where))),
    )


# -- results ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckResult:
    name: str  # the pinned name
    ref: str  # the version checked, NAME@vN
    check: str  # e.g. "files", "forbid:*.tmp", "csv[0]:rows:data/a.csv"
    passed: bool
    message: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.ref, "check": self.check, "passed": self.passed,
                "message": self.message, "details": self.details}


@dataclass
class PinChecks:
    """One pin's results (empty, with a note, when it has no expectations)."""

    pin: Pin
    ref: str  # the version checked (the pin's version unless the store numbers it differently)
    results: list[CheckResult] = field(default_factory=list)
    note: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return sum(not r.passed for r in self.results)

    def to_dict(self) -> dict:
        return {"name": self.pin.name, "kind": self.pin.kind, "version": self.ref, "pinned": self.pin.version,
                "id": self.pin.id, "ok": self.ok, "note": self.note, "checks": [r.to_dict() for r in self.results]}


@dataclass
class CheckReport:
    project_file: str
    pins: list[PinChecks] = field(default_factory=list)
    note: str | None = None

    @property
    def results(self) -> list[CheckResult]:
        return [r for p in self.pins for r in p.results]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.pins)

    def summary(self) -> dict:
        results = self.results
        failed = sum(not r.passed for r in results)
        return {"pins": len(self.pins), "checks": len(results), "passed": len(results) - failed, "failed": failed}

    def to_dict(self) -> dict:
        return {"ok": self.ok, "project": self.project_file, "summary": self.summary(), "note": self.note,
                "pins": [p.to_dict() for p in self.pins]}

    def to_junit(self) -> str:
        """JUnit XML: one <testsuite> per checked pin, one <testcase> per check, <failure> for failures;
        a pin without expectations is one skipped test case."""
        import xml.etree.ElementTree as ET

        summary = self.summary()
        skipped_total = sum(1 for p in self.pins if not p.results)
        root = ET.Element("testsuites", {
            "name": "dvx check", "tests": str(summary["checks"] + skipped_total), "failures": str(summary["failed"]),
            "errors": "0", "skipped": str(skipped_total), "time": f"{sum(p.seconds for p in self.pins):.3f}"})
        for entry in self.pins:
            classname = _xml(f"dvx.{entry.pin.name}" if entry.pin.kind == "dataset" else f"dvx.model.{entry.pin.name}")
            skipped = 0 if entry.results else 1
            suite = ET.SubElement(root, "testsuite", {
                "name": _xml(entry.pin.name if entry.pin.kind == "dataset" else f"model {entry.pin.name}"),
                "tests": str(len(entry.results) + skipped), "failures": str(entry.failed), "errors": "0",
                "skipped": str(skipped), "time": f"{entry.seconds:.3f}"})
            properties = ET.SubElement(suite, "properties")
            for key, value in (("kind", entry.pin.kind), ("version", entry.ref), ("id", entry.pin.id)):
                ET.SubElement(properties, "property", {"name": key, "value": _xml(value)})
            if not entry.results:
                case = ET.SubElement(suite, "testcase", {"classname": classname, "name": "expectations"})
                ET.SubElement(case, "skipped", {"message": _xml(entry.note or "no expectations")})
            for result in entry.results:
                case = ET.SubElement(suite, "testcase", {"classname": classname, "name": _xml(result.check)})
                if not result.passed:
                    failure = ET.SubElement(case, "failure", {"message": _xml(result.message), "type": "dvx.check"})
                    failure.text = _xml(f"{result.ref}: {result.check}: {result.message}")
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _xml(text: str) -> str:
    """Characters XML 1.0 cannot hold at all (control characters in a file name) as U+FFFD;
    ElementTree escapes the rest (<, &, >, quotes)."""
    return _XML_INVALID.sub("\ufffd", text)


# -- running ---------------------------------------------------------------------------------------------

def run_checks(repo: Repo, names: Sequence[str] = ()) -> CheckReport:
    """Check every pin that has an expect table (or the pins `names`), after validating all their tables."""
    settings = repo.settings
    if settings.project_dir is None:
        raise UsageError("no project here: `dvx check` verifies the pins of a dvx.toml "
                         "(run `dvx init`, `dvx pin NAME@vN`, then add [datasets.\"NAME\".expect])")
    project_file = str(settings.project_file)
    pins = load_pins(settings)
    if not pins:
        raise UsageError(f"nothing is pinned in {project_file}: pin a version with `dvx pin NAME@vN`, "
                         f"then add [datasets.\"NAME\".expect]")
    if names:
        chosen = [p for p in pins if p.name in names]
        unknown = [n for n in dict.fromkeys(names) if n not in {p.name for p in chosen}]
        if unknown:
            raise NotFoundError(f"not pinned in {project_file}: {', '.join(unknown)}")
    else:
        chosen = [p for p in pins if p.expect]
    planned = [(p, parse_expectations(p.expect, _Where(project_file, p))) for p in chosen]
    report = CheckReport(project_file)
    if not planned:
        report.note = f"nothing to check: no pin in {project_file} has an expect table"
    for pin, expectations in planned:
        started = time.monotonic()
        entry = PinChecks(pin, pin.version)
        report.pins.append(entry)
        if not expectations:
            label = f'[{KIND_TABLES[pin.kind]}."{pin.name}".expect]'
            entry.note = f"no expectations: add {label} to {project_file}"
            continue
        _check_pin(repo, entry, expectations)
        entry.seconds = time.monotonic() - started
    return report


def _check_pin(repo: Repo, entry: PinChecks, expect: Expectations) -> None:
    pin = entry.pin
    try:
        record = resolve_pin(repo, pin)
        manifest = repo.read_manifest(record.manifest)
    except NotFoundError as exc:
        entry.results.append(CheckResult(pin.name, pin.version, "version", False, str(exc), {"id": pin.id}))
        return
    entry.ref = record.ref
    run = _Run(repo, entry, record, manifest)
    if expect.files is not None:
        count = len(manifest.files)
        run.add("files", expect.files.holds(count), f"{_n(count, 'file')}, expected {expect.files.describe()}",
                {"files": count, **expect.files.to_dict()})
    if expect.bytes is not None:
        total = manifest.total_size
        run.add("bytes", expect.bytes.holds(total), f"{total} bytes, expected {expect.bytes.describe()}",
                {"bytes": total, **expect.bytes.to_dict()})
    for glob in expect.require:
        matched = sum(1 for f in manifest.files if matches_glob(f.path, glob))
        run.add(f"require:{glob}", matched > 0,
                f"{glob!r} matches {_n(matched, 'file')}" if matched else f"no file matches {glob!r}",
                {"glob": glob, "matches": matched})
    for glob in expect.forbid:
        offenders = [f.path for f in manifest.files if matches_glob(f.path, glob)]
        run.add(f"forbid:{glob}", not offenders,
                f"no file matches {glob!r}" if not offenders else
                f"{glob!r} matches {_n(len(offenders), 'file')}: {_listing(offenders)}",
                {"glob": glob, "matches": len(offenders), "offenders": offenders[:LISTED]})
    if expect.changes:
        run.changes(expect.changes)
    for index, spec in enumerate(expect.csv):
        run.csv(index, spec)
    for index, spec in enumerate(expect.parquet):
        run.parquet(index, spec)


def _listing(paths: Sequence[str], shown: int = 5) -> str:
    more = f" … and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(paths[:shown]) + more


class _Run:
    """Evaluates one pin's expectations against its version's manifest."""

    def __init__(self, repo: Repo, entry: PinChecks, record: VersionRecord, manifest: Manifest):
        self.repo, self.entry, self.record, self.manifest = repo, entry, record, manifest
        self._by_path: dict[str, FileEntry] | None = None

    def add(self, check: str, passed: bool, message: str, details: dict | None = None) -> None:
        self.entry.results.append(CheckResult(self.entry.pin.name, self.record.ref, check, passed, message,
                                              details or {}))

    # -- changes against the first parent ----------------------------------------------------------------
    def changes(self, limits: dict[str, float]) -> None:
        parents = self.manifest.parents
        if not parents:
            for kind, limit in limits.items():
                self.add(f"changes:{kind}", True, f"{self.record.ref} has no parent version: nothing to compare",
                         {"parent": None, "limit": limit})
            return
        parent_ref = self.record.parent_refs[0] if self.record.parent_refs else parents[0]
        try:
            parent = self.repo.read_manifest(parents[0])
        except NotFoundError as exc:
            for kind, limit in limits.items():
                self.add(f"changes:{kind}", False, f"cannot read parent {parent_ref}: {exc}",
                         {"parent": parent_ref, "limit": limit})
            return
        counts = {"added": 0, "removed": 0, "modified": 0}
        for change in diff_files(parent.by_path(), self.manifest.by_path()):
            counts["modified" if change.kind == "renamed" else change.kind] += 1  # a rename is a modification
        base = len(parent.files)
        for kind, limit in limits.items():
            count = counts[kind]
            share = count / base if base else (math.inf if count else 0.0)
            shown = f"{share:.1%}" if math.isfinite(share) else "the parent has no files"
            self.add(f"changes:{kind}", share <= limit,
                     f"{count} of {_n(base, 'file')} {kind} against {parent_ref} ({shown}), at most {limit:.1%} allowed",
                     {"parent": parent_ref, "parent_files": base, "count": count,
                      "share": share if math.isfinite(share) else None, "limit": limit})

    # -- files of a glob, opened ----------------------------------------------------------------------------
    def _matched(self, label: str, glob: str) -> list[FileEntry]:
        files = [f for f in self.manifest.files if matches_glob(f.path, glob)]
        self.add(f"{label}:match", bool(files),
                 f"{glob!r} matches {_n(len(files), 'file')}" if files else f"no file matches {glob!r}",
                 {"glob": glob, "matches": len(files)})
        return files

    def _content(self, entry: FileEntry) -> FileEntry:
        """The entry whose bytes a path holds: symlinks are followed inside the version."""
        if self._by_path is None:
            self._by_path = self.manifest.by_path()
        for _ in range(_MAX_LINKS):
            if entry.link is None:
                return entry
            target = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), entry.link))
            found = self._by_path.get(target)
            if found is None:
                raise NotFoundError(f"{entry.path} is a link to {entry.link}, which is not in {self.record.ref}")
            entry = found
        raise NotFoundError(f"{entry.path}: too many levels of links")

    def _seekable(self, entry: FileEntry) -> io.BufferedReader:
        return io.BufferedReader(ChunkedReader(self.repo.chunk_store(), self._content(entry), self.record.ref),
                                 buffer_size=1 << 16)

    def _streamed(self, entry: FileEntry) -> io.BufferedReader:
        content = self._content(entry)
        return io.BufferedReader(_ChunkStream(self.repo.chunk_store().read_chunks(content.chunks)),
                                 buffer_size=1 << 20)

    # -- CSV --------------------------------------------------------------------------------------------
    def csv(self, index: int, spec: CsvExpectation) -> None:
        label = f"csv[{index}]"
        files = self._matched(label, spec.glob)
        counting = spec.rows is not None or spec.rows_total is not None
        total, unreadable = 0, []
        for entry in files:
            try:
                header, rows = self._read_csv(entry, spec, counting)
            except _Unreadable as exc:
                unreadable.append(entry.path)
                for part, wanted in (("columns", spec.columns), ("rows", spec.rows)):
                    if wanted is not None:
                        self.add(f"{label}:{part}:{entry.path}", False, f"cannot read {entry.path}: {exc}",
                                 {"path": entry.path, "error": str(exc)})
                continue
            if spec.columns is not None:
                self._columns(f"{label}:columns:{entry.path}", entry.path, header, spec.columns, spec.exact)
            if spec.rows is not None:
                self._rows(f"{label}:rows:{entry.path}", entry.path, rows, spec.rows)
            total += rows or 0
        if spec.rows_total is not None and files:
            self._total(f"{label}:rows_total", total, len(files), unreadable, spec.rows_total)

    def _read_csv(self, entry: FileEntry, spec: CsvExpectation, counting: bool) -> tuple[list[str] | None, int | None]:
        """The header row (None for an empty file) and, when `counting`, the number of data rows.
        Blank lines are not rows. Only the header is read when rows are not counted."""
        try:
            with (self._streamed(entry) if counting else self._seekable(entry)) as raw:
                text = io.TextIOWrapper(raw, encoding=spec.encoding, newline="")
                reader = csv.reader(text, delimiter=spec.delimiter)
                header = next((row for row in reader if row), None)
                if not counting:
                    return header, None
                return header, sum(1 for row in reader if row)
        except UnicodeDecodeError as exc:
            raise _Unreadable(f"not {spec.encoding.replace('-sig', '')} text ({exc.reason} near byte "
                              f"{exc.start})") from None
        except csv.Error as exc:
            raise _Unreadable(f"invalid CSV: {exc}") from None
        except (IntegrityError, NotFoundError) as exc:
            raise _Unreadable(str(exc)) from None

    def _columns(self, check: str, path: str, header: list[str] | None, columns: tuple[str, ...],
                 exact: bool) -> None:
        if header is None:
            self.add(check, False, f"{path} is empty: no header row",
                     {"path": path, "header": None, "columns": list(columns), "exact": exact})
            return
        details = {"path": path, "header": header, "columns": list(columns), "exact": exact}
        if exact:
            same = header == list(columns)
            wanted = "" if same else f", expected exactly {_cols(columns)}"
            self.add(check, same, f"header is {_cols(header)}{wanted}", details)
            return
        missing = [c for c in columns if c not in header]
        details["missing"] = missing
        self.add(check, not missing, f"has columns {_cols(columns)}" if not missing else
                 f"missing column(s) {_cols(missing)}; header is {_cols(header)}", details)

    def _rows(self, check: str, path: str, rows: int, bounds: Bounds) -> None:
        self.add(check, bounds.holds(rows), f"{_n(rows, 'row')}, expected {bounds.describe()}",
                 {"path": path, "rows": rows, **bounds.to_dict()})

    def _total(self, check: str, total: int, files: int, unreadable: list[str], bounds: Bounds) -> None:
        details = {"rows": total, "files": files, **bounds.to_dict()}
        if unreadable:
            self.add(check, False, f"cannot read {len(unreadable)} of {_n(files, 'file')}: {_listing(unreadable)}",
                     {**details, "unreadable": unreadable[:LISTED]})
            return
        self.add(check, bounds.holds(total), f"{_n(total, 'row')} in {_n(files, 'file')}, expected {bounds.describe()}", details)

    # -- Parquet ----------------------------------------------------------------------------------------
    def parquet(self, index: int, spec: ParquetExpectation) -> None:
        import pyarrow
        import pyarrow.parquet as pq

        label = f"parquet[{index}]"
        files = self._matched(label, spec.glob)
        total, unreadable = 0, []
        for entry in files:
            try:
                with self._seekable(entry) as handle:
                    footer = pq.ParquetFile(handle)
                    rows, schema = footer.metadata.num_rows, footer.schema_arrow
            except (pyarrow.ArrowException, OSError, ValueError, IntegrityError, NotFoundError) as exc:
                unreadable.append(entry.path)
                for part, wanted in (("columns", spec.columns), ("types", spec.types or None), ("rows", spec.rows)):
                    if wanted is not None:
                        self.add(f"{label}:{part}:{entry.path}", False,
                                 f"cannot read {entry.path} as Parquet: {exc}", {"path": entry.path, "error": str(exc)})
                continue
            names = list(schema.names)
            if spec.columns is not None:
                self._columns(f"{label}:columns:{entry.path}", entry.path, names, spec.columns, False)
            if spec.types:
                actual = {c: (str(schema.field(c).type) if c in names else None) for c in spec.types}
                wrong = {c: t for c, t in actual.items() if t != spec.types[c]}
                problems = [f"{c} is {t}, expected {spec.types[c]}" if t is not None else
                            f"{c} is missing, expected {spec.types[c]}" for c, t in wrong.items()]
                self.add(f"{label}:types:{entry.path}", not wrong,
                         "; ".join(problems) if wrong else
                         ", ".join(f"{c} is {t}" for c, t in actual.items()),
                         {"path": entry.path, "types": actual, "expected": dict(spec.types)})
            if spec.rows is not None:
                self._rows(f"{label}:rows:{entry.path}", entry.path, rows, spec.rows)
            total += rows
        if spec.rows_total is not None and files:
            self._total(f"{label}:rows_total", total, len(files), unreadable, spec.rows_total)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _cols(columns: Sequence[str]) -> str:
    return "[" + ", ".join(columns) + "]"


class _Unreadable(Exception):
    """A matched file could not be read as the expectation's format (a failed check, not an error)."""


class _ChunkStream(io.RawIOBase):
    """A forward-only file over an iterator of byte blocks (a file's chunks, read ahead in batches)."""

    def __init__(self, blocks: Iterator[bytes]):
        self._blocks = blocks
        self._block = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._block:
            block = next(self._blocks, None)
            if block is None:
                return 0
            self._block = memoryview(block)
        count = min(len(buffer), len(self._block))
        buffer[:count] = self._block[:count]
        self._block = self._block[count:]
        return count

    def close(self) -> None:
        close = getattr(self._blocks, "close", None)
        if close is not None:
            close()  # stop read-ahead of a generator left early
        super().close()
