"""The tools under test, behind one small interface.

Each Tool instance owns a private folder (its store, caches, working copies) for one
repeat of one scenario; the scenario deletes that folder afterwards. The timed part of
every method ends with `sync`. One-time setup (restic init, git/dvc init, copying the
data into DVC's project) is not timed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import Measurement, mirror_tree, run_command, timed_commands, tree_size

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASET_NAME = "bench"
RESTIC_PASSWORD = "dvx-benchmark"


class ContractMismatch(RuntimeError):
    """A tool answered in a way the benchmark's CLI contract does not expect."""


@dataclass
class Executable:
    """Where a tool's program is, or why it is not available."""

    name: str
    path: str | None
    version: str = ""

    @property
    def available(self) -> bool:
        return self.path is not None


def _first_existing(candidates: list[str | None]) -> str | None:
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _version(argv: list[str]) -> str:
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (completed.stdout or completed.stderr).strip().splitlines()
    return text[0] if completed.returncode == 0 and text else "unknown"


def find_executables() -> dict[str, Executable]:
    """Locate cp, restic, dvc and dvx (env override first, then PATH, then the usual venvs)."""
    found = {
        "cp": Executable("cp", shutil.which("cp")),
        "restic": Executable("restic", _first_existing([os.environ.get("RESTIC_BIN"), shutil.which("restic")])),
        "dvc": Executable("dvc", _first_existing(
            [os.environ.get("DVC_BIN"), shutil.which("dvc"), "/opt/dvc-venv/bin/dvc"])),
        "dvx": Executable("dvx", _first_existing(
            [os.environ.get("DVX_BIN"), shutil.which("dvx"), str(REPO_ROOT / ".venv/bin/dvx")])),
    }
    version_flags = {"cp": ["--version"], "restic": ["version"], "dvc": ["--version"], "dvx": ["--version"]}
    for executable in found.values():
        if executable.available:
            executable.version = _version([executable.path, *version_flags[executable.name]])
    return found


def byte_compile_dvx(dvx: Executable) -> None:
    """Write dvx's bytecode before timing, as `pip install` does: an editable checkout run with
    PYTHONDONTWRITEBYTECODE=1 would otherwise recompile every module in every measured process."""
    if not dvx.available:
        return
    with open(dvx.path, "rb") as script:
        shebang = script.readline().decode(errors="replace")
    python = shebang[2:].strip().split()[0] if shebang.startswith("#!") else sys.executable
    subprocess.run([python, "-c", "import compileall, os, dvx; "
                    "compileall.compile_dir(os.path.dirname(dvx.__file__), quiet=1)"], check=True,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})


class Tool:
    """Common interface. source is a folder whose *contents* form the dataset."""

    name = "?"

    def __init__(self, executable: str, root: Path):
        self.executable = executable
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._restores = 0

    def save_first(self, source: Path) -> Measurement:
        """First save of source into an empty store/repository."""
        raise NotImplementedError

    def save_again(self, source: Path) -> Measurement:
        """Save source again after it changed (or did not)."""
        raise NotImplementedError

    def restore(self, target: Path) -> tuple[Measurement, Path]:
        """Restore the latest save with empty caches; return the measurement and where the data landed."""
        raise NotImplementedError

    def stored_bytes(self) -> int:
        """Size of everything the tool keeps for the saved versions."""
        raise NotImplementedError

    def _fresh_dir(self, prefix: str) -> Path:
        self._restores += 1
        return self.root / f"{prefix}-{self._restores}"


class CopyTool(Tool):
    """`cp -r` + `sync`: the physical limit of writing the data once."""

    name = "cp"

    def save_first(self, source: Path) -> Measurement:
        self.copy = self.root / "copy"
        return timed_commands([([self.executable, "-r", str(source), str(self.copy)], {})])

    def restore(self, target: Path) -> tuple[Measurement, Path]:
        return timed_commands([([self.executable, "-r", str(self.copy), str(target)], {})]), target

    def stored_bytes(self) -> int:
        return tree_size(self.copy)


class ResticTool(Tool):
    """restic 0.14, repository format 2 (zstd, compression `auto`), local folder repository."""

    name = "restic"

    def __init__(self, executable: str, root: Path):
        super().__init__(executable, root)
        self.repository = root / "repo"
        self.env = {**os.environ, "RESTIC_REPOSITORY": str(self.repository), "RESTIC_PASSWORD": RESTIC_PASSWORD,
                    "RESTIC_CACHE_DIR": str(root / "cache")}
        run_command([executable, "init", "--repository-version", "2"], env=self.env)

    def _backup(self, source: Path) -> Measurement:
        self.source_name = source.name
        # Run from the parent with a relative path: the snapshot then holds just `<name>/...`.
        argv = [self.executable, "backup", "--quiet", "--host", "bench", source.name]
        return timed_commands([(argv, {"cwd": source.parent, "env": self.env})])

    save_first = _backup
    save_again = _backup

    def restore(self, target: Path) -> tuple[Measurement, Path]:
        env = {**self.env, "RESTIC_CACHE_DIR": str(self._fresh_dir("restore-cache"))}
        argv = [self.executable, "restore", "latest", "--quiet", "--target", str(target)]
        return timed_commands([(argv, {"env": env})]), target / self.source_name

    def stored_bytes(self) -> int:
        return tree_size(self.repository)


