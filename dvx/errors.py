"""Errors shared by every layer; each carries the exit code the CLI reports (docs/cli.md lists them)."""

from __future__ import annotations


class DvxError(Exception):
    """A failure the user can act on: printed as one `dvx: error: …` line. (Exit code 1 is kept for
    "a check found a problem": `dvx status` drift, a failed `dvx check`.)"""

    exit_code = 70


class UsageError(DvxError):
    """Bad input: an invalid name, reference, path or option value."""

    exit_code = 2


class NotFoundError(DvxError):
    """A dataset, version, tag, path, draft or stored object does not exist."""

    exit_code = 3


class ConflictError(DvxError):
    """The operation collides with existing state: a draft, a tag, a concurrent writer."""

    exit_code = 4


class IntegrityError(DvxError):
    """Stored data failed verification (hash mismatch, truncated pack, bad format)."""

    exit_code = 5


class StoreError(DvxError):
    """The store could not be reached, read or written."""

    exit_code = 6


class AlreadyExistsError(ConflictError):
    """A create-only write found the key already present."""


class PreconditionFailed(ConflictError):
    """A compare-and-swap write found the key changed since it was read."""
