"""Local faults: a full disk (ENOSPC) and permission denied (EACCES) during `get`, `add` and `commit` leave
the store and the target consistent and print what happened as one `dvx: error:` line with exit code 6;
once the fault is gone, the same command completes. A file that changes while it is being added is
reported (exit 4), not stored torn.

How faults are injected, chosen at run time so that every test runs everywhere:
- "filesystem": a real filesystem of a few MB (tmpfs, `mount -o size=`), or a real `chmod -R u-w`. Mounting
  needs root, and chmod does not stop root: where the real thing is impossible or ineffective, the
  test falls back to the injection below (the test id stays, the output says which ran).
- "injected": dvx runs in a real subprocess through its CLI entry point, with os.open/os.write/open/
  os.mkdir/os.link/… wrapped so that writes under one folder fail with ENOSPC after N bytes, or every
  write there fails with EACCES. No LD_PRELOAD: plain Python, so it works on any CI runner.

docs/reliability.md states these guarantees and the counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import msgspec
import pytest
from conftest import read_tree, run_dvx, write_tree

import dvx
from dvx.chunks.pack import decode_footer
from dvx.chunks.store import CONFIG_KEY, StoreConfig
from dvx.errors import ConflictError
from dvx.manifests.scan import changed_since_scan, ensure_unchanged_since_scan, scan

EXIT_CONFLICT, EXIT_STORE = 4, 6
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

INJECTOR = r'''
import builtins, errno, io, json, os, sys

plan = json.loads(sys.argv[1])
ROOT = os.path.realpath(plan["root"])
FAULT = plan["fault"]
budget = [plan.get("budget", 0)]
fds = {}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def under(path):
    if isinstance(path, int):
        return path in fds
    try:
        text = os.fsdecode(os.fspath(path))
    except TypeError:
        return False
    full = os.path.realpath(text)
    return full == ROOT or full.startswith(ROOT + os.sep)


def denied(path):
    return PermissionError(errno.EACCES, "Permission denied", os.fsdecode(os.fspath(path)))


def spend(n):
    budget[0] -= n
    if budget[0] < 0:
        raise OSError(errno.ENOSPC, "No space left on device")


real = {name: getattr(os, name) for name in ("open", "write", "writev", "close", "mkdir", "link", "replace", "rename",
                                               "symlink", "unlink")}
real_io_open = io.open


def fake_open(path, flags, mode=0o777, *, dir_fd=None):
    if dir_fd is None and under(path):
        if FAULT == "eacces" and flags & WRITE_FLAGS:
            raise denied(path)
        fd = real["open"](path, flags, mode)
        fds[fd] = path
        return fd
    return real["open"](path, flags, mode, dir_fd=dir_fd)


def fake_write(fd, data):
    if FAULT == "enospc" and fd in fds:
        spend(len(data))
    return real["write"](fd, data)


def fake_writev(fd, buffers):
    if FAULT == "enospc" and fd in fds:
        spend(sum(len(b) for b in buffers))
    return real["writev"](fd, buffers)


def fake_close(fd):
    fds.pop(fd, None)
    return real["close"](fd)


def guard(name):
    def wrapped(*args, **kwargs):
        target = args[1] if name in ("link", "replace", "rename", "symlink") else args[0]
        if FAULT == "eacces" and under(target):
            if name == "mkdir" and os.path.lexists(target):  # as the kernel does: EEXIST comes first
                raise FileExistsError(errno.EEXIST, "File exists", os.fsdecode(os.fspath(target)))
            raise denied(target)
        return real[name](*args, **kwargs)
    return wrapped


class Full:
    """A writable file object on the "full" filesystem: writes spend the shared budget."""

    def __init__(self, f):
        object.__setattr__(self, "_f", f)

    def write(self, data):
        spend(len(data))
        return self._f.write(data)

    def close(self):
        # As on a real full disk: closing flushes what is buffered, which fails too.
        try:
            self._f.close()
        finally:
            if budget[0] < 0:
                raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        self._f.__enter__()
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def fake_io_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+") and under(file):
        if FAULT == "eacces" and not isinstance(file, int):
            raise denied(file)
        f = real_io_open(file, mode, *args, **kwargs)
        return Full(f) if FAULT == "enospc" else f
    return real_io_open(file, mode, *args, **kwargs)


os.open, os.write, os.writev, os.close = fake_open, fake_write, fake_writev, fake_close
for name in ("mkdir", "link", "replace", "rename", "symlink", "unlink"):
    setattr(os, name, guard(name))
io.open = builtins.open = fake_io_open

from dvx.cli.main import main

main(plan["argv"])
'''


def one_error_line(proc, code: int, *fragments: str) -> str:
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dvx: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def tree(root: Path) -> dict[str, int]:
    """Every path under root with its size (folders 0): to show nothing changed."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(folder) / name
            out[full.relative_to(root).as_posix()] = 0 if full.is_dir() else full.lstat().st_size
    return out


