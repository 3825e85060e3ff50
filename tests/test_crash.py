"""Crash consistency: `dvx dataset add` + `dvx dataset commit`, and `dvx get`, are killed with SIGKILL at
many points of their run. Afterwards every committed version verifies (`dvx verify --full`), the earlier
version is intact, and running the same commands again completes the work: the add stores exactly the
chunks the killed run had not yet made durable (so a kill late in the add means the re-run stores less
than the whole), and a get ends with the right files and no temporary leftovers.

Each seed picks a kill time: seed i of N falls in the i-th N-th of the command's run, measured at the
start of the test from 3/4 of dvx's start-up time (before that only modules are being imported) to the
end of a whole run (stratified, so kills spread over everything the command does). To replay a failure:
    DVX_CRASH_SEEDS=7,12 DVX_CRASH_WINDOW=0.15,1.2 pytest tests/test_crash.py
(the failure message prints the seed, the kill time and the window).

docs/reliability.md states these guarantees and the counts."""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pytest
import xxhash
from conftest import dvx_executable, read_tree, run_dvx_in_process

import dvx
from dvx.api import Drafts, Repo
from dvx.chunks.pack import decode_footer
from dvx.chunks.store import CONFIG_KEY, StoreConfig
from dvx.fs.local import LocalStore
from dvx.refs import Refs

SEEDS_PER_KIND = 32
# `get` into the cache is the same command as `get -o` with another last step (the whole folder is
# renamed into place): every third seed there (11 of 32, still spread over the whole run).
CACHE_SEED_STEP = 3
PACK_SIZE = 2 << 20


def seeds() -> list[int]:
    chosen = os.environ.get("DVX_CRASH_SEEDS")
    return [int(s) for s in chosen.split(",")] if chosen else list(range(SEEDS_PER_KIND))


def kill_delay(seed: int, window: tuple[float, float]) -> float:
    """Seed i's kill time: a reproducible point inside the i-th of SEEDS_PER_KIND slices of `window`."""
    start, end = window
    return start + (end - start) * (seed % SEEDS_PER_KIND + random.Random(seed).random()) / SEEDS_PER_KIND


def kill_window(args: list[str], runs: list[float]) -> tuple[float, float]:
    """From 3/4 of dvx's start-up time (measured with `dvx dataset list`: before that the process has
    only imported modules, so a kill there is trivially safe) to the end of a whole run (the fastest
    of `runs`). DVX_CRASH_WINDOW=START,END pins it to replay a failure."""
    if os.environ.get("DVX_CRASH_WINDOW"):
        start, end = (float(x) for x in os.environ["DVX_CRASH_WINDOW"].split(","))
        return start, end
    startup = min(timed(["dataset", "list"])[0] for _ in range(2))
    return 0.75 * startup, max(min(runs), startup)


cli = run_dvx_in_process


