"""Read-only views for browsing a store (what `dvx ui` shows): pages of names and versions, file
previews, diffs with changed-row counts, lineage laid out for drawing. Each view reads only what its
page needs, so a million-file version or a thousand-version history answers in well under a second."""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import xxhash

from dvx.api.reading import ChunkedReader, Resolved, _find_file, resolve, show
from dvx.api.repo import Repo
from dvx.errors import NotFoundError, UsageError
from dvx.manifests import FileEntry, diff_files, validate_path
from dvx.manifests.model import KINDS
from dvx.manifests.paged import all_files
from dvx.refs import VersionRecord, check_name
from dvx.refs.store import DeletedVersion

MAX_PAGE = 1000  # rows one request may ask for
PREVIEW_ROWS = 50  # table previews: first rows
PREVIEW_COLUMNS = 100  # and at most this many columns
PREVIEW_CELL = 500  # characters kept of one cell
PREVIEW_CSV_BYTES = 1 << 20  # bytes read to preview a CSV
PREVIEW_TEXT_BYTES = 64 << 10  # bytes shown of a text file
THUMBNAIL_SOURCE_MAX = 64 << 20  # images larger than this get no thumbnail
THUMBNAIL_PIXELS_MAX = 50_000_000  # and neither do images with more pixels (decompression bombs)
ROW_DIFF_MAX_BYTES = 256 << 20  # a table larger than this (either side) is not compared row by row
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
_READ_THREADS = 16


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise UsageError(f"invalid kind {kind!r}: use dataset or model")
    return kind


def _window(offset: int, limit: int) -> tuple[int, int]:
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise UsageError(f"invalid page: offset must be ≥ 0 and limit 1..{MAX_PAGE}")
    return offset, limit