class Faults:
    """Runs dvx with a fault on one folder: really (tmpfs / chmod) when possible, else injected."""

    def __init__(self, tmp_path: Path, how: str):
        self.tmp_path = tmp_path
        self.how = how
        self.mounts: list[Path] = []
        self.locked: list[Path] = []
        self.used: set[str] = set()
        self.injector = tmp_path / "inject.py"
        self.injector.write_text(INJECTOR)

    # -- a small real filesystem ---------------------------------------------------------------------------
    def small_fs(self, name: str, kib: int) -> Path | None:
        """A tmpfs of `kib` KiB at tmp_path/name, or None where mounting is impossible (not root, no
        permission in this container)."""
        folder = self.tmp_path / name
        folder.mkdir()
        if self.how != "filesystem":
            return None
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0755", "tmpfs", str(folder)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return None
        self.mounts.append(folder)
        return folder

    def resize(self, folder: Path, kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(folder)], check=True)

    def cleanup(self) -> None:
        for folder in self.locked:
            subprocess.run(["chmod", "-R", "u+w", str(folder)], check=False)
        for folder in self.mounts:
            subprocess.run(["umount", "-l", str(folder)], check=False)

    # -- running dvx -----------------------------------------------------------------------------------
    def run(self, *argv: str, fault: str | None = None, root: Path | None = None,
            budget: int = 0) -> subprocess.CompletedProcess:
        """`dvx ARGV`, with `fault` ("enospc" after `budget` bytes, or "eacces") injected under `root`."""
        if fault is None:
            return run_dvx(*argv, check=False)
        self.used.add("injected")
        plan = {"fault": fault, "root": str(root), "budget": budget, "argv": list(argv)}
        return subprocess.run([sys.executable, str(self.injector), json.dumps(plan)], capture_output=True,
                              text=True, timeout=120, check=False)

    def read_only(self, folder: Path) -> bool:
        """Make `folder` read-only for real (chmod -R u-w); False when that would not stop this user."""
        if self.how != "filesystem" or IS_ROOT:
            return False
        subprocess.run(["chmod", "-R", "u-w", str(folder)], check=True)
        self.locked.append(folder)
        return True

    def writable(self, folder: Path) -> None:
        subprocess.run(["chmod", "-R", "u+w", str(folder)], check=True)
        self.locked.remove(folder)


@pytest.fixture(params=["filesystem", "injected"])
def faults(request, tmp_path: Path, capsys):
    f = Faults(tmp_path, request.param)
    yield f
    f.cleanup()
    with capsys.disabled():
        real = "real" if f.mounts or f.locked or (request.param == "filesystem" and "injected" not in f.used) \
            else "injected (the real fault is unavailable here)"
        print(f" [{request.param}: {real}]", end="")


FILES = {"big.bin": 6 << 20, "a/one.bin": 300_000, "a/two.bin": 300_000, "b/three.txt": 2_000}


def _source(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "src", {p: os.urandom(n) for p, n in FILES.items()})


def _assert_complete_or_absent(out: Path, source: dict[str, bytes]) -> None:
    """What a failed get left: only complete, right files; no temporaries."""
    if not out.exists():
        return
    for path, data in read_tree(out).items():
        assert not path.rsplit("/", 1)[-1].startswith("."), f"temporary file left: {path}"
        assert data == source[path], f"{path} was left incomplete"


# -- get --------------------------------------------------------------------------------------------------

def test_get_onto_a_full_disk(faults: Faults, tmp_path: Path):
    src = _source(tmp_path)
    source = read_tree(src)
    ds = dvx.Dataset.create("ds")
    ds.add(src)
    ds.commit("v1")
    disk = faults.small_fs("disk", 3 << 10)  # 3 MiB for 6.6 MB of files
    out = (disk or tmp_path / "disk") / "out"
    proc = faults.run("get", "ds@v1", "-o", str(out)) if disk else \
        faults.run("get", "ds@v1", "-o", str(out), fault="enospc", root=tmp_path / "disk", budget=3 << 20)
    one_error_line(proc, EXIT_STORE, "No space left on device", "cannot write")
    _assert_complete_or_absent(out, source)
    assert dvx.verify("ds@v1", mode="full").ok
    # Space freed: the same get completes, keeping what was already written.
    if disk:
        faults.resize(disk, 16 << 10)
    assert faults.run("get", "ds@v1", "-o", str(out)).returncode == 0
    assert read_tree(out) == source


