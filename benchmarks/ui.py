"""Web UI benchmark (issue 9's targets): how fast `dvx ui` pages answer on the scale issue's sizes.

    python benchmarks/ui.py               # full sizes: a 1,000,000-file version, a 1,000-version history
    python benchmarks/ui.py --scale 100   # everything divided by 100: a smoke run

Fixtures, built with the Python API in one process (not measured):
  files    1,000,000 files of 1 KiB in 1,000 folders, committed as big@v1
  history  1,000 versions of a 10-file dataset (each changes one file), as long@v1..v1000

Then `dvx ui --port 0` runs as a user starts it, and for each page this prints
  - the JSON request(s) the page makes, over HTTP: the first (a cold server) and the median of 5 more;
  - the whole page in headless Chromium (Debian's, driven by Playwright) from navigation until its table
    is drawn: the median of 5 loads. Skipped, and said so, when Playwright or /usr/bin/chromium is missing.
    The lineage panel below a history is drawn by a request of its own after the table: JSON only.
For scale, `dvx ls` of the same folder (a whole process) is timed in the same run. Target: < 1 s each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import remove_tree, run_command
from tools import byte_compile_dvx, find_executables

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
RUNS = 5


def build(env: dict, work: Path, files: int, folders: int, versions: int) -> None:
    """The two fixtures, in one Python process with the benchmark's store and state folders."""
    setup = (
        "import os, random, sys, dvx\n"
        "files, folders, versions, src = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]\n"
        "rng = random.Random(1)\n"
        "for i in range(files):\n"
        "    folder = f'{src}/big/folder{i % folders:03d}'\n"
        "    if i < folders: os.makedirs(folder)\n"
        "    open(f'{folder}/f{i:07d}.bin', 'wb').write(rng.randbytes(1024))\n"
        "d = dvx.Dataset.create('big'); d.add(f'{src}/big'); d.commit('a million files')\n"
        "os.makedirs(f'{src}/long')\n"
        "for i in range(10): open(f'{src}/long/part{i}.csv', 'w').write('a,b\\n1,2\\n')\n"
        "for v in range(1, versions + 1):\n"
        "    open(f'{src}/long/part{v % 10}.csv', 'a').write(f'{v},{v}\\n')\n"
        "    d = dvx.Dataset.create('long'); d.sync(f'{src}/long'); d.commit(f'change {v}')\n")
    python = str(Path(find_executables()["dvx"].path).parent / "python")
    started = time.perf_counter()
    run_command([python, "-c", setup, str(files), str(folders), str(versions), str(work / "src")], env=env)
    print(f"  (built {files} files in {folders} folders and {versions} versions in "
          f"{time.perf_counter() - started:.0f} s)", flush=True)
    remove_tree(work / "src")