def run_then_kill(commands: list[list[str]], delay: float) -> int:
    """Run `commands` one after another as real processes (like `a && b`); SIGKILL the one running
    `delay` seconds after the start. Returns how many completed."""
    start = time.monotonic()
    for done, args in enumerate(commands):
        proc = subprocess.Popen([dvx_executable(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=max(0.0, delay - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return done
        assert proc.returncode == 0, f"dvx {' '.join(args)} failed before the kill:\n{err.decode()}"
    return len(commands)


def timed(args: list[str]) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run([dvx_executable(), *args], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return time.monotonic() - start, proc.stdout


def make_source(root: Path, seed: int = 0, big: int = 2, folders: int = 8) -> Path:
    """`big` incompressible files of 6 MiB (streamed by get) and 50 small ones in each of `folders`."""
    rng = random.Random(seed)
    for i in range(big):
        (root / f"big{i}.bin").parent.mkdir(parents=True, exist_ok=True)
        (root / f"big{i}.bin").write_bytes(rng.randbytes(6 << 20))
    for folder in range(folders):
        (root / f"d{folder}").mkdir(parents=True, exist_ok=True)
        for i in range(50):
            (root / f"d{folder}/f{i:03d}.bin").write_bytes(rng.randbytes(rng.randrange(1000, 8000)))
    return root


def init_store(store: Path) -> None:
    store.mkdir(parents=True, exist_ok=True)
    config = StoreConfig(store_id="c" * 32, created=datetime.now(timezone.utc).isoformat(), pack_size=PACK_SIZE)
    (store / CONFIG_KEY).write_bytes(msgspec.json.encode(config, order="sorted"))


class Live:
    """The store, state and cache folders the dvx processes use (the test's isolated folders), saved to a
    template once and restored from it before each seed (drafts are keyed by the store's path, so the
    folders keep their places)."""

    def __init__(self, isolated: dict, tmp_path: Path):
        self.folders = {k: isolated[k] for k in ("store", "state", "cache")}
        self.template = tmp_path / "template"

    def save(self) -> None:
        for name, folder in self.folders.items():
            if folder.exists():
                shutil.copytree(folder, self.template / name, symlinks=True)

    def restore(self) -> None:
        for name, folder in self.folders.items():
            if folder.exists():
                shutil.rmtree(folder)
            if (self.template / name).exists():
                shutil.copytree(self.template / name, folder, symlinks=True)


def indexed_chunks(store: Path) -> dict[str, int]:
    """chunk id → stored length, over every index segment in the store (what an add dedups against)."""
    out = {}
    for segment in (store / "index").glob("*.idx"):
        for ref in decode_footer(segment.read_bytes(), segment.stem):
            out[ref.id] = ref.length
    return out


def versions(store: Path) -> list:
    return Refs(LocalStore(store)).versions("ds")


def digests(tree: dict[str, bytes]) -> dict[str, str]:
    return {path: xxhash.xxh3_128_hexdigest(data) for path, data in tree.items()}


def assert_all_versions_verify(store: Path, context: str) -> list:
    found = versions(store)
    proc = cli("verify", "--full", *[v.ref for v in found])
    assert proc.returncode == 0, f"{context}: verify --full failed\n{proc.stdout}{proc.stderr}"
    return found


# -- add + commit --------------------------------------------------------------------------------------

def test_add_and_commit_killed_anywhere_lose_nothing_and_resume(tmp_path: Path, isolated, capsys):
    first = {f"base/{i}.txt": f"version one, file {i}\n".encode() for i in range(20)}
    base_src = tmp_path / "base-src"
    for path, data in first.items():
        (base_src / path).parent.mkdir(parents=True, exist_ok=True)
        (base_src / path).write_bytes(data)
    src = make_source(tmp_path / "src", big=3)  # ~20 MB in 10 packs, 400 small files
    expected_v2 = digests({**first, **read_tree(src)})

    init_store(isolated["store"])
    ds = dvx.Dataset.create("ds")
    ds.add(base_src / "base", to="base")
    v1 = ds.commit("v1").version
    dvx.Dataset.create("ds")  # the draft of v2, open before each killed run
    live = Live(isolated, tmp_path)
    live.save()
    template_index = indexed_chunks(isolated["store"])

    # Measure a whole run (and what it stores): the faster of two, the first reading cold files.
    add = ["dataset", "add", str(src), "--json"]
    commit = ["dataset", "commit", "-m", "v2"]
    durations = []
    for _ in range(2):
        live.restore()
        add_time, out = timed(add)
        full_stored = json.loads(out)["stored_bytes"]
        durations.append(add_time + timed(commit)[0])
    window = kill_window(add, durations)
    assert full_stored > 18 << 20

    phases: collections.Counter = collections.Counter()
    partial_resumes = 0
    duplicates = 0
    for seed in seeds():
        live.restore()
        delay = kill_delay(seed, window)
        context = f"seed {seed} (kill after {delay:.3f} s, window {window[0]:.3f},{window[1]:.3f})"
        completed = run_then_kill([add, commit], delay)

        # Right after the kill: every version there verifies, v1 unchanged.
        found = assert_all_versions_verify(isolated["store"], context)
        assert found[0].manifest == v1.id, context
        assert {f.path: f.digest for f in dvx.files("ds@v1")} == digests(first), context
        draft_open = "ds" in Drafts(Repo()).names()
        now_indexed = indexed_chunks(isolated["store"])
        made_durable = sum(length for cid, length in now_indexed.items() if cid not in template_index)
        uploading = any((isolated["store"] / ".dvx-tmp").glob("upload-*"))
        phase = ("add, nothing stored yet" if completed == 0 and not made_durable and not uploading else
                 "add, first pack unfinished" if completed == 0 and not made_durable else
                 "add, some packs durable" if completed == 0 else
                 "commit, no version yet" if len(found) == 1 else
                 "commit, version written, draft still open" if draft_open else "finished")
        phases[phase] += 1

        # Run the commands again (the draft, if the kill left it, is picked up again).
        if draft_open:
            proc = cli(*add)
            assert proc.returncode == 0, f"{context}: re-run add failed\n{proc.stderr}"
            rerun_stored = json.loads(proc.stdout)["stored_bytes"]
            # Nothing made durable before the kill is stored again, and nothing is missing.
            assert rerun_stored + made_durable == full_stored, (context, phase, rerun_stored, made_durable)
            if 0 < made_durable < full_stored:
                partial_resumes += 1
                assert rerun_stored < full_stored
            proc = cli(*commit)
            assert proc.returncode == 0, f"{context}: re-run commit failed\n{proc.stderr}"
        found = assert_all_versions_verify(isolated["store"], context)
        if phase == "commit, version written, draft still open":
            duplicates += len(found) - 2  # see test_a_commit_killed_after_its_version_is_not_repeated
        else:
            assert len(found) == 2, f"{context}: {[v.ref for v in found]}"
        assert {f.path: f.digest for f in dvx.files(found[-1].ref)} == expected_v2, context
        assert [v.manifest for v in found[:1]] == [v1.id]

    with capsys.disabled():
        print(f"\n[crash add+commit] {len(seeds())} seeds over {window[0]:.2f}-{window[1]:.2f} s: {dict(phases)}; "
              f"{partial_resumes} resumed a partly stored add; {duplicates} duplicate versions")
    if len(seeds()) >= SEEDS_PER_KIND:
        assert partial_resumes >= 1, f"no kill landed while packs were being written: {dict(phases)}"


def test_a_commit_killed_after_its_version_is_not_repeated(tmp_path: Path, isolated, monkeypatch):
    """The narrow window the random kills rarely hit: the version record is written, then the process
    dies before closing the draft. Running `commit` again must not make a second version."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    ds = dvx.Dataset.create("ds")
    ds.add(src)
    from dvx.api.datasets import Drafts

    def die(self, name):
        raise KeyboardInterrupt  # the process is killed here: the draft stays

    with monkeypatch.context() as patch:
        patch.setattr(Drafts, "delete", die)
        with pytest.raises(KeyboardInterrupt):
            ds.commit("v1")
    assert [v.ref for v in dvx.log("ds")] == ["ds@v1"]
    dvx.Dataset.open("ds").commit("v1")
    assert [v.ref for v in dvx.log("ds")] == ["ds@v1"]


# -- get -----------------------------------------------------------------------------------------------

def _partial_at_final_names(out: Path, source: dict[str, bytes]) -> list[str]:
    """Files in `out` (under their final names) whose content is not the source's."""
    if not out.exists():
        return []
    return sorted(p for p, data in read_tree(out).items()
                  if not p.rsplit("/", 1)[-1].startswith(".") and data != source.get(p))


@pytest.mark.parametrize("into", ["folder", "cache"])
def test_get_killed_anywhere_resumes_to_the_right_files(into: str, tmp_path: Path, isolated, capsys):
    src = make_source(tmp_path / "src", seed=1, folders=4)  # ~13 MB, 200 small files
    source = read_tree(src)
    init_store(isolated["store"])
    ds = dvx.Dataset.create("ds")
    ds.add(src)
    ds.commit("v1")
    out = tmp_path / "out"
    args = ["get", "ds@v1", "-o", str(out)] if into == "folder" else ["get", "ds@v1"]
    checkouts = isolated["cache"] / "checkouts"

    def reset() -> None:
        shutil.rmtree(out, ignore_errors=True)
        if checkouts.exists():
            for entry in checkouts.iterdir():
                if entry.is_dir():
                    for folder, dirs, _files in os.walk(entry):
                        os.chmod(folder, 0o755)
                    shutil.rmtree(entry)
                else:
                    entry.unlink()

    measured = []
    for _ in range(2):
        reset()
        measured.append(timed(args)[0])
    window = kill_window(args, measured)
    kills = left_files = partial_small = 0
    chosen = seeds() if into == "folder" else [s for s in seeds() if s % CACHE_SEED_STEP == 0]
    for seed in chosen:
        reset()
        delay = kill_delay(seed, window)
        context = f"seed {seed} (kill after {delay:.3f} s, window {window[0]:.3f},{window[1]:.3f})"
        kills += run_then_kill([args], delay) == 0
        if into == "folder":
            # A large file is never at its final name unless complete. A small file is written in one
            # write(2) after verification, which a SIGKILL can still cut short (counted, and repaired by
            # the re-run, which checks what it finds).
            broken = _partial_at_final_names(out, source)
            assert all(source[p] and len(source[p]) <= 4 << 20 for p in broken), (context, broken)
            partial_small += len(broken)
            left_files += out.exists() and len(read_tree(out)) > len(broken)
        proc = cli(*args)
        assert proc.returncode == 0, f"{context}: re-run failed\n{proc.stderr}"
        path = Path(proc.stdout.strip())
        assert read_tree(path) == source, context
        leftovers = [p for p in path.rglob("*") if p.name.startswith(".")]
        assert not leftovers, (context, leftovers)
        if checkouts.exists():
            assert not [e for e in checkouts.iterdir() if e.name.startswith(".tmp-")], context
    with capsys.disabled():
        print(f"\n[crash get into {into}] {len(chosen)} seeds over {window[0]:.2f}-{window[1]:.2f} s: "
              f"{kills} killed mid-run"
              + (f", {left_files} left complete files for the re-run to keep, {partial_small} small files cut "
                 f"short at their "
                 f"final name (repaired by the re-run)" if into == "folder" else ""))