def test_get_into_a_folder_without_write_permission(faults: Faults, tmp_path: Path):
    src = _source(tmp_path)
    ds = dvx.Dataset.create("ds")
    ds.add(src)
    ds.commit("v1")
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    before = tree(out)
    if faults.read_only(out):
        proc = faults.run("get", "ds@v1", "-o", str(out))
    else:
        proc = faults.run("get", "ds@v1", "-o", str(out), fault="eacces", root=out)
    one_error_line(proc, EXIT_STORE, "Permission denied", str(out))
    assert tree(out) == before
    if faults.locked:
        faults.writable(out)
    assert faults.run("get", "ds@v1", "-o", str(out)).returncode == 0
    assert read_tree(out) == read_tree(src)


# -- add and commit ---------------------------------------------------------------------------------------

def _store_on(faults: Faults, tmp_path: Path, kib: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, bool]:
    """A store with 1 MiB packs, on a small filesystem if one can be mounted (DVX_STORE points there)."""
    disk = faults.small_fs("storedisk", kib)
    store = (disk or tmp_path / "storedisk") / "store"
    store.mkdir()
    config = StoreConfig(store_id=uuid.uuid4().hex, created="2026-01-01T00:00:00+00:00", pack_size=1 << 20)
    (store / CONFIG_KEY).write_bytes(msgspec.json.encode(config, order="sorted"))
    monkeypatch.setenv("DVX_STORE", str(store))
    return store, disk is not None


def _indexed_bytes(store: Path) -> int:
    """Stored bytes of every chunk the store's index segments list (what an add dedups against)."""
    return sum(ref.length for segment in (store / "index").glob("*.idx")
               for ref in decode_footer(segment.read_bytes(), segment.stem))