class DvcTool(Tool):
    """DVC with a local-folder remote. Timed: `dvc add` + `dvc push`; restore: `dvc pull` in a fresh clone."""

    name = "dvc"

    def __init__(self, executable: str, root: Path):
        super().__init__(executable, root)
        self.project = root / "project"
        self.remote = root / "remote"
        self.project.mkdir()
        self.env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(root / "site-cache"),
                    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
                    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
        for argv in (["git", "init", "--quiet"], [executable, "init", "--quiet"],
                     [executable, "remote", "add", "--default", "local", str(self.remote)]):
            run_command(argv, cwd=self.project, env=self.env)

    def _add_and_push(self, source: Path) -> Measurement:
        self.data_name = source.name
        # DVC only tracks data inside its project: keep a private copy there (untimed),
        # updated file by file so unchanged files keep their mtime and DVC's hash cache.
        mirror_tree(source, self.project / source.name)
        options = {"cwd": self.project, "env": self.env}
        return timed_commands([([self.executable, "add", "--quiet", source.name], options),
                               ([self.executable, "push", "--quiet"], options)])

    save_first = _add_and_push
    save_again = _add_and_push

    def restore(self, target: Path) -> tuple[Measurement, Path]:
        run_command(["git", "add", "--all"], cwd=self.project, env=self.env)
        run_command(["git", "commit", "--quiet", "--allow-empty", "-m", "data"], cwd=self.project, env=self.env)
        run_command(["git", "clone", "--quiet", str(self.project), str(target)], env=self.env)
        env = {**self.env, "DVC_SITE_CACHE_DIR": str(self._fresh_dir("restore-site-cache"))}
        measurement = timed_commands([([self.executable, "pull", "--quiet"], {"cwd": target, "env": env})])
        return measurement, target / self.data_name

    def stored_bytes(self) -> int:
        return tree_size(self.remote)


class DvxTool(Tool):
    """dvx through its CLI contract: dataset create/add|sync/commit --json, get NAME@vN -o DIR."""

    name = "dvx"

    def __init__(self, executable: str, root: Path, sample_tree_rss: bool = False):
        super().__init__(executable, root)
        self.store = root / "store"
        self.env = self._env(cache=root / "cache", state=root / "state")
        self.options = {"cwd": root, "env": self.env, "sample_tree_rss": sample_tree_rss}
        self.refs: list[str] = []

    def _env(self, cache: Path, state: Path) -> dict:
        return {**os.environ, "DVX_STORE": str(self.store), "DVX_CACHE_DIR": str(cache), "DVX_STATE_DIR": str(state)}

    def _commit(self, verb: str, source: Path, message: str) -> Measurement:
        dvx = self.executable
        measurement = timed_commands([
            ([dvx, "dataset", "create", DATASET_NAME, "-m", message], self.options),
            ([dvx, "dataset", verb, str(source)], self.options),
            ([dvx, "dataset", "commit", "-m", message, "--json"], self.options),
        ])
        self.refs.append(self._parse_ref(measurement.last_stdout))
        return measurement

    @staticmethod
    def _parse_ref(stdout: str) -> str:
        text = stdout.strip()
        try:
            answer = json.loads(text)
        except json.JSONDecodeError:
            # Tolerate log lines before the JSON object, but report if there is none.
            lines = [line for line in text.splitlines() if line.lstrip().startswith("{")]
            try:
                answer = json.loads(lines[-1]) if lines else None
            except json.JSONDecodeError:
                answer = None
            if answer is None:
                raise ContractMismatch(f"`dvx dataset commit --json` printed no JSON object: {text[:300]!r}")
        if not isinstance(answer, dict) or not isinstance(answer.get("ref"), str):
            raise ContractMismatch(f"`dvx dataset commit --json` JSON has no string 'ref': {text[:300]!r}")
        return answer["ref"]

    def save_first(self, source: Path) -> Measurement:
        return self._commit("add", source, "first")

    def save_again(self, source: Path) -> Measurement:
        return self._commit("sync", source, f"again {len(self.refs)}")

    def restore(self, target: Path) -> tuple[Measurement, Path]:
        target.mkdir(parents=True)
        fresh = self._fresh_dir("restore")
        options = {**self.options, "env": self._env(cache=fresh / "cache", state=fresh / "state")}
        return timed_commands([([self.executable, "get", self.refs[-1], "-o", str(target)], options)]), target

    def stored_bytes(self) -> int:
        return tree_size(self.store)


TOOL_CLASSES: dict[str, type[Tool]] = {tool.name: tool for tool in (CopyTool, ResticTool, DvcTool, DvxTool)}
