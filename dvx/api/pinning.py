"""Pins: the project file (dvx.toml) names the exact dataset and model versions the code uses.

    [datasets."vision/cifar"]
    source = "vision/cifar@production"     # what was pinned (an alias / tag is resolved once, by `dvx pin`)
    version = "vision/cifar@v3"            # what it resolved to
    id = "1a2b3c…"                         # the immutable version id: this is what the pin means
    path = "data/cifar"                    # optional: where `dvx pull` materialises it (project-relative)

    [datasets."vision/cifar".expect]       # optional: what `dvx check` verifies (dvx/api/checks.py)
    files = { min = 1000 }

    [models.resnet]
    …

`dvx pin` rewrites only its own table's keys (comments and `expect` tables are kept, via tomlkit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from dvx.api.config import PROJECT_FILE, Settings
from dvx.api.repo import Repo
from dvx.errors import NotFoundError, UsageError
from dvx.refs import VersionRecord, check_name, parse_ref
from dvx.refs.store import DeletedVersion, VersionDeletedError

KIND_TABLES = {"dataset": "datasets", "model": "models"}
_ID_RE = re.compile(r"[0-9a-f]{32}")
_PIN_KEYS = {"source", "version", "id", "path", "expect"}


@dataclass(frozen=True)
class Pin:
    kind: str  # dataset | model
    name: str
    id: str
    version: str  # NAME@vN
    source: str  # the ref that was pinned, e.g. NAME@production
    path: str | None = None  # project-relative folder for `dvx pull`
    expect: dict[str, Any] = field(default_factory=dict)  # raw [… .expect] table, checked by dvx.api.checks

    @property
    def ref(self) -> str:
        """A ref that always means the pinned version (the version number is checked against the id)."""
        return self.version

    def folder(self, settings: Settings) -> Path | None:
        return None if self.path is None or settings.project_dir is None else settings.project_dir / self.path

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "id": self.id, "version": self.version,
                "source": self.source, "path": self.path}


def load_pins(settings: Settings) -> list[Pin]:
    """Every pin of the project (datasets first, then models, each sorted by name); [] outside a project.
    A malformed pin is a UsageError naming the file and the table."""
    if settings.project_dir is None:
        return []
    where = settings.project_dir / PROJECT_FILE
    pins = []
    for kind, table_name in KIND_TABLES.items():
        table = settings.project.get(table_name, {})
        if not isinstance(table, dict):
            raise UsageError(f"{where}: [{table_name}] must hold one table per name, like [{table_name}.NAME]")
        for name, entry in sorted(table.items()):
            pins.append(_parse_pin(kind, name, entry, where))
    return pins


def _parse_pin(kind: str, name: str, entry: Any, where: Path) -> Pin:
    label = f'[{KIND_TABLES[kind]}."{name}"]'
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: {label} must be a table")
    try:
        check_name(name)
    except UsageError as exc:
        raise UsageError(f"{where}: {label}: {exc}") from None
    unknown = sorted(set(entry) - _PIN_KEYS)
    if unknown:
        raise UsageError(f"{where}: {label} has unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(_PIN_KEYS))})")
    pin_id, version = entry.get("id"), entry.get("version")
    if not isinstance(pin_id, str) or not _ID_RE.fullmatch(pin_id):
        raise UsageError(f"{where}: {label} needs id = the 32-hex-digit version id (run `dvx pin {name}@…`)")
    if not isinstance(version, str):
        raise UsageError(f"{where}: {label} needs version = \"{name}@vN\"")
    parsed = parse_ref(version)
    if parsed.name != name or parsed.version_number is None:
        raise UsageError(f"{where}: {label}: version must be {name}@vN, not {version!r}")
    path = entry.get("path")
    if path is not None:
        path = _project_relative(path, where, label)
    expect = entry.get("expect", {})
    if not isinstance(expect, dict):
        raise UsageError(f"{where}: {label}: expect must be a table")
    source = entry.get("source", version)
    if not isinstance(source, str):
        raise UsageError(f"{where}: {label}: source must be a reference such as {name}@production")
    return Pin(kind=kind, name=name, id=pin_id, version=version, source=source, path=path, expect=expect)


def _project_relative(path: Any, where: Path, label: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise UsageError(f"{where}: {label}: path must be a folder inside the project")
    pure = PurePosixPath(path.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", path):
        raise UsageError(f"{where}: {label}: path {path!r} must stay inside the project (relative, no '..')")
    normal = str(pure)
    if normal in (".", "") or pure.parts[0] in (".dvx", PROJECT_FILE):
        raise UsageError(f"{where}: {label}: path {path!r} would overwrite the project itself")
    return normal


def find_pin(settings: Settings, name: str, kind: str) -> Pin | None:
    for pin in load_pins(settings):
        if pin.kind == kind and pin.name == name:
            return pin
    return None


def pinned_ref(settings: Settings, ref: str, kind: str) -> str:
    """A bare NAME inside a project that pins NAME means the pinned version; anything else is unchanged."""
    if "@" in ref or settings.project_dir is None:
        return ref
    pin = find_pin(settings, ref, kind)
    return pin.version if pin is not None else ref


def resolve_pin(repo: Repo, pin: Pin) -> VersionRecord:
    """The version a pin means. Its number is a shortcut: the id decides (a store whose NAME@vN is
    another version — e.g. a different store — is searched by id instead)."""
    refs = repo.refs(pin.kind)
    number = parse_ref(pin.version).version_number
    numbers = refs.all_version_numbers(pin.name)
    if number in numbers:
        record = refs.get_record(pin.name, number)
        if isinstance(record, VersionRecord) and record.manifest == pin.id:
            return record
        if isinstance(record, DeletedVersion) and record.deleted_manifest == pin.id:
            raise VersionDeletedError(record, what=f"pinned {pin.kind} {pin.version}",
                                      hint=f"pin another version with `dvx pin {pin.name}@…`")
    for record in refs.versions(pin.name):
        if record.manifest == pin.id:
            return record
    raise NotFoundError(f"pinned {pin.kind} {pin.version} (id {pin.id}) is not in store {repo.store.url}; "
                        f"push it there or re-pin with `dvx pin {pin.source}`")


def pin(repo: Repo, ref: str, kind: str = "dataset", path: str | None = None) -> Pin:
    """Resolve `ref` once and record it in the project's dvx.toml (creating or updating the pin; an
    existing pin's path and expectations are kept unless `path` is given)."""
    import tomlkit

    settings = repo.settings
    if settings.project_dir is None:
        raise UsageError("pins live in a project's dvx.toml: run `dvx init` first")
    where = settings.project_dir / PROJECT_FILE
    record = repo.resolve(ref, kind)
    label = f'[{KIND_TABLES[kind]}."{record.name}"]'
    if path is not None:
        path = _project_relative(path, where, label)
    document = tomlkit.parse(where.read_text(encoding="utf-8"))
    tables = document.get(KIND_TABLES[kind])
    if tables is None:
        tables = tomlkit.table(is_super_table=True)
        document[KIND_TABLES[kind]] = tables
    entry = tables.get(record.name)
    if entry is None:
        entry = tomlkit.table()
        tables[record.name] = entry
    entry["source"] = ref
    entry["version"] = record.ref
    entry["id"] = record.manifest
    if path is not None:
        entry["path"] = path
    where.write_text(tomlkit.dumps(document), encoding="utf-8")
    return _parse_pin(kind, record.name, tomlkit.parse(where.read_text(encoding="utf-8"))[KIND_TABLES[kind]]
                      [record.name].unwrap(), where)
