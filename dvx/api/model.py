"""Plain result objects the API returns and the CLI renders (each has `to_dict` for --json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Version:
    name: str
    version: int
    id: str
    created: str
    author: str
    message: str
    files: int
    bytes: int
    parents: list[str] = field(default_factory=list)
    parent_ids: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    kind: str = "dataset"
    inputs: list[str] = field(default_factory=list)  # manifest ids of the datasets it was made from
    input_refs: list[str] = field(default_factory=list)  # the same as NAME@vN
    new_bytes: int | None = None  # stored bytes its parents did not have (None: recorded before dvx kept it)

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ref"] = self.ref
        return out


@dataclass
class FileInfo:
    path: str
    size: int
    digest: str
    executable: bool = False
    link: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AddResult:
    files: int = 0
    bytes: int = 0
    read_files: int = 0
    read_bytes: int = 0
    unchanged_files: int = 0
    stored_bytes: int = 0
    packs: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CommitResult:
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
