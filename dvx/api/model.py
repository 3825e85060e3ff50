"""Plain result objects the API returns and the CLI renders (each has `to_dict` for --json)."""

from __future__ import annotations

import msgspec


class Version(msgspec.Struct):
    name: str
    version: int
    id: str
    created: str
    author: str
    message: str
    files: int
    bytes: int
    parents: list[str] = msgspec.field(default_factory=list)
    parent_ids: list[str] = msgspec.field(default_factory=list)
    tags: list[str] = msgspec.field(default_factory=list)
    kind: str = "dataset"
    inputs: list[str] = msgspec.field(default_factory=list)  # manifest ids of the datasets it was made from
    input_refs: list[str] = msgspec.field(default_factory=list)  # the same as NAME@vN
    new_bytes: int | None = None  # stored bytes its parents did not have (None: recorded before dvx kept it)

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_dict(self) -> dict:
        out = msgspec.to_builtins(self)
        out["ref"] = self.ref
        return out


class FileInfo(msgspec.Struct):
    path: str
    size: int
    digest: str
    executable: bool = False
    link: str | None = None

    def to_dict(self) -> dict:
        return msgspec.to_builtins(self)


class AddResult(msgspec.Struct):
    files: int = 0
    bytes: int = 0
    read_files: int = 0
    read_bytes: int = 0
    unchanged_files: int = 0
    stored_bytes: int = 0
    packs: int = 0

    def to_dict(self) -> dict:
        return msgspec.to_builtins(self)


class CommitResult(msgspec.Struct):
    version: Version
    created: bool
    stored_bytes: int = 0

    @property
    def ref(self) -> str:
        return self.version.ref

    @property
    def id(self) -> str:
        return self.version.id

    def to_dict(self) -> dict:
        out = self.version.to_dict()
        out["created_new_version"] = self.created
        out["stored_new_bytes"] = self.stored_bytes
        return out
