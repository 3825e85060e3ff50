"""Measuring primitives: run processes, time them, read their memory, size folders.

Standard library only, so the benchmarks run with any Python 3.11.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _find_gnu_time() -> str | None:
    """GNU time reports a command's own peak RSS (%M).

    We prefer it to os.wait4's ru_maxrss: a child forked from this Python process
    carries the parent's RSS high-water mark across exec, which would inflate small tools.
    """
    path = shutil.which("time", path="/usr/bin:/bin") or None
    if path is None:
        return None
    probe = subprocess.run([path, "--version"], capture_output=True, text=True)
    return path if "GNU" in probe.stdout + probe.stderr else None


GNU_TIME = _find_gnu_time()


class CommandFailed(RuntimeError):
    """A measured command exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        tail = (stderr.strip() or stdout.strip())[-800:]
        super().__init__(f"`{shlex.join(argv)}` exited {returncode}: {tail}")


@dataclass
class CommandResult:
    """One finished process."""

    argv: list[str]
    seconds: float
    max_rss_bytes: int  # ru_maxrss of this process (and children it waited for)
    tree_rss_bytes: int  # sampled peak of the summed RSS of the process tree (0 if not sampled)
    stdout: str
    stderr: str


@dataclass
class Measurement:
    """A timed sequence of commands followed by `sync`."""

    seconds: float = 0.0
    max_rss_bytes: int = 0
    tree_rss_bytes: int = 0
    results: list[CommandResult] = field(default_factory=list)

    @property
    def last_stdout(self) -> str:
        return self.results[-1].stdout if self.results else ""


_STARTED = time.perf_counter()


def log(message: str) -> None:
    """Progress goes to stderr (stamped with seconds since start) so that stdout holds only the report."""
    print(f"{time.perf_counter() - _STARTED:7.1f}s {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


def _child_pids(pid: int) -> list[int]:
    """Direct children of pid, read from /proc/PID/task/*/children (cheap, no /proc scan)."""
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as listing:
                children.extend(int(child) for child in listing.read().split())
        except OSError:
            continue
    return children


def _resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


class TreeRssSampler:
    """Polls /proc and keeps the peak of the summed RSS of a process and its descendants.

    ru_maxrss only reports the largest single process; a tool that fans out into
    worker processes is only seen whole by summing the tree.
    """

    def __init__(self, root_pid: int, include_root: bool = True, interval: float = 0.02):
        self.root_pid = root_pid
        self.include_root = include_root
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeRssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = _resident_bytes(self.root_pid) if self.include_root else 0
            pending = _child_pids(self.root_pid)
            while pending:
                pid = pending.pop()
                total += _resident_bytes(pid)
                pending.extend(_child_pids(pid))
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval)


