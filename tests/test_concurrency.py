"""Concurrency on one local store, with real processes: 8 writers commit to one dataset at the same
moment and 8 processes move one tag at the same moment, while readers loop over `dvx dataset log` and
`dvx get`. Every commit becomes its own version (none lost, none overwritten); the tag ends at one of
the written values with its whole history (each event starts where the previous one ended); and no
reader ever sees a half-written version: every version a reader sees verifies and has the files its
writer wrote.

Each process runs dvx's own CLI entry point (dvx.cli.main.main) after a barrier: a process first does
its preparation (imports, `create` and `add` for a writer), then waits until all of them are ready, so
the commits and tag moves really collide instead of being spread out by Python's start-up time.

docs/reliability.md states these guarantees and the counts."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from conftest import read_tree, write_tree

import dvx
from dvx.fs.local import LocalStore
from dvx.refs import Refs, parse_ref

WRITERS = 8
MOVERS = 8
READERS = 2

# Runs a list of dvx commands in one process: `before`, then (after every process of the group has
# written its ready file) `after`. Each command goes through dvx.cli.main.main, as the executable does.
LAUNCHER = r'''
import io, json, os, sys, time
from contextlib import redirect_stdout
from dvx.cli.main import main

plan = json.loads(sys.argv[1])

def run(args):
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            main(args)
    except SystemExit as exc:
        if exc.code:
            sys.stderr.write(f"FAILED {args}: exit {exc.code}\n")
            sys.exit(exc.code)
    return out.getvalue()

for args in plan["before"]:
    run(args)
open(plan["ready"], "w").close()
while len([n for n in os.listdir(plan["barrier"]) if n.startswith("ready")]) < plan["group"]:
    time.sleep(0.001)
for args in plan["after"]:
    sys.stdout.write(run(args))
'''

# Loops until the stop file appears: lists the versions (`dvx dataset log --json`) and gets each new one
# and the tag, checking every tree against what its writer wrote. Writes what it saw as JSON.
READER = r'''
import io, json, os, random, shutil, sys, tempfile
from contextlib import redirect_stderr, redirect_stdout
import xxhash
from dvx.cli.main import main

stop, report, mode = sys.argv[1:4]
seen, problems, gets, logs = {}, [], 0, 0

def run(args):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code or 0
    return code, out.getvalue(), err.getvalue()

def unique(k):
    return random.Random(k).randbytes(100_000)

def check(ref, folder):
    files = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            files[os.path.relpath(full, folder)] = open(full, "rb").read()
    who = files.get("who.txt", b"").decode()
    if who == "base":
        return
    if not who.startswith("writer-"):
        problems.append(f"{ref}: who.txt is {who!r}")
        return
    k = int(who.split("-")[1])
    if files.get(f"w/{k}.bin") != unique(k):
        problems.append(f"{ref}: writer {k}'s file is missing or wrong")
    for path, data in files.items():
        if path.startswith("w/") and data != unique(int(path[2:-4])):
            problems.append(f"{ref}: {path} is wrong")

while not os.path.exists(stop):
    if mode == "log":
        code, out, err = run(["dataset", "log", "ds", "--json"])
        logs += 1
        if code:
            problems.append(f"log failed: {err}")
            continue
        for version in json.loads(out):
            ref = version["ref"]
            if ref in seen:
                continue
            folder = tempfile.mkdtemp()
            code, _, err = run(["get", ref, "-o", folder])
            gets += 1
            if code:
                problems.append(f"get {ref} failed: {err}")
            else:
                check(ref, folder)
                seen[ref] = version["id"]
            shutil.rmtree(folder)
    else:
        for ref in ("ds", "ds@prod"):
            folder = tempfile.mkdtemp()
            code, _, err = run(["get", ref, "-o", folder])
            gets += 1
            if code and not (ref == "ds@prod" and code == 3):  # the tag may not exist yet
                problems.append(f"get {ref} failed: {err}")
            elif not code:
                check(ref, folder)
            shutil.rmtree(folder)
json.dump({"seen": seen, "problems": problems, "gets": gets, "logs": logs}, open(report, "w"))
'''


def unique(k: int) -> bytes:
    return random.Random(k).randbytes(100_000)


class Group:
    """Processes that prepare, meet at a barrier, then act at the same moment."""

    def __init__(self, tmp_path: Path, name: str, size: int):
        self.barrier = tmp_path / f"barrier-{name}"
        self.barrier.mkdir()
        self.size = size
        self.procs: list[subprocess.Popen] = []
        self.script = tmp_path / "launch.py"
        self.script.write_text(LAUNCHER)

    def start(self, before: list[list[str]], after: list[list[str]], env: dict[str, str]) -> None:
        plan = {"before": before, "after": after, "ready": str(self.barrier / f"ready-{len(self.procs)}"),
                "barrier": str(self.barrier), "group": self.size}
        self.procs.append(subprocess.Popen([sys.executable, str(self.script), json.dumps(plan)], env=env,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))

    def wait(self) -> list[str]:
        outputs = []
        for proc in self.procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"a process of the group failed:\n{err}"
            outputs.append(out)
        return outputs


class Readers:
    def __init__(self, tmp_path: Path, name: str):
        self.stop = tmp_path / f"stop-{name}"
        script = tmp_path / "reader.py"
        script.write_text(READER)
        self.reports = [tmp_path / f"reader-{name}-{i}.json" for i in range(READERS)]
        modes = ["log", "get"]
        self.procs = [subprocess.Popen([sys.executable, str(script), str(self.stop), str(report), modes[i % 2]],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                      for i, report in enumerate(self.reports)]

    def finish(self) -> list[dict]:
        self.stop.touch()
        reports = []
        for proc, report in zip(self.procs, self.reports):
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            reports.append(json.loads(report.read_text()))
        for report in reports:
            assert not report["problems"], report["problems"]
        return reports


def test_writers_and_tag_movers_race_without_losing_anything(tmp_path: Path, isolated, capsys):
    base = write_tree(tmp_path / "base", {"who.txt": "base", "shared.bin": unique(1000)})
    ds = dvx.Dataset.create("ds")
    ds.add(base)
    ds.commit("base")

    readers = Readers(tmp_path, "commits")
    # -- 8 writers: each its own machine (state and cache folders), one shared store ---------------------
    writers = Group(tmp_path, "writers", WRITERS)
    for k in range(WRITERS):
        src = write_tree(tmp_path / f"src{k}", {"who.txt": f"writer-{k}", f"w/{k}.bin": unique(k),
                                                 "shared.bin": unique(1000) + unique(2000)})
        env = dict(os.environ, DVX_STATE_DIR=str(tmp_path / f"state{k}"), DVX_CACHE_DIR=str(tmp_path / f"cache{k}"))
        writers.start(before=[["dataset", "create", "ds"], ["dataset", "add", str(src)]],
                      after=[["dataset", "commit", "-m", f"writer-{k}", "--json"]], env=env)
    commits = [json.loads(out) for out in writers.wait()]
    reports = readers.finish()

    refs = Refs(LocalStore(isolated["store"]))
    versions = refs.versions("ds")
    assert [v.version for v in versions] == list(range(1, WRITERS + 2))
    assert sorted(v.message for v in versions[1:]) == sorted(f"writer-{k}" for k in range(WRITERS))
    assert sorted(c["ref"] for c in commits) == [f"ds@v{n}" for n in range(2, WRITERS + 2)]
    for version in versions[1:]:
        k = int(version.message.split("-")[1])
        tree = read_tree(dvx.get(version.ref, tmp_path / "check" / version.ref))
        assert tree["who.txt"] == f"writer-{k}".encode() and tree[f"w/{k}.bin"] == unique(k)
        assert tree["shared.bin"] == unique(1000) + unique(2000)
    assert dvx.verify([v.ref for v in versions], mode="full").ok
    seen = reports[0]["seen"]
    assert all(seen[ref] == refs.resolve(parse_ref(ref)).manifest for ref in seen)

    # -- 8 processes move one tag at once -----------------------------------------------------------
    dvx.tag("ds@v1", "prod")
    readers = Readers(tmp_path, "tags")
    movers = Group(tmp_path, "movers", MOVERS)
    targets = list(range(2, MOVERS + 2))
    for k, target in enumerate(targets):
        movers.start(before=[["dataset", "list"]], after=[["tag", f"ds@v{target}", "prod", "--force"]],
                     env=dict(os.environ, DVX_AUTHOR=f"mover-{k}"))
    movers.wait()
    reports += readers.finish()

    tag = refs.get_tag("ds", "prod")
    history = tag.history
    assert history[0].action == "set" and history[0].to_version == 1
    moves = history[1:]
    assert sorted(e.to_version for e in moves) == targets, [(e.from_version, e.to_version) for e in history]
    for previous, event in zip(history, moves):
        assert event.action == "move" and event.from_version == previous.to_version, history
    assert tag.version == history[-1].to_version in targets
    assert tag.manifest == refs.get_version("ds", tag.version).manifest
    assert sorted(e.by for e in moves) == sorted(f"mover-{k}" for k in range(MOVERS))

    gets = sum(r["gets"] for r in reports)
    logs = sum(r["logs"] for r in reports)
    with capsys.disabled():
        print(f"\n[concurrency] {WRITERS} writers + {MOVERS} tag movers + {2 * READERS} readers "
              f"({gets} gets, {logs} logs, {len(seen)} versions seen while being written)")