def _versions(store: Path) -> list[str]:
    folder = store / "refs" / "datasets" / "ds" / "versions"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_add_and_commit_onto_a_full_store(faults: Faults, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The store fills up during an add (after some packs are written), then again during a commit."""
    store, real = _store_on(faults, tmp_path, 4 << 10, monkeypatch)
    first = write_tree(tmp_path / "first", {"x.txt": "version one\n"})
    ds = dvx.Dataset.create("ds")
    ds.add(first)
    ds.commit("v1")
    dvx.Dataset.create("ds")
    src = _source(tmp_path)
    status_before = run_dvx("dataset", "status").stdout
    indexed_before = _indexed_bytes(store)

    # add: 6.6 MB into 4 MiB
    proc = faults.run("dataset", "add", str(src)) if real else \
        faults.run("dataset", "add", str(src), fault="enospc", root=store, budget=3 << 20)
    one_error_line(proc, EXIT_STORE, "No space left on device")
    assert _versions(store) == ["0000000001.json"]
    assert dvx.verify("ds@v1", mode="full").ok
    assert run_dvx("dataset", "status").stdout == status_before  # the draft did not take a torn add
    durable = _indexed_bytes(store) - indexed_before
    if real:
        faults.resize(store.parent, 64 << 10)
        assert durable > 0  # packs sealed before the disk filled were published
    proc = run_dvx("dataset", "add", str(src), "--json")
    # The re-run stores exactly what the failed add had not made durable (a pack whose index segment
    # could not be written is not known to dedup, so its chunks are stored again).
    assert json.loads(proc.stdout)["stored_bytes"] + durable == sum(FILES.values())

    # commit: the store is full again (a filler takes the rest of the space)
    if real:
        filler = store.parent / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (64 << 10))
            except OSError:
                pass
        proc = faults.run("dataset", "commit", "-m", "v2")
    else:
        proc = faults.run("dataset", "commit", "-m", "v2", fault="enospc", root=store, budget=0)
    one_error_line(proc, EXIT_STORE, "No space left on device")
    assert _versions(store) == ["0000000001.json"]
    assert "big.bin" in run_dvx("dataset", "status").stdout  # the draft is intact
    if real:
        filler.unlink()
    assert run_dvx("dataset", "commit", "-m", "v2").returncode == 0
    assert dvx.verify(["ds@v1", "ds@v2"], mode="full").ok
    assert read_tree(dvx.get("ds@v2", tmp_path / "v2")) == {**read_tree(first), **read_tree(src)}


def test_add_and_commit_to_a_read_only_store(faults: Faults, tmp_path: Path, isolated):
    store = isolated["store"]
    first = write_tree(tmp_path / "first", {"x.txt": "version one\n"})
    ds = dvx.Dataset.create("ds")
    ds.add(first)
    ds.commit("v1")
    dvx.Dataset.create("ds")
    src = _source(tmp_path)
    before = tree(store)
    real = faults.read_only(store)
    proc = faults.run("dataset", "add", str(src)) if real else \
        faults.run("dataset", "add", str(src), fault="eacces", root=store)
    one_error_line(proc, EXIT_STORE, "Permission denied", str(store))
    assert tree(store) == before
    if real:
        faults.writable(store)
    assert run_dvx("dataset", "add", str(src)).returncode == 0
    before = tree(store)
    real = faults.read_only(store)
    proc = faults.run("dataset", "commit", "-m", "v2") if real else \
        faults.run("dataset", "commit", "-m", "v2", fault="eacces", root=store)
    one_error_line(proc, EXIT_STORE, "Permission denied", str(store))
    assert tree(store) == before
    if real:
        faults.writable(store)
    assert run_dvx("dataset", "commit", "-m", "v2").returncode == 0
    assert dvx.verify(["ds@v1", "ds@v2"], mode="full").ok


# -- files that change while they are added ---------------------------------------------------------------

def test_changed_since_scan_reports_appended_touched_replaced_and_deleted_files(tmp_path: Path):
    src = write_tree(tmp_path / "src", {"same.txt": "same", "grow.log": "a", "touch.txt": "t", "gone.txt": "g",
                                        "swap.txt": "s", "sub/deep.txt": "d"})
    (src / "link").symlink_to("same.txt")
    scanned = list(scan(src))
    assert changed_since_scan(scanned) == []
    with open(src / "grow.log", "a") as f:
        f.write("more")
    st = (src / "touch.txt").stat()
    os.utime(src / "touch.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    (src / "gone.txt").unlink()
    (src / "swap.tmp").write_text("s")  # same content and size, another file: a rename over it
    os.replace(src / "swap.tmp", src / "swap.txt")
    assert sorted(changed_since_scan(scanned)) == ["gone.txt", "grow.log", "swap.txt", "touch.txt"]
    with pytest.raises(ConflictError, match="changed while being added"):
        ensure_unchanged_since_scan(scanned)
    ensure_unchanged_since_scan([f for f in scanned if f.path in ("same.txt", "sub/deep.txt", "link")])


def test_a_file_appended_to_during_add_is_reported_not_stored_torn(tmp_path: Path, isolated):
    """A log written to while `dvx dataset add` reads it: the add fails with exit 4 naming it, the draft
    does not take it; once the writing stops, the add stores exactly the file.

    Passes once dvx/api/datasets.py store_scanned calls ensure_unchanged_since_scan(to_read) right after
    chunk_store.ingest(...) (before the stat cache records anything). The appends start when the add
    begins storing (its first upload file appears) and come every 20 ms: faster appends would meet the
    chunker's slow path for growing files (see docs/reliability.md)."""
    src = write_tree(tmp_path / "src", {"steady.bin": os.urandom(1 << 20)})
    log = src / "growing.log"
    log.write_bytes(os.urandom(24 << 20))
    run_dvx("dataset", "create", "ds")
    stop = threading.Event()
    uploads = isolated["store"] / ".dvx-tmp"

    def append() -> None:
        while not stop.is_set() and not (uploads.exists() and any(p.name.startswith("upload-")
                                                                  for p in uploads.iterdir())):
            time.sleep(0.001)
        with open(log, "ab", buffering=0) as f:
            while not stop.is_set():
                f.write(b"x" * 100)
                stop.wait(0.02)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        proc = run_dvx("dataset", "add", str(src), check=False)
    finally:
        stop.set()
        writer.join()
    one_error_line(proc, EXIT_CONFLICT, "growing.log", "changed while being added")
    assert "growing.log" not in run_dvx("dataset", "status").stdout
    run_dvx("dataset", "add", str(src))
    run_dvx("dataset", "commit", "-m", "settled")
    assert read_tree(dvx.get("ds", tmp_path / "out")) == read_tree(src)


def test_a_full_store_is_named_in_the_error(tmp_path: Path, isolated):
    src = write_tree(tmp_path / "src", {"a.bin": os.urandom(100_000)})
    run_dvx("dataset", "create", "ds")
    faults = Faults(tmp_path, "injected")
    proc = faults.run("dataset", "add", str(src), fault="enospc", root=isolated["store"], budget=0)
    one_error_line(proc, EXIT_STORE, "No space left on device", str(isolated["store"]))


def test_a_failed_add_gives_the_space_back(faults: Faults, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """After an add stopped by a full store, no temporary pack is left in the store's .dvx-tmp/ holding
    the space the user has to free."""
    store, real = _store_on(faults, tmp_path, 3 << 10, monkeypatch)
    src = write_tree(tmp_path / "src", {"a.bin": os.urandom(5 << 20)})
    run_dvx("dataset", "create", "ds")
    proc = faults.run("dataset", "add", str(src)) if real else \
        faults.run("dataset", "add", str(src), fault="enospc", root=store, budget=(3 << 20) - 100_000)
    one_error_line(proc, EXIT_STORE, "No space left on device")
    assert not list((store / ".dvx-tmp").glob("upload-*"))