def run_command(
    argv: list[str], *, cwd: Path | None = None, env: dict | None = None, sample_tree_rss: bool = False
) -> CommandResult:
    """Run one process to completion; raise CommandFailed on a non-zero exit.

    Output goes to temporary files (not pipes) so the process can never block on
    a full pipe while we wait for it with os.wait4. Peak RSS comes from GNU time when
    installed (see _find_gnu_time), else from os.wait4's rusage.
    sample_tree_rss polls /proc every 20 ms (off by default: it costs a little CPU).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss_report:
        wrapped = [GNU_TIME, "--quiet", "-f", "%M", "-o", rss_report.name, *argv] if GNU_TIME else argv
        start = time.perf_counter()
        process = subprocess.Popen(wrapped, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        sampler = TreeRssSampler(process.pid, include_root=not GNU_TIME)
        if sample_tree_rss:
            with sampler:
                _, status, usage = os.wait4(process.pid, 0)
        else:
            _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        max_rss_bytes = usage.ru_maxrss * 1024  # Linux reports KiB
        if GNU_TIME:
            reported = rss_report.read().split()
            if reported and reported[-1].isdigit():
                max_rss_bytes = int(reported[-1]) * 1024
    if process.returncode != 0:
        raise CommandFailed(argv, process.returncode, stdout, stderr)
    return CommandResult(
        argv=argv,
        seconds=seconds,
        max_rss_bytes=max_rss_bytes,
        tree_rss_bytes=sampler.peak_bytes,
        stdout=stdout,
        stderr=stderr,
    )


def sync_disks() -> None:
    """Flush dirty pages to disk (the `sync` command, as the benchmark contract says)."""
    subprocess.run(["sync"], check=True)


def timed_commands(commands: list[tuple[list[str], dict]]) -> Measurement:
    """Time a sequence of commands plus a final `sync`, as one wall-clock span.

    Each entry is (argv, run_command keyword arguments). A `sync` before the clock
    starts flushes leftovers of earlier (untimed) work, so they are not billed here.
    """
    sync_disks()
    measurement = Measurement()
    start = time.perf_counter()
    for argv, options in commands:
        result = run_command(argv, **options)
        measurement.results.append(result)
        measurement.max_rss_bytes = max(measurement.max_rss_bytes, result.max_rss_bytes)
        measurement.tree_rss_bytes = max(measurement.tree_rss_bytes, result.tree_rss_bytes)
    sync_disks()
    measurement.seconds = time.perf_counter() - start
    return measurement


# --------------------------------------------------------------------------- folders


def tree_size(path: Path) -> int:
    """Sum of the apparent sizes of all regular files under path (like `du -sb`, files only)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                stat = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:
                continue
            if not os.path.islink(os.path.join(folder, name)):
                total += stat.st_size
    return total


def tree_digest(path: Path) -> str:
    """Content fingerprint of a folder: relative paths, sizes and bytes of every file."""
    digest = hashlib.sha1()
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            file_path = Path(folder, name)
            digest.update(str(file_path.relative_to(path)).encode() + b"\0")
            digest.update(str(file_path.stat().st_size).encode() + b"\0")
            with open(file_path, "rb") as stream:
                while block := stream.read(8 << 20):
                    digest.update(block)
    return digest.hexdigest()


def mirror_tree(source: Path, target: Path) -> None:
    """Make target equal to source, copying only files whose size or mtime differ.

    Used to keep a peer's private working copy in step with the workload's data
    without touching unchanged files (so the peer's own change detection works).
    """
    target.mkdir(parents=True, exist_ok=True)
    wanted: set[Path] = set()
    for folder, _, files in os.walk(source):
        relative_folder = Path(folder).relative_to(source)
        (target / relative_folder).mkdir(parents=True, exist_ok=True)
        for name in files:
            relative = relative_folder / name
            wanted.add(relative)
            src, dst = source / relative, target / relative
            src_stat = src.stat()
            try:
                dst_stat = dst.stat()
                same = dst_stat.st_size == src_stat.st_size and dst_stat.st_mtime_ns == src_stat.st_mtime_ns
            except FileNotFoundError:
                same = False
            if not same:
                if dst.exists():
                    dst.unlink()  # peers may keep read-only or linked files
                shutil.copy2(src, dst)
    for folder, _, files in os.walk(target):
        for name in files:
            relative = Path(folder, name).relative_to(target)
            if relative not in wanted:
                (target / relative).unlink()


def remove_tree(path: Path) -> None:
    """Delete a folder even if a tool left read-only files in it."""
    if path.exists():
        subprocess.run(["rm", "-rf", str(path)], check=True)


# --------------------------------------------------------------------------- numbers


def median(values: list[float]) -> float:
    return statistics.median(values)


def format_bytes(count: float) -> str:
    """1.50 GiB, 64 MiB, 600.42 KiB ... (whole numbers without decimals)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(count) >= size:
            text = f"{count / size:.2f}"
            return f"{text.removesuffix('.00')} {unit}"
    return f"{count:.0f} B"
