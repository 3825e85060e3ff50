"""Damaged stores: a flipped byte in a pack, a truncated pack, a missing pack, a damaged manifest.
`dvx get` of an affected file fails with one clear line (exit 5 for damage, 3 for a missing or cut-short
object) naming the version and the file; `get --glob` of the unaffected files still comes out right; and
no partially written output file is left in place (the output folder holds only complete, correct
files, and no `.dvx-part`). `dvx verify` reporting is tested in tests/test_verify.py.

docs/reliability.md states these guarantees."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pytest
from conftest import read_tree, run_dvx, run_dvx_in_process, write_tree

import dvx
from dvx.chunks.pack import pack_key
from dvx.chunks.store import CONFIG_KEY, StoreConfig
from dvx.manifests import manifest_key

EXIT_NOT_FOUND, EXIT_INTEGRITY = 3, 5


cli = run_dvx_in_process


def one_error_line(proc, codes: tuple[int, ...], *fragments: str) -> str:
    assert proc.returncode in codes, f"exit {proc.returncode}, expected {codes}\n{proc.stderr}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dvx: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def init_store(store: Path, pack_size: int) -> None:
    """A store whose config.json sets a small pack size, so one version spans many packs."""
    store.mkdir(parents=True, exist_ok=True)
    config = StoreConfig(store_id=uuid.uuid4().hex, created=datetime.now(timezone.utc).isoformat(),
                         pack_size=pack_size)
    (store / CONFIG_KEY).write_bytes(msgspec.json.encode(config, order="sorted"))


FILES = {
    "big.bin": 6 << 20,      # over 4 MiB: streamed into a .dvx-part file and renamed
    "mid.bin": 1_500_000,
    "small.txt": 10_000,     # small files are read in batches and written in one go
    "other.txt": 12_000,
    "sub/more.txt": 5_000,
}


@pytest.fixture
def version(tmp_path: Path, isolated) -> dict:
    """ds@v1 over packs of 1 MiB, each file in packs of its own; returns the source tree, the manifest
    and the store folder."""
    init_store(isolated["store"], 1 << 20)
    src = write_tree(tmp_path / "src", {path: os.urandom(size) for path, size in FILES.items()})
    ds = dvx.Dataset.create("ds")
    for path in FILES:  # one add per file: an add seals its last pack, so no two files share a pack
        ds.add(src / path, to=path.rpartition("/")[0])
    result = ds.commit("v1")
    from dvx.api.repo import Repo

    repo = Repo(store=str(isolated["store"]))
    manifest = repo.read_manifest(result.version.id)
    repo.close()
    return {"src": read_tree(src), "manifest": manifest, "store": isolated["store"], "id": result.version.id}


def _pack_path(version: dict, pack_id: str) -> Path:
    path = version["store"] / pack_key(pack_id)
    path.chmod(0o644)
    return path


def damage(version: dict, kind: str, target: str) -> set[str]:
    """Damage the store so that `target` can't be read; returns the paths that must still read."""
    by_path = version["manifest"].by_path()
    chunk = by_path[target].chunks[-1]
    pack = _pack_path(version, chunk.pack)
    if kind == "flip":
        with open(pack, "r+b") as f:
            f.seek(chunk.offset + chunk.length // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x5A]))
        return {p for p, e in by_path.items() if chunk.id not in {c.id for c in e.chunks}}
    if kind == "truncate":  # cut the pack at this chunk: it, later chunks and the footer are gone
        os.truncate(pack, chunk.offset)
        return {p for p, e in by_path.items()
                if all(c.pack != chunk.pack or c.offset + c.length <= chunk.offset for c in e.chunks)}
    if kind == "missing":
        pack.unlink()
        return {p for p, e in by_path.items() if all(c.pack != chunk.pack for c in e.chunks)}
    raise AssertionError(kind)  # pragma: no cover


def assert_no_partial_files(out: Path, src: dict[str, bytes], missing: str) -> None:
    """Whatever get left in `out` is complete and right: never the damaged file, never a .dvx-part."""
    if not out.exists():
        return
    left = read_tree(out)
    assert missing not in left, f"{missing} was left in {out}"
    hidden = [p for p in left if p.rsplit("/", 1)[-1].startswith(".")]
    assert not hidden, f"temporary files left: {hidden}"
    for path, content in left.items():
        assert content == src[path], f"{path} in {out} is not the stored content"


@pytest.mark.parametrize("target", ["big.bin", "small.txt"])
@pytest.mark.parametrize("kind, codes", [("flip", (EXIT_INTEGRITY,)), ("truncate", (EXIT_NOT_FOUND, EXIT_INTEGRITY)),
                                         ("missing", (EXIT_NOT_FOUND, EXIT_INTEGRITY))])
def test_get_of_a_damaged_file_fails_cleanly_and_the_rest_still_reads(version: dict, kind: str, codes: tuple,
                                                                      target: str, tmp_path: Path):
    intact = damage(version, kind, target)
    out = tmp_path / "out"
    # The whole version: fails naming the version and the damaged file, leaves no partial file.
    line = one_error_line(cli("get", "ds@v1", "-o", str(out)), codes, "ds@v1")
    assert "file " in line  # the first damaged file met (target, or another file in the same pack)
    assert_no_partial_files(out, version["src"], line.split("file ", 1)[1].split(":", 1)[0])
    # Just the damaged file: named in the error; nothing at its place.
    single = tmp_path / "single"
    one_error_line(cli("get", "ds@v1", "-o", str(single), "--glob", target), codes, "ds@v1", f"file {target}")
    assert_no_partial_files(single, version["src"], target)
    # The unaffected files, with --glob: come out right.
    assert intact, "the damage should leave some files readable"
    good = tmp_path / "good"
    proc = cli("get", "ds@v1", "-o", str(good), *[arg for path in sorted(intact) for arg in ("--glob", path)])
    assert proc.returncode == 0, proc.stderr
    assert read_tree(good) == {p: version["src"][p] for p in intact}


@pytest.mark.parametrize("kind", ["flip", "truncate", "missing"])
def test_get_into_the_cache_leaves_no_entry_behind(version: dict, kind: str, isolated):
    """Without -o the version is built in a temporary folder of the cache and renamed into place only
    when complete: after a failure there is no cache entry (damaged data is not kept for a resume)."""
    damage(version, kind, "big.bin")
    proc = run_dvx("get", "ds@v1", check=False)  # a real process for this one
    one_error_line(proc, (EXIT_NOT_FOUND, EXIT_INTEGRITY), "ds@v1", "file ")
    checkouts = isolated["cache"] / "checkouts"
    entries = sorted(p.name for p in checkouts.iterdir()) if checkouts.exists() else []
    assert not [e for e in entries if not e.startswith(".tmp-")], entries
    assert entries == [], entries


def test_a_damaged_manifest_fails_every_get_and_other_versions_still_read(version: dict, tmp_path: Path):
    """A flipped byte in the manifest: every get of that version fails (exit 5) naming the manifest,
    nothing is written; a version with another manifest still reads."""
    ds = dvx.Dataset.create("ds")
    ds.remove("mid.bin")
    ds.commit("v2")
    path = version["store"] / manifest_key(version["id"])
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    for args in (["get", "ds@v1", "-o", str(out)], ["get", "ds@v1", "-o", str(out), "--glob", "small.txt"],
                 ["get", "ds@v1"]):
        one_error_line(cli(*args), (EXIT_INTEGRITY,), version["id"])
    assert not out.exists()
    assert cli("get", "ds@v2", "-o", str(tmp_path / "v2")).returncode == 0
    assert read_tree(tmp_path / "v2") == {p: c for p, c in version["src"].items() if p != "mid.bin"}


def test_a_damaged_manifest_error_names_the_version(version: dict, tmp_path: Path):
    path = version["store"] / manifest_key(version["id"])
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-4])
    one_error_line(cli("get", "ds@v1", "-o", str(tmp_path / "out")), (EXIT_INTEGRITY,), "ds@v1", version["id"])


def test_a_missing_manifest_fails_naming_it(version: dict, tmp_path: Path):
    (version["store"] / manifest_key(version["id"])).unlink()
    one_error_line(cli("get", "ds@v1", "-o", str(tmp_path / "out")), (EXIT_NOT_FOUND, EXIT_INTEGRITY), version["id"])
    assert not (tmp_path / "out").exists()


def test_a_rerun_after_the_store_is_repaired_completes(version: dict, tmp_path: Path):
    """Damage found, pack restored (e.g. from a backup or `dvx fetch`), same get again: complete and
    right, with no temporary leftovers."""
    chunk = version["manifest"].by_path()["big.bin"].chunks[-1]
    pack = _pack_path(version, chunk.pack)
    backup = pack.read_bytes()
    damage(version, "truncate", "big.bin")
    out = tmp_path / "out"
    assert cli("get", "ds@v1", "-o", str(out)).returncode in (EXIT_NOT_FOUND, EXIT_INTEGRITY)
    pack.write_bytes(backup)
    assert cli("get", "ds@v1", "-o", str(out)).returncode == 0
    assert read_tree(out) == version["src"]
