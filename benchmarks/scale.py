"""Scale benchmark (issue 8's targets): where dvx stands with huge versions, long lineages and many names.

    python benchmarks/scale.py                       # full sizes (about 30-40 min, ~12 GiB of temp disk)
    python benchmarks/scale.py --scale 100           # everything divided by 100: a smoke run
    python benchmarks/scale.py --only files,names    # some parts: files, bigfile, lineage, names

Parts, each timed through the installed `dvx` (whole processes, as a user runs them) unless noted:

  files    1,000,000 files of 1 KiB in 1,000 folders: first commit (time, peak RSS), re-commit with 100
           files changed, `dvx ls REF` (the top level), `dvx ls REF folder123`, `dvx get REF --glob
           'folder123/*'`, `dvx.open` of one file;
           and how many manifest bytes the second version shares with the first
  bigfile  one 8 GiB random file: add + commit and get (time vs `cp` + `sync`, peak RSS)
  lineage  1,000 versions of a 1,000-file dataset, each changing 1 %: `dataset log`, `dataset show`,
           `get` of the latest and of v1; store size per version
  names    10,000 datasets with a tag each and 10,000 models with a `production` alias each: `dataset
           list`, `model list --alias production`, resolving `name@tag`; on the local store and on S3
           (moto's server, started by the script on 127.0.0.1, holding a copy of the same store)

Setup that is not being measured (generating files, creating thousands of versions or names) uses the
Python API in one process. Targets are printed next to each number.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
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
        self.cleanups: list = []  # called at the end (servers started by a part)
        self.s3_env: dict | None = None  # moto's endpoint and credentials, once started

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
        self.page_sharing(self.work / "files" / "store", env)
        folder = f"folder{123 % folders:03d}"
        self.partial_reads(env, "local", folder)
        s3_env = self._on_s3("files", env)
        if s3_env is not None:
            self.partial_reads(s3_env, "S3 (moto)", folder)
        remove_tree(src)

    def page_sharing(self, store: Path, env: dict) -> None:
        """How many of big@v2's manifest pages, and bytes, are new against big@v1."""
        python = Path(self.dvx.path).parent / "python"
        code = ("import json, dvx; from dvx.api.repo import Repo; r = Repo(); "
                "print(json.dumps([[p.id for p in r.manifest_root(r.resolve(ref).manifest).pages] "
                "+ [r.resolve(ref).manifest] for ref in ('big@v1', 'big@v2')]))")
        one, two = json.loads(run_command([str(python), "-c", code], env=env).stdout)
        size = {k: (store / ("manifests" if k in (one[-1], two[-1]) else "pages") / k[:2] / f"{k}.json.zst").stat().st_size
                for k in one + two}
        new = [k for k in two if k not in set(one)]
        total, fresh = sum(size[k] for k in two), sum(size[k] for k in new)
        self.row("files", "v2's manifest: new pages / all; new bytes / all",
                 f"{len(new) - 1}/{len(two) - 1}; {format_bytes(fresh)}/{format_bytes(total)} ({fresh / total:.1%})",
                 "v2 shares most bytes with v1")

    def partial_reads(self, env: dict, where: str, folder: str) -> None:
        """ls of the top level (its folders come from the root's folder summary), ls of one folder, get of
        one folder's glob and dvx.open of one file, each a whole process with an empty cache (the store
        read from scratch); medians of 3 runs."""
        cache = Path(env["DVX_CACHE_DIR"])
        python = Path(self.dvx.path).parent / "python"
        out = self.work / "files" / f"out-{where[:2]}"
        reads = (("ls REF (top level)", [self.dvx.path, "ls", "big@v2"]),
                 ("ls REF SUBFOLDER", [self.dvx.path, "ls", "big@v2", folder]),
                 ("get REF --glob 'SUBFOLDER/*'", [self.dvx.path, "get", "big@v2", "--glob", f"{folder}/*", "-o",
                                                   str(out)]),
                 ("dvx.open(REF/path).read()", [str(python), "-c",
                                                f"import dvx; dvx.open('big@v2/{folder}/f{123:07d}.bin').read()"]))
        for what, argv in reads:
            times = []
            for _ in range(3):
                remove_tree(cache)
                remove_tree(out)
                started = time.perf_counter()
                run_command(argv, env=env)
                times.append(time.perf_counter() - started)
            self.row("files", f"{what} ({where}, cold cache)", f"{statistics.median(times):.2f} s", "< 1 s")
        # The same reads inside a running program (a training script): a second call pays no imports
        # and no SDK session, only its requests (each call resolves and reads afresh; the chunk cache
        # is off so nothing is reused).
        folders = max(1, self.scaled(1_000))
        code = ("import json, statistics, sys, time, dvx\n"
                "folders = int(sys.argv[1])\n"
                "def timed(call):\n"
                "    started = time.perf_counter(); call(); return time.perf_counter() - started\n"
                "dvx.ls('big@v2', f'folder{7 % folders:03d}')\n"
                "ls = statistics.median(timed(lambda: dvx.ls('big@v2', f'folder{n % folders:03d}')) for n in (11, 12, 13))\n"
                "op = statistics.median(timed(lambda: dvx.open(f'big@v2/folder{n % folders:03d}/f{n:07d}.bin').read())"
                " for n in (21, 22, 23))\n"
                "print(json.dumps([ls, op]))\n")
        ls_seconds, open_seconds = json.loads(run_command(
            [str(python), "-c", code, str(folders)], env=dict(env, DVX_CHUNK_CACHE_MAX_SIZE="0")).stdout)
        self.row("files", f"dvx.ls / dvx.open in a running process ({where})",
                 f"{ls_seconds:.2f} / {open_seconds:.2f} s", "(no imports or session set-up)")

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
        # A few datasets and one model go through the whole API (chunks, manifests, drafts); the rest are
        # the same content committed under other names, written through the refs layer (as `dvx push`
        # imports versions), each name's writes sharing one catalog update. One process, not measured.
        setup = (
            "import os, sys, dvx\n"
            "from dvx.api.repo import Repo\n"
            "from dvx.refs import VersionRecord\n"
            "count, src = int(sys.argv[1]), sys.argv[2]\n"
            "os.makedirs(src); open(f'{src}/a.txt', 'w').write('same content everywhere')\n"
            "real = min(count, 20)\n"
            "for i in range(real):\n"
            "    d = dvx.Dataset.create(f'team{i % 100:02d}/ds{i:05d}')\n"
            "    d.add(src)\n"
            "    d.commit('one', tags=['production'])\n"
            "dvx.Model.register('team00/model00000', src, aliases=['production'], metrics={'acc': 0.5})\n"
            "repo = Repo()\n"
            "def fill(kind, first, name_of, notes):\n"
            "    refs = repo.refs(kind)\n"
            "    model = refs.get_version(name_of(0), 1)\n"
            "    for i in range(first, count):\n"
            "        name = name_of(i)\n"
            "        with refs.catalog.updating(name) as about_to_write:\n"
            "            about_to_write()\n"
            "            fields = {f: getattr(model, f) for f in model.__struct_fields__}\n"
            "            record = refs.allocate(VersionRecord(**{**fields, 'name': name, 'version': 0}))\n"
            "            refs.set_tag(name, 'production', record, by='bench', move=True)\n"
            "            if notes:\n"
            "                refs.update_annotations(name, 1, lambda n, i=i: n.metrics.update(acc=i / count) or\n"
            "                                        {'metrics': {'acc': i / count}}, by='bench')\n"
            "fill('dataset', real, lambda i: f'team{i % 100:02d}/ds{i:05d}', False)\n"
            "fill('model', 1, lambda i: f'team{i % 100:02d}/model{i:05d}', True)\n")
        python = Path(self.dvx.path).parent / "python"
        started = time.perf_counter()
        run_command([str(python), "-c", setup, str(count), str(self.work / "names" / "src")], env=env)
        print(f"  (made {count} datasets and {count} models, each with a production tag / alias, in "
              f"{time.perf_counter() - started:.0f} s)", flush=True)
        self._time_name_commands("local", env, count, "< 1 s")
        s3_env = self._on_s3("names", env)
        if s3_env is not None:
            self._time_name_commands("S3", s3_env, count, "< 2 s")
        remove_tree(self.work / "names")

    def _time_name_commands(self, where: str, env: dict, count: int, target: str) -> None:
        for what, args in (("dataset list", ["dataset", "list", "--json"]),
                           ("model list --alias production", ["model", "list", "--alias", "production", "--json"]),
                           ("resolve name@tag (dataset show)",
                            ["dataset", "show", f"team07/ds{7 % count:05d}@production"])):
            self.dvx_cmd(env, *args)  # the first run after setup may build shards no write touched
            started = time.perf_counter()
            self.dvx_cmd(env, *args)
            self.row("names", f"{what}, {count} names, {where}", f"{time.perf_counter() - started:.2f} s", target)

    def _on_s3(self, part: str, env: dict) -> dict | None:
        """The part's local store copied object for object into a bucket on moto's S3 server (started
        here on 127.0.0.1, once, in its own process so that it has a core to itself): the same keys, so
        the same versions, pages, refs and catalog. None when moto or s3fs is not installed."""
        try:
            import moto.server  # noqa: F401
            import s3fs
        except ImportError:
            print(f"  (moto[server] or s3fs is not installed: {part} on S3 skipped)", flush=True)
            return None
        if self.s3_env is None:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.cleanups.append(server.terminate)
            self.s3_env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
            os.environ.update(self.s3_env)
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        for _ in range(100):
            try:
                fs.mkdir(f"dvx-{part}")
                break
            except OSError:
                time.sleep(0.1)  # the server is still starting
        store = self.work / part / "store"
        local = [p for p in store.rglob("*") if p.is_file() and not p.relative_to(store).parts[0].startswith(".")]
        started = time.perf_counter()
        fs.put([str(p) for p in local], [f"dvx-{part}/{part}/{p.relative_to(store).as_posix()}" for p in local],
               batch_size=64)
        print(f"  (copied {len(local)} objects to moto's S3 in {time.perf_counter() - started:.0f} s)", flush=True)
        return dict(env, **self.s3_env, DVX_STORE=f"s3://dvx-{part}/{part}",
                    DVX_STATE_DIR=str(self.work / part / "s3-state"), DVX_CACHE_DIR=str(self.work / part / "s3-cache"))


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
        for cleanup in bench.cleanups:
            cleanup()
        remove_tree(bench.work)
    if args.json:
        args.json.write_text(json.dumps([dict(zip(("part", "what", "value", "target"), r)) for r in bench.rows],
                                        indent=2))


if __name__ == "__main__":
    main()
