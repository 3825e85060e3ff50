"""Differences between two file maps: added, removed, modified, renamed (same content, new path)."""

from __future__ import annotations


import msgspec

from dvx.manifests.model import EMPTY_DIGEST, FileEntry


class Change(msgspec.Struct, frozen=True):
    kind: str  # added | removed | modified | renamed
    path: str
    old_path: str | None = None
    old_size: int = 0
    new_size: int = 0

    def to_dict(self) -> dict:
        out = {"change": self.kind, "path": self.path, "old_size": self.old_size, "new_size": self.new_size}
        if self.old_path is not None:
            out["old_path"] = self.old_path
        return out


def diff_files(old: dict[str, FileEntry], new: dict[str, FileEntry]) -> list[Change]:
    changes: list[Change] = []
    removed = {p: e for p, e in old.items() if p not in new}
    added = {p: e for p, e in new.items() if p not in old}
    for path, entry in new.items():
        before = old.get(path)
        if before is not None and not before.same_content(entry):
            changes.append(Change("modified", path, old_size=before.size, new_size=entry.size))
    renamed_from: dict[str, list[str]] = {}
    for path, entry in sorted(removed.items()):
        if entry.link is None and entry.digest != EMPTY_DIGEST:
            renamed_from.setdefault(entry.digest, []).append(path)
    for path, entry in sorted(added.items()):
        sources = renamed_from.get(entry.digest) if entry.link is None else None
        if sources:
            old_path = sources.pop(0)
            del removed[old_path]
            changes.append(Change("renamed", path, old_path=old_path, old_size=entry.size, new_size=entry.size))
        else:
            changes.append(Change("added", path, new_size=entry.size))
    changes.extend(Change("removed", p, old_size=e.size) for p, e in removed.items())
    return sorted(changes, key=lambda c: (c.path, c.kind))


def summarise(changes: list[Change]) -> dict[str, int]:
    counts = {"added": 0, "removed": 0, "modified": 0, "renamed": 0}
    for change in changes:
        counts[change.kind] += 1
    counts["bytes_added"] = sum(c.new_size for c in changes if c.kind == "added")
    counts["bytes_removed"] = sum(c.old_size for c in changes if c.kind == "removed")
    counts["bytes_modified"] = sum(c.new_size for c in changes if c.kind == "modified")
    return counts
