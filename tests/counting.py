"""A store proxy that counts what reaches the store, for tests that assert requests per command."""

from __future__ import annotations

import pytest

import dvx.api.repo
from dvx.fsspec_impl import DvxFileSystem

_COUNTED = ("exists", "list", "info", "put_create", "put_if", "delete", "scan", "walk", "is_dir", "begin_upload")


class CountingStore:
    """Records every read that reaches the store as (key, bytes returned) in `log`, and every call of
    any kind as (method, key) in `calls`."""

    def __init__(self, inner, log: list[tuple[str, int]], calls: list[tuple[str, str]] | None = None):
        self._inner = inner
        self._log = log
        self._calls = calls if calls is not None else []

    def read(self, key):
        data = self._inner.read(key)
        self._log.append((key, len(data)))
        self._calls.append(("read", key))
        return data

    def read_ranges(self, key, ranges):
        blobs = self._inner.read_ranges(key, ranges)
        self._log.append((key, sum(len(b) for b in blobs)))
        self._calls.append(("read_ranges", key))
        return blobs

    def read_versioned(self, key):
        data, token = self._inner.read_versioned(key)
        self._log.append((key, len(data or b"")))
        self._calls.append(("read_versioned", key))
        return data, token

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name in _COUNTED:
            def counted(*args, **kwargs):
                self._calls.append((name, str(args[0]) if args else ""))
                return attr(*args, **kwargs)
            return counted
        return attr


def _patch(monkeypatch, log, calls):
    real = dvx.api.repo.open_store
    monkeypatch.setattr(dvx.api.repo, "open_store", lambda *a, **k: CountingStore(real(*a, **k), log, calls))
    DvxFileSystem.clear_instance_cache()


@pytest.fixture
def store_reads(monkeypatch) -> list[tuple[str, int]]:
    """Every store read made in this process from now on (through Repo, so dvx.*, dvx:// alike)."""
    log: list[tuple[str, int]] = []
    _patch(monkeypatch, log, [])
    yield log
    DvxFileSystem.clear_instance_cache()


@pytest.fixture
def store_calls(monkeypatch) -> list[tuple[str, str]]:
    """Every store call made in this process from now on, as (method, key): reads, listings, writes."""
    calls: list[tuple[str, str]] = []
    _patch(monkeypatch, [], calls)
    yield calls
    DvxFileSystem.clear_instance_cache()
