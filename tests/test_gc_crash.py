"""kill -9 of `dvx gc` at many points: live versions stay intact and the next gc finishes the work.

Complements tests/test_crash.py (add, commit, get) for the reliability guarantees in docs/reliability.md.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import dvx_executable, run_dvx, write_tree

SEEDS = 30
DATASETS = 12  # half of them deleted: their packs and manifests are what the killed gc deletes


@pytest.fixture(scope="module")
def condemned_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store where a first gc (grace 0) has condemned the data of 6 deleted datasets, so the next gc
    run deletes it: the run the test kills."""
    root = tmp_path_factory.mktemp("gc-crash")
    env = _env(root / "store", root)
    for i in range(DATASETS):
        folder = write_tree(root / f"src{i}", {"data.bin": random.Random(i).randbytes(200_000), "n.txt": str(i)})
        for args in (["dataset", "create", f"d{i:02d}"], ["dataset", "add", str(folder)], ["dataset", "commit"]):
            run_dvx(*args, env=env)
    for i in range(0, DATASETS, 2):
        run_dvx("dataset", "delete", f"d{i:02d}@v1", env=env)
    run_dvx("gc", "--grace", "0s", "--force", env=env)  # condemns; deleting needs a second run
    return root / "store"


def _env(store: Path, root: Path) -> dict[str, str]:
    return {"DVX_STORE": str(store), "DVX_STATE_DIR": str(root / "state"), "DVX_CACHE_DIR": str(root / "cache")}


def _gc(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([dvx_executable(), "gc", "--grace", "0s", "--force"], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_gc_killed_at_any_point_loses_no_live_data_and_the_next_run_finishes(condemned_store: Path, tmp_path: Path):
    """30 seeds: copy the condemned store, start the deleting gc run, SIGKILL it after a random delay
    within its measured duration; then every live version verifies in full, deleted versions stay
    deleted, and two more gc runs remove every unreachable object (nothing left condemned or pending)."""
    probe = tmp_path / "probe"
    shutil.copytree(condemned_store, probe)
    started = time.perf_counter()
    proc = _gc(_env(probe, tmp_path / "p"))
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    duration = time.perf_counter() - started
    killed_mid_run = 0
    for seed in range(SEEDS):
        store = tmp_path / f"s{seed}"
        shutil.copytree(condemned_store, store)
        env = _env(store, tmp_path / f"w{seed}")
        delay = random.Random(seed).uniform(0.05, 1.0) * duration
        proc = _gc(env)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_mid_run += 1
        proc.wait(timeout=120)
        live = [f"d{i:02d}@v1" for i in range(1, DATASETS, 2)]
        run_dvx("verify", "--full", *live, env=env)
        gone = run_dvx("get", "d00@v1", env=env, check=False)
        assert gone.returncode == 3 and "deleted" in gone.stderr
        for _ in range(2):
            run_dvx("gc", "--grace", "0s", "--force", env=env)
        leftovers = [p for p in (store / "packs").rglob("*.pack")]
        assert len(leftovers) == DATASETS // 2, (seed, len(leftovers))  # one pack per live dataset
        # Nothing left to do; only a killed run's sweep marker may remain until its deadline passes.
        assert not [p.name for p in (store / "gc").glob("condemned-*")], seed
        run_dvx("verify", "--full", *live, env=env)
        shutil.rmtree(store)
    assert killed_mid_run >= SEEDS // 2, killed_mid_run  # most kills landed while gc was working


def test_a_dead_gc_sweep_marker_is_removed_once_its_deadline_has_passed(tmp_path: Path, isolated,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """A gc killed mid-sweep leaves its marker (writers that need the listed keys wait for it). Once
    the marker's deadline plus the clock margin has passed, that gc can delete nothing more, and the
    next gc removes the marker."""
    import msgspec

    from dvx.api import garbage
    from dvx.api.repo import Repo

    run_dvx("dataset", "create", "d")
    run_dvx("dataset", "add", str(write_tree(tmp_path / "src", {"a.txt": "a"})))
    run_dvx("dataset", "commit")
    store = Repo().store
    now = time.time()
    for name, until in (("sweep-dead-1.json", now - garbage.CLOCK_MARGIN - 5), ("sweep-live-1.json", now + 60)):
        store.put_create(f"gc/{name}", msgspec.json.encode(garbage.SweepMarker(id=name, started=now - 700,
                                                                               until=until, keys=["packs/x"])))
    garbage.collect_garbage(Repo(), grace=0.0)
    assert sorted(store.list("gc")) == ["sweep-live-1.json"]
