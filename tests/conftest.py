"""Shared fixtures: every test (and every subprocess it starts) gets fresh store, state, cache and data
folders, a fresh HOME/XDG tree and its own working folder, so nothing leaks between tests or into the
user's real folders."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

REPO_ROOT = Path(__file__).resolve().parent.parent
# Fixtures shared by several test files: store_reads, store_calls (requests that reach the store).
pytest_plugins = ("counting",)


# Tests run from a fresh temp folder: keep Hypothesis' example database in the repository instead.
settings.register_profile("dvx", database=DirectoryBasedExampleDatabase(str(REPO_ROOT / ".hypothesis" / "examples")))
settings.load_profile("dvx")

_ISOLATED_VARS = ("DVX_STORE", "DVX_STATE_DIR", "DVX_CACHE_DIR", "DVX_DATA_DIR", "DVX_CACHE_MAX_SIZE",
                  "DVX_JOBS", "DVX_AUTHOR", "DVX_CHUNK_CACHE_MAX_SIZE", "DVX_CHUNK_CACHE_GET")


def dvx_executable() -> str:
    """The installed `dvx` console script of the interpreter running the tests."""
    beside = Path(sys.executable).with_name("dvx")
    if beside.exists():
        return str(beside)
    found = shutil.which("dvx")
    if found is None:  # pragma: no cover - an install problem, not a test result
        raise RuntimeError("the dvx executable is not installed next to the test interpreter or on PATH")
    return found


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point dvx at folders under tmp_path and run the test from a fresh work folder."""
    folders = {
        "store": tmp_path / "store",
        "state": tmp_path / "state",
        "cache": tmp_path / "cache",
        "data": tmp_path / "data",
        "home": tmp_path / "home",
        "work": tmp_path / "work",
    }
    for name in ("home", "work"):
        folders[name].mkdir()
    for var in _ISOLATED_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DVX_STORE", str(folders["store"]))
    monkeypatch.setenv("DVX_STATE_DIR", str(folders["state"]))
    monkeypatch.setenv("DVX_CACHE_DIR", str(folders["cache"]))
    monkeypatch.setenv("DVX_DATA_DIR", str(folders["data"]))
    monkeypatch.setenv("HOME", str(folders["home"]))
    monkeypatch.setenv("XDG_DATA_HOME", str(folders["home"] / ".local" / "share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(folders["home"] / ".local" / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(folders["home"] / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folders["home"] / ".config"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.chdir(folders["work"])
    return folders


def run_dvx(*args: str, cwd: str | os.PathLike[str] | None = None, check: bool = True,
            env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real `dvx` executable. `env` entries are added to the (isolated) environment; a value of
    None removes the variable. Asserts that no Python traceback reaches stderr unless --debug is given;
    with `check`, also asserts exit code 0."""
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    proc = subprocess.run([dvx_executable(), *map(str, args)], cwd=cwd, env=full_env, input=input,
                          capture_output=True, text=True, timeout=120)
    if "--debug" not in args:
        assert "Traceback (most recent call last)" not in proc.stderr, (
            f"dvx {' '.join(map(str, args))} printed a traceback:\n{proc.stderr}")
    if check:
        assert proc.returncode == 0, (
            f"dvx {' '.join(map(str, args))} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
            f"stderr:\n{proc.stderr}")
    return proc


def write_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    """Create files (relative '/'-paths → content) under root; returns root."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under root (symlinks followed for content) as relative path → bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


@pytest.fixture(scope="session", autouse=True)
def cloud_servers():
    """Cloud emulators start on first use (tests/servers.py) and stop when the session ends."""
    from servers import stop_all

    yield
    stop_all()


def run_dvx_in_process(*args: str) -> subprocess.CompletedProcess:
    """The `dvx` command's own entry point (dvx.cli.main.main: argument parsing, the api call, error
    handling and exit code), run in this process: the executable's code path without its start-up time,
    for tests that run it hundreds of times. Crash, concurrency and fault tests use real processes."""
    from dvx.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
