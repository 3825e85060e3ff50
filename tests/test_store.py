"""Every store backend runs the conformance suite in tests/store_conformance.py, plus backend-specific
checks (URL handling, the local store's real cross-process compare-and-swap)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from dvx.errors import UsageError
from dvx.fs import normalise_url, open_store
from dvx.fs.local import LocalStore
from store_conformance import STORE_FACTORIES, StoreConformance, make_state_machine


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request, tmp_path: Path):
    """A fresh, empty store of each registered backend."""
    s = STORE_FACTORIES[request.param](tmp_path)
    yield s
    s.close()


class TestStoreConformance(StoreConformance):
    """The shared contract, once per backend in STORE_FACTORIES."""


@pytest.mark.parametrize("backend", sorted(STORE_FACTORIES))
def test_store_behaves_like_a_dict_with_create_only_and_cas_writes(backend: str):
    """Random sequences of create-only puts, CAS puts (current, stale and None tokens), deletes and reads
    leave the store equal to a dict model."""
    machine = make_state_machine(STORE_FACTORIES[backend])
    # Every step is an HTTP round trip on the cloud emulators: fewer runs there keep the suite fast.
    runs = 40 if backend in ("memory", "local") else 8
    run_state_machine_as_test(machine, settings=settings(
        max_examples=runs, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))


# -- URLs ----------------------------------------------------------------------------------------------

def test_open_store_picks_the_backend_from_the_url(tmp_path: Path):
    """A folder path and file:// open the local store at an absolute path."""
    local = open_store(str(tmp_path / "a"))
    assert isinstance(local, LocalStore)
    assert local.url == str(tmp_path / "a")
    via_file = open_store(f"file://{tmp_path / 'b'}")
    assert isinstance(via_file, LocalStore) and via_file.url == str(tmp_path / "b")
    assert normalise_url("relative/x") == str(Path.cwd() / "relative" / "x")


@pytest.mark.parametrize("url", ["memory://", "memory:///"])
def test_memory_url_without_a_name_is_refused(url: str):
    """memory:// needs a name; it must never fall back to a local folder called 'memory:'."""
    with pytest.raises(UsageError):
        store = open_store(url)
        pytest.fail(f"{url!r} opened {type(store).__name__} at {store.url}")


@pytest.mark.parametrize("url, extra, sdk", [("s3://bucket/p", "s3", "s3fs"), ("gs://bucket", "gcs", "gcsfs"),
                                             ("az://c/p", "azure", "adlfs")])
def test_cloud_urls_without_their_backend_name_the_extra(url: str, extra: str, sdk: str,
                                                         monkeypatch: pytest.MonkeyPatch):
    """A cloud URL whose SDK is not installed is a UsageError that names the pip extra to install."""
    monkeypatch.setitem(sys.modules, sdk, None)  # what a missing package looks like to `import`
    with pytest.raises(UsageError, match=rf"dvx\[{extra}\]"):
        open_store(url)


def test_unknown_scheme_is_a_usage_error():
    """An unknown scheme is refused with a message naming it."""
    with pytest.raises(UsageError, match="ftpx"):
        open_store("ftpx://host/x")


# -- the local store's CAS across processes -----------------------------------------------------------

_INCREMENT = textwrap.dedent("""
    import sys
    from dvx.errors import PreconditionFailed
    from dvx.fs import open_store
    store = open_store(sys.argv[1])
    done = 0
    while done < int(sys.argv[2]):
        data, token = store.read_versioned("refs/counter")
        value = int(data or b"0")
        try:
            store.put_if("refs/counter", str(value + 1).encode(), token)
        except PreconditionFailed:
            continue
        done += 1
""")


def test_local_cas_loses_no_update_across_processes(tmp_path: Path):
    """Three processes each increment a counter 40 times through read_versioned/put_if: with a real
    compare-and-swap no increment is lost, so the counter ends at exactly 120."""
    root = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-c", _INCREMENT, str(root), "40"]) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert open_store(str(root)).read("refs/counter") == b"120"


_CREATE = textwrap.dedent("""
    import sys
    from dvx.fs import open_store
    store = open_store(sys.argv[1])
    won = [n for n in range(30) if store.put_create(f"versions/{n:04d}", sys.argv[2].encode())]
    print(",".join(map(str, won)))
""")


def test_local_create_only_has_one_winner_per_key_across_processes(tmp_path: Path):
    """Racing processes creating the same keys: every key is won by exactly one writer, whose bytes
    are the ones stored."""
    root = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-c", _CREATE, str(root), f"w{i}"], stdout=subprocess.PIPE,
                              text=True) for i in range(3)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    won = {i: {int(n) for n in out.split(",") if n} for i, out in enumerate(outputs)}
    all_won = [n for numbers in won.values() for n in numbers]
    assert sorted(all_won) == list(range(30))
    store = open_store(str(root))
    for writer, numbers in won.items():
        for n in numbers:
            assert store.read(f"versions/{n:04d}") == f"w{writer}".encode()


def test_local_upload_survives_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Pieces are gathered into writev(2) calls; a call that writes only part of them (allowed for
    regular files, e.g. near a quota) is resumed mid-piece, and the object holds every byte in order."""
    import os

    real_writev = os.writev
    calls = []

    def short_writev(fd, pieces):
        calls.append(len(pieces))
        first = bytes(memoryview(pieces[0])[:1000]) if len(pieces[0]) > 1000 else None
        return real_writev(fd, [first] if first else pieces[:2])

    monkeypatch.setattr("dvx.fs.local.os.writev", short_writev)
    store = LocalStore(tmp_path / "store")
    pieces = [bytes([i % 251]) * size for i, size in enumerate([5, 2500, 0, 1, 70_000, 3, 1 << 20, 999])]
    upload = store.begin_upload()
    for piece in pieces:
        upload.write(memoryview(piece))
    assert upload.tell() == sum(map(len, pieces))
    assert upload.commit("packs/aa/x.pack")
    assert store.read("packs/aa/x.pack") == b"".join(pieces)
    assert len(calls) > 2  # two flushes (at 1 MiB and at commit), each resumed after short writes