def _parallel(work: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    items = list(items)
    if len(items) <= 1:
        return [work(i) for i in items]
    with ThreadPoolExecutor(min(_READ_THREADS, len(items)), thread_name_prefix="dvx-browse") as pool:
        return list(pool.map(work, items))


def suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def is_table(path: str) -> bool:
    return suffix(path) in CSV_SUFFIXES or suffix(path) in PARQUET_SUFFIXES


# -- names ----------------------------------------------------------------------------------------
def names_page(repo: Repo, kind: str = "dataset", query: str = "", offset: int = 0, limit: int = 50) -> dict:
    """Names whose text contains `query` (case-insensitive), sorted, one page of them: latest version,
    tags or aliases, logical size, the stored size of the latest version and when it was made. The
    names come from the name catalog (a fixed number of reads); the page's roots are read in parallel."""
    _kind(kind)
    offset, limit = _window(offset, limit)
    entries = repo.refs(kind).catalog.entries()
    wanted = query.strip().lower()
    names = sorted(n for n in entries if wanted in n.lower())
    rows = []
    for name in names[offset:offset + limit]:
        entry = entries[name]
        latest = entry.record(entry.latest)
        row = {"name": name, "kind": kind, "versions": entry.versions, "latest": latest.ref,
               "version": latest.version, "id": latest.manifest, "created": latest.created,
               "author": latest.author, "message": latest.message, "files": latest.files,
               "bytes": latest.bytes, "new_bytes": latest.new_bytes,
               "tags": {p: entry.pointers[p] for p in sorted(entry.pointers)}}
        if kind == "model":
            notes = entry.notes.get(str(entry.latest))
            row["metrics"] = dict(notes.metrics) if notes else {}
        rows.append(row)

    def stored(row: dict) -> int | None:
        try:
            return repo.manifest_root(row["id"]).stored_size
        except NotFoundError:
            return None

    for row, size in zip(rows, _parallel(stored, rows)):
        row["stored_bytes"] = size
    return {"kind": kind, "query": query, "total": len(names), "offset": offset, "limit": limit, "items": rows}


def history_page(repo: Repo, name: str, kind: str = "dataset", offset: int = 0, limit: int = 50,
                 sort: str | None = None) -> dict:
    """One page of a name's versions, newest first: one listing, then only this page's records (and,
    for models, their metrics) in parallel, so a thousand-version history costs what a page does.
    `sort` (models: a metric or field, `:desc` for best first) orders every version instead, which
    reads every version's annotations."""
    _kind(kind)
    check_name(name)
    offset, limit = _window(offset, limit)
    if sort:
        return _sorted_model_history(repo, name, kind, offset, limit, sort)
    refs = repo.refs(kind)
    numbers = list(reversed(refs.all_version_numbers(name)))
    if not numbers:
        raise NotFoundError(f"no {kind} named {name!r} in this store")
    shown = numbers[offset:offset + limit]
    records = _parallel(lambda n: refs.get_record(name, n), shown)
    tags = refs.tags(name)
    by_version: dict[int, list[str]] = {}
    for tag, record in sorted(tags.items()):
        by_version.setdefault(record.version, []).append(tag)
    notes = _parallel(lambda n: refs.get_annotations(name, n), shown) if kind == "model" else [None] * len(shown)
    items = []
    for number, record, annotated in zip(shown, records, notes):
        if isinstance(record, DeletedVersion):
            items.append({"version": number, "ref": f"{name}@v{number}", "deleted": True,
                          "deleted_at": record.deleted.at, "deleted_by": record.deleted.by})
            continue
        row = version_row(record)
        row["tags"] = by_version.get(number, [])
        if annotated is not None:
            row.update(metrics=dict(annotated.metrics), params=dict(annotated.params), labels=list(annotated.tags))
        items.append(row)
    return {"kind": kind, "name": name, "sort": None, "total": len(numbers), "offset": offset, "limit": limit,
            "tags": {t: r.version for t, r in sorted(tags.items())}, "items": items}


def _sorted_model_history(repo: Repo, name: str, kind: str, offset: int, limit: int, sort: str) -> dict:
    from dvx.api.models import list_versions

    if kind != "model":
        raise UsageError("only model versions can be sorted (by a metric or field)")
    versions = list_versions(repo, name, all_versions=True, sort=sort)
    if not versions:
        raise NotFoundError(f"no model named {name!r} in this store")
    items = [{"version": v.version, "ref": v.ref, "id": v.id, "created": v.created, "author": v.author,
              "message": v.message, "files": v.files, "bytes": v.bytes, "new_bytes": v.new_bytes,
              "parents": list(v.parents), "inputs": list(v.input_refs), "tags": list(v.aliases),
              "metrics": dict(v.metrics), "params": dict(v.params), "labels": list(v.labels)}
             for v in versions[offset:offset + limit]]
    aliases = {alias: v.version for v in versions for alias in v.aliases}
    return {"kind": kind, "name": name, "sort": sort, "total": len(versions), "offset": offset, "limit": limit,
            "tags": dict(sorted(aliases.items())), "items": items}


def version_row(record: VersionRecord) -> dict:
    return {"version": record.version, "ref": record.ref, "id": record.manifest, "created": record.created,
            "author": record.author, "message": record.message, "files": record.files, "bytes": record.bytes,
            "new_bytes": record.new_bytes, "parents": list(record.parent_refs), "inputs": list(record.input_refs)}


def alias_histories(repo: Repo, name: str) -> list[dict]:
    """Every alias of model `name` (deleted ones too) with its whole history of moves."""
    from dvx.api.models import log

    return [h.to_dict() for h in log(repo, name)[1]]


def version_info(repo: Repo, ref: str, kind: str = "dataset") -> dict:
    out = show(repo, ref, _kind(kind))
    if kind == "model":
        from dvx.api.models import show as model_show

        out.update({k: v for k, v in model_show(repo, ref).items() if k not in out})
    return out


# -- files ----------------------------------------------------------------------------------------
def find_file(repo: Repo, ref: str, path: str, kind: str = "dataset") -> tuple[Resolved, FileEntry]:
    """The file at `path` of `ref` (symlinks followed inside the version); NotFoundError otherwise."""
    resolved = resolve(repo, ref, _kind(kind))
    return resolved, _find_file(resolved, validate_path(path.strip("/")))


def open_entry(repo: Repo, resolved: Resolved, entry: FileEntry) -> io.BufferedReader:
    """A file's bytes, streamed chunk by chunk and checked against their ids as they are read."""
    return io.BufferedReader(ChunkedReader(repo.chunk_store(), entry, resolved.ref), buffer_size=1 << 20)


def iter_bytes(stream: io.BufferedReader, block: int = 1 << 20) -> Iterator[bytes]:
    with stream:
        while data := stream.read(block):
            yield data


def preview(repo: Repo, ref: str, path: str, kind: str = "dataset") -> dict:
    """What the file page shows: the first rows of a CSV/TSV/Parquet table, the start of a text file,
    or word that an image has a thumbnail. Reads a bounded prefix, never the whole file."""
    resolved, entry = find_file(repo, ref, path, kind)
    out: dict[str, Any] = {"ref": resolved.ref, "path": entry.path, "size": entry.size, "digest": entry.digest}
    ext = suffix(entry.path)
    if ext in IMAGE_SUFFIXES:
        fits = entry.size <= THUMBNAIL_SOURCE_MAX
        return out | {"type": "image" if fits else "none",
                      "reason": None if fits else "image too large for a thumbnail"}
    if ext in PARQUET_SUFFIXES:
        return out | _parquet_preview(open_entry(repo, resolved, entry))
    with open_entry(repo, resolved, entry) as stream:
        head = stream.read(PREVIEW_CSV_BYTES if ext in CSV_SUFFIXES else PREVIEW_TEXT_BYTES)
    if ext in CSV_SUFFIXES:
        return out | _csv_preview(head, CSV_SUFFIXES[ext], complete=len(head) == entry.size)
    if b"\0" in head[:8192]:
        return out | {"type": "none", "reason": "binary file"}
    text = head.decode("utf-8", errors="replace")
    return out | {"type": "text", "text": text, "truncated": len(head) < entry.size}


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    return text if len(text) <= PREVIEW_CELL else text[:PREVIEW_CELL] + "…"


def _csv_preview(head: bytes, delimiter: str, complete: bool) -> dict:
    text = head.decode("utf-8", errors="replace")
    if not complete:  # drop the last, probably cut, line
        text = text[:text.rfind("\n") + 1] if "\n" in text else ""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    for row in reader:
        rows.append([_cell(c) for c in row[:PREVIEW_COLUMNS]])
        if len(rows) > PREVIEW_ROWS + 1:  # the header, the rows shown, and one to know there are more
            break
    columns, body = (rows[0], rows[1:]) if rows else ([], [])
    return {"type": "table", "format": "csv", "columns": columns, "rows": body[:PREVIEW_ROWS],
            "truncated": len(body) > PREVIEW_ROWS or not complete, "total_rows": None}


def _parquet_preview(stream: io.BufferedReader) -> dict:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return {"type": "none", "reason": "Parquet previews need pyarrow: pip install 'dvx[ui]'"}
    with stream:
        try:
            parquet = pq.ParquetFile(stream)
            names = parquet.schema_arrow.names
            columns = names[:PREVIEW_COLUMNS]
            batch = next(parquet.iter_batches(batch_size=PREVIEW_ROWS, columns=columns), None)
        except (OSError, ValueError, pa.ArrowException) as exc:  # a damaged file
            return {"type": "none", "reason": f"not a readable Parquet file ({type(exc).__name__})"}
        rows = [] if batch is None else [[_cell(v) for v in row.values()] for row in batch.to_pylist()]
        return {"type": "table", "format": "parquet", "columns": columns, "rows": rows,
                "truncated": parquet.metadata.num_rows > len(rows) or len(names) > len(columns),
                "total_rows": parquet.metadata.num_rows}


def thumbnail(repo: Repo, ref: str, path: str, kind: str = "dataset", size: int = 256) -> bytes:
    """A PNG of the image at most `size` pixels wide and high (Pillow; bounded source and pixel count)."""
    from PIL import Image

    if not 16 <= size <= 1024:
        raise UsageError("invalid thumbnail size: use 16..1024 pixels")
    resolved, entry = find_file(repo, ref, path, kind)
    if suffix(entry.path) not in IMAGE_SUFFIXES or entry.size > THUMBNAIL_SOURCE_MAX:
        raise UsageError(f"{entry.path} has no thumbnail (not an image, or larger than {THUMBNAIL_SOURCE_MAX} bytes)")
    with open_entry(repo, resolved, entry) as stream:
        data = stream.read()
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > THUMBNAIL_PIXELS_MAX:
                raise UsageError(f"{entry.path} has too many pixels for a thumbnail")
            image.thumbnail((size, size))
            out = io.BytesIO()
            image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB").save(out, format="PNG")
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        raise UsageError(f"{entry.path} is not a readable image ({exc})") from None
    return out.getvalue()


# -- diffs ----------------------------------------------------------------------------------------
def diff_page(repo: Repo, ref_a: str, ref_b: str, kind: str = "dataset", offset: int = 0, limit: int = 200) -> dict:
    """Files added, removed, modified (and renamed) from `ref_a` to `ref_b`: totals and one page of
    them. Both manifests are read whole, once per call, and not kept."""
    _kind(kind)
    offset, limit = _window(offset, limit)
    a, b = resolve(repo, ref_a, kind), resolve(repo, ref_b, kind)
    files_a = {f.path: f for f in _files(repo, a)}
    files_b = {f.path: f for f in _files(repo, b)}
    changes = diff_files(files_a, files_b)
    counts = Counter(c.kind for c in changes)
    items = []
    for change in changes[offset:offset + limit]:
        row = change.to_dict()
        row["table"] = change.kind == "modified" and is_table(change.path)
        items.append(row)
    return {"kind": kind, "a": a.ref, "b": b.ref, "a_id": a.record.manifest, "b_id": b.record.manifest,
            "total": len(changes), "offset": offset, "limit": limit,
            "summary": {k: counts.get(k, 0) for k in ("added", "removed", "modified", "renamed")}
            | {"bytes_a": a.root.total_size, "bytes_b": b.root.total_size,
               "files_a": a.root.file_count, "files_b": b.root.file_count},
            "items": items}


def _files(repo: Repo, resolved: Resolved) -> list[FileEntry]:
    root = resolved.root
    return root.inline if root.inline is not None else all_files(repo.store.read, root)


def row_changes(repo: Repo, ref_a: str, ref_b: str, path: str, kind: str = "dataset") -> dict:
    """Rows of the table at `path` in `ref_a` and `ref_b`: how many each has, how many of b's rows a
    lacks (added) and of a's rows b lacks (removed). Rows compare whole, as multisets (an edited row is
    one removed and one added). CSV/TSV rows are lines after the header; Parquet rows are compared by
    their values."""
    if not is_table(path):
        raise UsageError(f"{path} is not a CSV, TSV or Parquet file")
    sides = []
    for ref in (ref_a, ref_b):
        resolved, entry = find_file(repo, ref, path, kind)
        if entry.size > ROW_DIFF_MAX_BYTES:
            raise UsageError(f"{resolved.ref}/{entry.path} is larger than {ROW_DIFF_MAX_BYTES >> 20} MiB: "
                             "rows are not compared")
        sides.append((resolved, entry))
    counted = [_row_hashes(open_entry(repo, r, e), e.path) for r, e in sides]
    (rows_a, columns_a, hashes_a), (rows_b, columns_b, hashes_b) = counted
    return {"path": path, "a": sides[0][0].ref, "b": sides[1][0].ref, "rows_a": rows_a, "rows_b": rows_b,
            "added": sum((hashes_b - hashes_a).values()), "removed": sum((hashes_a - hashes_b).values()),
            "columns_a": columns_a, "columns_b": columns_b}


def _row_hashes(stream: io.BufferedReader, path: str) -> tuple[int, list[str], Counter]:
    hashes: Counter = Counter()
    rows = 0
    with stream:
        if suffix(path) in PARQUET_SUFFIXES:
            return _parquet_row_hashes(stream)
        header = stream.readline()
        columns = next(csv.reader([header.decode("utf-8", errors="replace")],
                                  delimiter=CSV_SUFFIXES[suffix(path)]), [])
        for line in stream:
            line = line.rstrip(b"\r\n")
            if line:
                hashes[xxhash.xxh3_64_intdigest(line)] += 1
                rows += 1
    return rows, columns, hashes


def _parquet_row_hashes(stream: io.BufferedReader) -> tuple[int, list[str], Counter]:
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("comparing Parquet rows needs pyarrow: pip install 'dvx[ui]'") from None
    hashes: Counter = Counter()
    rows = 0
    try:
        parquet = pq.ParquetFile(stream)
        for batch in parquet.iter_batches(batch_size=65536):
            text = io.BytesIO()
            pacsv.write_csv(batch, text, pacsv.WriteOptions(include_header=False))
            for line in text.getvalue().splitlines():
                hashes[xxhash.xxh3_64_intdigest(line)] += 1
            rows += batch.num_rows
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise UsageError(f"not a readable Parquet file ({exc})") from None
    return rows, parquet.schema_arrow.names, hashes


# -- lineage --------------------------------------------------------------------------------------
def lineage_layout(repo: Repo, ref: str, kind: str = "dataset", depth: int | None = 2) -> dict:
    """The lineage graph around `ref` with a column per hop (upstream left, downstream right) and a
    row within each column: enough for a page to draw it without a layout library."""
    from dvx.api.lineage_graph import lineage

    graph = lineage(repo, ref, _kind(kind), depth=depth)
    out = graph.to_dict()
    rows: Counter = Counter()
    for node in out["nodes"]:
        sign = {"upstream": -1, "downstream": 1}.get(node["direction"], 0)
        node["column"] = sign * node["depth"]
        node["row"] = rows[node["column"]]
        rows[node["column"]] += 1
        node["deleted"] = graph.nodes[node["key"]].deleted
    return out
