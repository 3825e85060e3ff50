"""The store contract: a flat key space of immutable objects plus a few compare-and-swap refs.

Keys are relative, '/'-separated strings such as ``packs/ab/abcd….pack``. Every object except refs is
written create-only; refs change only through `put_if` with the token returned by `read_versioned`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence

import msgspec

from dvx.errors import NotFoundError, UsageError


class ObjectInfo(msgspec.Struct, frozen=True):
    key: str
    size: int
    mtime: float


class Upload(abc.ABC):
    """A create-only object being written in pieces (packs are built this way). A piece handed to
    `write` may be kept and written later, so it must not change until commit or abort."""

    @abc.abstractmethod
    def write(self, data: bytes | memoryview) -> None: ...

    def flush(self) -> None:
        """Write out every piece handed to `write` so far; afterwards none of them is referenced."""

    @abc.abstractmethod
    def tell(self) -> int: ...

    @abc.abstractmethod
    def commit(self, key: str) -> bool:
        """Publish under `key` durably; False if the key already existed (content-addressed: same bytes)."""

    @abc.abstractmethod
    def abort(self) -> None: ...


class Store(abc.ABC):
    """Backend-neutral object access. Implementations: local folder, in-memory, (later) clouds."""

    url: str
    # Each request waits on a network round trip, so many small lookups are worth sending in parallel.
    # In a local folder a lookup takes microseconds, and starting threads costs more than it saves.
    latency_bound: bool = True

    @abc.abstractmethod
    def read(self, key: str) -> bytes:
        """Whole object; NotFoundError when absent."""

    @abc.abstractmethod
    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Byte ranges [start, end) of one object, in the order given."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Names directly under the folder `prefix` (no recursion), files and sub-folders alike."""

    @abc.abstractmethod
    def info(self, key: str) -> ObjectInfo: ...

    @abc.abstractmethod
    def put_create(self, key: str, data: bytes) -> bool:
        """Create-only write. Returns False (and writes nothing) when the key already exists."""

    @abc.abstractmethod
    def begin_upload(self) -> Upload: ...

    @abc.abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        """Current bytes and an opaque version token, or (None, None) when absent."""

    @abc.abstractmethod
    def put_if(self, key: str, data: bytes, token: str | None) -> str:
        """Compare-and-swap: write only if the key is still at `token` (None: still absent).

        Returns the new token; raises PreconditionFailed when another writer got there first.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    def walk(self, prefix: str) -> Iterable[str]:
        """Every object key below `prefix`, recursively."""
        for name in self.list(prefix):
            key = f"{prefix.rstrip('/')}/{name}" if prefix else name
            if self.is_dir(key):
                yield from self.walk(key)
            else:
                yield key

    @abc.abstractmethod
    def is_dir(self, key: str) -> bool: ...

    def scan(self, prefix: str) -> Iterable[ObjectInfo]:
        """Every object below `prefix`, recursively, with its size and modification time (what garbage
        collection needs to judge age). Backends override this with one listing; this fallback asks for
        each object's info. An object deleted while the scan runs may be left out."""
        for key in self.walk(prefix):
            try:
                yield self.info(key)
            except NotFoundError:
                continue

    def sweep_temporaries(self, older_than: float, dry_run: bool = False) -> list[ObjectInfo]:
        """Remove the backend's own leftovers of interrupted writes last modified before `older_than`
        (seconds since the epoch) and return what was (with `dry_run`: would be) removed. Keys are
        reported relative to the store root. Backends without such files have nothing to sweep."""
        return []

    def close(self) -> None:
        """Release cached handles."""


def check_key(key: str) -> str:
    """Keys are produced by dvx itself; refuse anything that could escape the store root."""
    parts = key.split("/")
    if (not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in key
            or parts[0].startswith(".dvx-")):
        raise UsageError(f"invalid store key {key!r}")
    return key