def start_ui(dvx: str, env: dict) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([dvx, "ui", "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    line = process.stdout.readline()
    match = re.search(r"at (http://\S+/)$", line.strip())
    if not match:
        process.kill()
        sys.exit(f"dvx ui did not start: {line}{process.stderr.read()}")
    return process, match.group(1).rstrip("/")


def timed_get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        json.loads(response.read())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1, help="divide every size and count by N")
    parser.add_argument("--workdir", default="/tmp")
    args = parser.parse_args()
    files, folders = max(10, 1_000_000 // args.scale), max(2, 1_000 // args.scale)
    versions = max(10, 1_000 // args.scale)
    dvx = find_executables()["dvx"]
    if not dvx.available:
        sys.exit("dvx is not installed (pip install -e '.[ui]')")
    byte_compile_dvx(dvx)
    work = Path(tempfile.mkdtemp(prefix="dvx-ui-bench-", dir=args.workdir))
    env = dict(os.environ, DVX_STORE=str(work / "store"), DVX_STATE_DIR=str(work / "state"),
               DVX_CACHE_DIR=str(work / "cache"))
    print(f"dvx ui benchmark, scale 1/{args.scale}, work folder {work}")
    server = None
    try:
        build(env, work, files, folders, versions)
        server, base = start_ui(dvx.path, env)
        folder = f"folder{random.Random(2).randrange(folders):03d}"
        pages = [  # what, page URL, the JSON requests it makes, a selector that is drawn once it has its data
            (f"folder page: root of a {files:,}-file version", "/datasets/big/-/v1",
             ["/api/version?ref=big@v1", "/api/tree?ref=big@v1&path=&offset=0&limit=200"], "#tree tbody tr"),
            (f"folder page: {folder} ({files // folders:,} files), first 200", f"/datasets/big/-/v1/tree/{folder}",
             ["/api/version?ref=big@v1", f"/api/tree?ref=big@v1&path={folder}&offset=0&limit=200"], "#tree tbody tr"),
            (f"folder page: {folder}, last 200", f"/datasets/big/-/v1/tree/{folder}?offset={max(0, files // folders - 200)}",
             [f"/api/tree?ref=big@v1&path={folder}&offset={max(0, files // folders - 200)}&limit=200"], "#tree tbody tr"),
            (f"history page of {versions:,} versions (newest 50)", "/datasets/long",
             ["/api/history?kind=dataset&name=long&offset=0&limit=50"], "#versions tbody tr"),
            (f"history page of {versions:,} versions (oldest 50)", f"/datasets/long?offset={max(0, versions - 50)}",
             [f"/api/history?kind=dataset&name=long&offset={max(0, versions - 50)}&limit=50"], "#versions tbody tr"),
            ("datasets list", "/datasets", ["/api/names?kind=dataset&q=&offset=0&limit=50"], "#names tbody tr"),
            # Drawn after the history table, by a request of its own: JSON only.
            (f"  its lineage panel (long@v{versions}, 3 hops each way)", None,
             [f"/api/lineage?ref=long@v{versions}&depth=3"], None),
            (f"diff page long@v{versions - 1} → long@v{versions}",
             f"/diff?kind=dataset&a=long@v{versions - 1}&b=long@v{versions}",
             [f"/api/diff?a=long@v{versions - 1}&b=long@v{versions}"], "#changes tbody tr"),
        ]
        # JSON first: the first request of each page meets data no request has read yet (cold).
        json_times = []
        for _, _, requests, _ in pages:
            cold = sum(timed_get(base + r) for r in requests)
            warm = statistics.median(sum(timed_get(base + r) for r in requests) for _ in range(RUNS))
            json_times.append((cold, warm))
        browser_times = measure_in_browser(base, pages)
        print(f"\n  {'page':58} {'JSON cold':>10} {'JSON warm':>10} {'browser':>10}   target")
        for (what, *_), (cold, warm), shown in zip(pages, json_times, browser_times):
            shown_text = f"{shown:.3f} s" if shown is not None else "—"
            print(f"  {what:58} {cold:>8.3f} s {warm:>8.3f} s {shown_text:>10}   < 1 s", flush=True)
        started = time.perf_counter()
        run_command([dvx.path, "ls", "big@v1"], env=env)
        print(f"  {'for scale: dvx ls big@v1 (root, a whole process)':58} {time.perf_counter() - started:>8.3f} s")
        started = time.perf_counter()
        run_command([dvx.path, "dataset", "log", "long"], env=env)
        print(f"  {'for scale: dvx dataset log long (all versions, a process)':58} "
              f"{time.perf_counter() - started:>8.3f} s")
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        remove_tree(work)


def measure_in_browser(base: str, pages: list) -> list[float | None]:
    """Median seconds from navigation until each page's table has rows, in headless Chromium."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("  (Playwright is not installed: browser timings skipped)")
        return [None] * len(pages)
    if not Path(CHROMIUM).exists():
        print(f"  (no {CHROMIUM}: browser timings skipped)")
        return [None] * len(pages)
    times: list[float | None] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for _, url, _, ready in pages:
            if url is None:
                times.append(None)
                continue
            runs = []
            for _ in range(RUNS):
                page.goto("about:blank")
                started = time.perf_counter()
                page.goto(base + url)
                page.wait_for_selector(ready)
                runs.append(time.perf_counter() - started)
            times.append(statistics.median(runs))
        browser.close()
    return times


if __name__ == "__main__":
    main()
