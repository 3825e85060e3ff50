"""An interrupted `get` resumes: files already written (and verified) are kept, a half-written large
file keeps its verified chunks, and only the rest is read from the store again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dvx
from conftest import read_tree, write_tree
from dvx.errors import StoreError
from dvx.fs.local import LocalStore


class _FlakyReads:
    """Counts bytes read from packs; fails the read that would go past `fail_after` bytes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.read = 0
        self.fail_after: int | None = None
        real = LocalStore.read_ranges

        def read_ranges(store, key, ranges):
            wanted = sum(end - start for start, end in ranges)
            if self.fail_after is not None and self.read + wanted > self.fail_after:
                raise StoreError("connection reset (injected)")
            self.read += wanted
            return real(store, key, ranges)

        monkeypatch.setattr(LocalStore, "read_ranges", read_ranges)


@pytest.fixture
def big_version(tmp_path: Path) -> Path:
    files = {f"small/{i:02d}.bin": os.urandom(20_000) for i in range(40)}
    files["big.bin"] = os.urandom(40 << 20)  # incompressible: stored bytes == raw bytes
    src = write_tree(tmp_path / "src", files)
    ds = dvx.Dataset.create("big")
    ds.add(src)
    ds.commit("one")
    return src


@pytest.mark.parametrize("cached", [False, True], ids=["to-folder", "into-cache"])
def test_interrupted_get_resumes_without_reading_finished_chunks_again(
        big_version: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool):
    total = sum(f.stat().st_size for f in big_version.rglob("*") if f.is_file())
    reads = _FlakyReads(monkeypatch)
    reads.fail_after = total // 2
    dest = None if cached else tmp_path / "out"
    with pytest.raises(StoreError, match="injected"):
        dvx.get("big@v1", dest)
    first = reads.read
    assert 0 < first <= total // 2

    reads.read, reads.fail_after = 0, None
    path = dvx.get("big@v1", dest)
    assert read_tree(path) == read_tree(big_version)
    # Only what the first attempt did not finish is read again (plus at most one read batch of slack
    # for chunks that were fetched but not yet written when the error hit).
    assert reads.read <= total - first + (16 << 20), (first, reads.read, total)
    assert not list(Path(path).rglob("*.dvx-part"))


def test_get_into_a_folder_with_stale_files_rewrites_only_those(big_version: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    """Files with the right content are kept; changed or truncated ones are replaced."""
    out = dvx.get("big@v1", tmp_path / "out")
    (out / "small/03.bin").write_bytes(b"edited")
    with open(out / "big.bin", "r+b") as f:
        f.truncate(1000)
    reads = _FlakyReads(monkeypatch)
    dvx.get("big@v1", out)
    assert read_tree(out) == read_tree(big_version)
    assert reads.read < (40 << 20) + 200_000
    reads.read = 0
    dvx.get("big@v1", out)
    assert reads.read == 0
