"""Scale benchmark (issue 8's targets): where dvx stands with huge versions, long lineages and many names.

    python benchmarks/scale.py                       # full sizes (about 30-40 min, ~12 GiB of temp disk)
    python benchmarks/scale.py --scale 100           # everything divided by 100: a smoke run
    python benchmarks/scale.py --only files,names    # some parts: files, bigfile, lineage, names

Parts, each timed through the installed `dvx` (whole processes, as a user runs them) unless noted:

  files    1,000,000 files of 1 KiB in 1,000 folders: first commit (time, peak RSS), re-commit with 100
           files changed, `dvx ls REF folder123`, `dvx get REF --glob 'folder123/*'`, `dvx.open` of one file;
           and how many manifest bytes the second version shares with the first
  bigfile  one 8 GiB random file: add + commit and get (time vs `cp` + `sync`, peak RSS)
  lineage  1,000 versions of a 1,000-file dataset, each changing 1 %: `dataset log`, `dataset show`,
           `get` of the latest and of v1; store size per version
  names    10,000 datasets with a tag each: `dataset list`, resolving `name@tag`

Setup that is not being measured (generating files, creating thousands of versions or names) uses the
Python API in one process. Targets are printed next to each number.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import format_bytes, remove_tree, run_command, timed_commands, tree_size  # noqa: E402
from tools import byte_compile_dvx, find_executables  # noqa: E402

PARTS = ("files", "bigfile", "lineage", "names")


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dvx = find_executables()["dvx"]
        if not self.dvx.available:
            sys.exit("dvx is not installed (pip install -e .)")
        byte_compile_dvx(self.dvx)
        self.work = Path(tempfile.mkdtemp(prefix="dvx-scale-", dir=args.workdir))
        self.rows: list[tuple[str, str, str, str]] = []

    def env(self, name: str) -> dict:
        return dict(os.environ, DVX_STORE=str(self.work / name / "store"), DVX_STATE_DIR=str(self.work / name / "state"),
                    DVX_CACHE_DIR=str(self.work / name / "cache"))

    def dvx_cmd(self, env: dict, *args: str, sample_rss: bool = False):
        return run_command([self.dvx.path, *args], env=env, sample_tree_rss=sample_rss)

    def timed(self, env: dict, *commands: list[str]) -> tuple[float, int]:
        measured = timed_commands([([self.dvx.path, *c], {"env": env}) for c in commands])
        return measured.seconds, measured.max_rss_bytes

    def row(self, part: str, what: str, value: str, target: str = "") -> None:
        self.rows.append((part, what, value, target))
        print(f"  {part:8} {what:58} {value:>16}  {target}", flush=True)

    def scaled(self, n: int) -> int:
        return max(1, n // self.args.scale)

    # -- parts ---------------------------------------------------------------------------------
    def files(self) -> None:
        count, folders = self.scaled(1_000_000), max(1, self.scaled(1_000))
        env = self.env("files")
        src = self.work / "files" / "src"
        rng = random.Random(1)
        started = time.perf_counter()
        for i in range(count):
            folder = src / f"folder{i % folders:03d}"
            if i < folders:
                folder.mkdir(parents=True)
            (folder / f"f{i:07d}.bin").write_bytes(rng.randbytes(1024))
        print(f"  (generated {count} files in {time.perf_counter() - started:.0f} s)", flush=True)
        seconds, rss = self.timed(env, ["dataset", "create", "big"], ["dataset", "add", str(src)],
                                  ["dataset", "commit", "-m", "first"])
        self.row("files", f"first commit of {count} files", f"{seconds:.1f} s", "< 300 s")
        self.row("files", "  peak RSS", format_bytes(rss), "<= 1 GiB")
        for i in rng.sample(range(count), min(100, count)):
            (src / f"folder{i % folders:03d}" / f"f{i:07d}.bin").write_bytes(rng.randbytes(1024))
        seconds, _ = self.timed(env, ["dataset", "create", "big"], ["dataset", "sync", str(src)],
                                ["dataset", "commit", "-m", "100 changed"])
        self.row("files", "re-commit with 100 files changed", f"{seconds:.1f} s", "< 30 s")
        manifests = sorted((self.work / "files" / "store" / "manifests").rglob("*.zst"), key=os.path.getmtime)
        self.row("files", "manifest objects / bytes of v2's", f"{len(manifests)} / "
                 f"{format_bytes(manifests[-1].stat().st_size)}", "v2 shares most bytes with v1")
        folder = f"folder{123 % folders:03d}"
        remove_tree(self.work / "files" / "cache")
        for what, args in (("ls REF SUBFOLDER (cold cache)", ["ls", "big@v2", folder]),
                           ("get REF --glob 'SUBFOLDER/*' (cold cache)",
                            ["get", "big@v2", "--glob", f"{folder}/*", "-o", str(self.work / "files" / "out")])):
            started = time.perf_counter()
            self.dvx_cmd(env, *args)
            self.row("files", what, f"{time.perf_counter() - started:.2f} s", "< 1 s (S3: < 1 s)")
        python = Path(self.dvx.path).parent / "python"
        code = (f"import time, dvx; t = time.perf_counter(); dvx.open('big@v2/{folder}/f{123:07d}.bin').read(); "
                "print(time.perf_counter() - t)")
        started = time.perf_counter()
        run_command([str(python), "-c", code], env=env)
        self.row("files", "dvx.open(REF/path).read() (process incl.)", f"{time.perf_counter() - started:.2f} s", "< 1 s")
        remove_tree(src)

    def bigfile(self) -> None:
        size = self.scaled(8 << 30)
        env = self.env("bigfile")
        src = self.work / "bigfile" / "src"
        src.mkdir(parents=True)
        with open(src / "big.bin", "wb") as f:
            for _ in range(0, size, 64 << 20):
                f.write(os.urandom(min(64 << 20, size)))
        cp = timed_commands([(["cp", "-r", str(src), str(self.work / "bigfile" / "copy")], {})]).seconds
        remove_tree(self.work / "bigfile" / "copy")
        seconds, rss = self.timed(env, ["dataset", "create", "huge"], ["dataset", "add", str(src)],
                                  ["dataset", "commit"])
        self.row("bigfile", f"commit one {format_bytes(size)} file (cp + sync {cp:.1f} s)",
                 f"{seconds:.1f} s ({seconds / cp:.2f}x)", "<= 2x cp, RSS <= 300 MiB")
        self.row("bigfile", "  peak RSS", format_bytes(rss))
        seconds, rss = self.timed(env, ["get", "huge@v1", "-o", str(self.work / "bigfile" / "out")])
        self.row("bigfile", "get it into an empty folder", f"{seconds:.1f} s ({seconds / cp:.2f}x)",
                 "<= 2x cp, RSS <= 300 MiB")
        self.row("bigfile", "  peak RSS", format_bytes(rss))
        remove_tree(self.work / "bigfile")

    def lineage(self) -> None:
        versions, files = self.scaled(1_000), 1_000
        env = self.env("lineage")
        setup = (
            "import os, random, sys, dvx\n"
            "versions, files, src = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]\n"
            "rng = random.Random(2)\n"
            "os.makedirs(src)\n"
            "for i in range(files):\n"
            "    open(f'{src}/f{i:04d}.bin', 'wb').write(rng.randbytes(4096))\n"
            "for v in range(versions):\n"
            "    if v:\n"
            "        for i in rng.sample(range(files), max(1, files // 100)):\n"
            "            open(f'{src}/f{i:04d}.bin', 'wb').write(rng.randbytes(4096))\n"
            "    d = dvx.Dataset.create('long')\n"
            "    d.sync(src)\n"
            "    d.commit(f'v{v + 1}')\n")
        python = Path(self.dvx.path).parent / "python"
        started = time.perf_counter()
        run_command([str(python), "-c", setup, str(versions), str(files), str(self.work / "lineage" / "src")],
                    env=env)
        print(f"  (made {versions} versions in {time.perf_counter() - started:.0f} s)", flush=True)
        store = self.work / "lineage" / "store"
        self.row("lineage", f"store size after {versions} versions of {files} x 4 KiB",
                 f"{format_bytes(tree_size(store))}", "grows with changes, not versions")
        for what, args in (("dataset log", ["dataset", "log", "long"]),
                           ("dataset show latest", ["dataset", "show", "long"]),
                           ("get latest", ["get", "long", "-o", str(self.work / "lineage" / "o1")]),
                           ("get v1", ["get", "long@v1", "-o", str(self.work / "lineage" / "o2")])):
            started = time.perf_counter()
            self.dvx_cmd(env, *args)
            self.row("lineage", what, f"{time.perf_counter() - started:.2f} s", "< 1 s")
        remove_tree(self.work / "lineage")

    def names(self) -> None:
        count = self.scaled(10_000)
        env = self.env("names")
        setup = (
            "import sys, dvx\n"
            "from dvx.api.repo import Repo\n"
            "from dvx.api.datasets import Dataset\n"
            "count, src = int(sys.argv[1]), sys.argv[2]\n"
            "import os; os.makedirs(src); open(f'{src}/a.txt', 'w').write('same content everywhere')\n"
            "repo = Repo()\n"
            "for i in range(count):\n"
            "    d = Dataset.create(f'team{i % 100:02d}/ds{i:05d}', repo=repo)\n"
            "    d.add(src)\n"
            "    d.commit('one', tags=['production'])\n")
        python = Path(self.dvx.path).parent / "python"
        started = time.perf_counter()
        run_command([str(python), "-c", setup, str(count), str(self.work / "names" / "src")], env=env)
        print(f"  (made {count} datasets in {time.perf_counter() - started:.0f} s)", flush=True)
        for what, args in (("dataset list", ["dataset", "list", "--json"]),
                           ("resolve name@tag (dataset show)", ["dataset", "show", f"team07/ds{7 % count:05d}@production"])):
            started = time.perf_counter()
            self.dvx_cmd(env, *args)
            self.row("names", f"{what} with {count} names", f"{time.perf_counter() - started:.2f} s",
                     "< 1 s local, < 2 s S3")
        remove_tree(self.work / "names")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1, help="divide every size and count by N")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    parser.add_argument("--workdir", default="/tmp")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}")
    bench = Bench(args)
    print(f"dvx scale benchmark, scale 1/{args.scale}, work folder {bench.work}")
    try:
        for part in parts:
            getattr(bench, part)()
    finally:
        remove_tree(bench.work)
    if args.json:
        args.json.write_text(json.dumps([dict(zip(("part", "what", "value", "target"), r)) for r in bench.rows],
                                        indent=2))


if __name__ == "__main__":
    main()
