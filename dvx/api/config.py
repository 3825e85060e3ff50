"""Where things live: the active store (and why), the project, state and cache folders, settings.

Precedence for the store: explicit argument (`--store`) > `DVX_STORE` > the project's `dvx.toml` >
the embedded default store under the user's data folder. This module and the CLI are the only places
that read environment variables.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from dvx.errors import UsageError
from dvx.fs import normalise_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROJECT_FILE = "dvx.toml"
PROJECT_STATE_DIR = ".dvx"
DEFAULT_CACHE_MAX = 20 << 30
APP = "dvx"


@dataclass(frozen=True)
class Settings:
    store_url: str
    store_source: str
    project_dir: Path | None
    state_dir: Path
    cache_dir: Path
    cache_max_bytes: int
    jobs: int | None
    author: str

    @property
    def project_file(self) -> Path | None:
        return self.project_dir / PROJECT_FILE if self.project_dir else None

    def never_swept(self) -> list[str]:
        """Absolute paths an `add` must never take into a dataset."""
        if self.project_dir is None:
            return []
        return [str(self.project_dir / PROJECT_STATE_DIR), str(self.project_dir / PROJECT_FILE)]


def parse_size(text: str | int) -> int:
    """'20GiB', '500MB', '1024' → bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise UsageError(f"invalid size {text!r}: use e.g. 500MiB or 20GiB")
    number, unit, binary = match.groups()
    base = 1024 if binary or not unit else 1000
    return int(float(number) * base ** "_KMGT".index(unit.upper() or "_"))


def find_project(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return None


def read_project_file(project_dir: Path) -> dict:
    path = project_dir / PROJECT_FILE
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None


def default_author() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def load_settings(store: str | None = None, cwd: str | os.PathLike[str] | None = None) -> Settings:
    cwd_path = Path(cwd or os.getcwd()).absolute()
    env = os.environ
    project_dir = find_project(cwd_path)
    project = read_project_file(project_dir) if project_dir else {}
    project_store = project.get("store", {}).get("url") if isinstance(project.get("store"), dict) else None

    if store:
        url, source = store, "--store option"
    elif env.get("DVX_STORE"):
        url, source = env["DVX_STORE"], "DVX_STORE environment variable"
    elif project_store:
        url, source = project_store, f"{project_dir / PROJECT_FILE}"
        if "://" not in url and not os.path.isabs(os.path.expanduser(url)):
            url = str(project_dir / url)
    else:
        data_dir = Path(env.get("DVX_DATA_DIR") or platformdirs.user_data_dir(APP))
        url, source = str(data_dir / "store"), "embedded default store"

    if env.get("DVX_STATE_DIR"):
        state_dir = Path(env["DVX_STATE_DIR"])
    elif project_dir:
        state_dir = project_dir / PROJECT_STATE_DIR
    else:
        state_dir = Path(platformdirs.user_state_dir(APP))
    cache_dir = Path(env.get("DVX_CACHE_DIR") or platformdirs.user_cache_dir(APP))
    cache_cfg = project.get("cache", {}) if isinstance(project.get("cache"), dict) else {}
    cache_max = parse_size(env.get("DVX_CACHE_MAX_SIZE") or cache_cfg.get("max_size") or DEFAULT_CACHE_MAX)
    jobs = int(env["DVX_JOBS"]) if env.get("DVX_JOBS", "").isdigit() else None
    return Settings(
        store_url=normalise_url(url),
        store_source=source,
        project_dir=project_dir,
        state_dir=state_dir,
        cache_dir=cache_dir,
        cache_max_bytes=cache_max,
        jobs=jobs,
        author=env.get("DVX_AUTHOR") or default_author(),
    )


def init_project(folder: str | os.PathLike[str], store: str | None) -> Path:
    """Write dvx.toml (and the .dvx/ state folder) in `folder`."""
    import tomli_w

    root = Path(folder).absolute()
    if not root.is_dir():
        raise UsageError(f"cannot make {root} a project: it is not a folder")
    path = root / PROJECT_FILE
    if path.exists():
        raise UsageError(f"{path} already exists")
    content: dict = {"format_version": 1}
    if store:
        content["store"] = {"url": store if "://" in store else os.path.abspath(os.path.expanduser(store))}
    path.write_text(tomli_w.dumps(content), encoding="utf-8")
    (root / PROJECT_STATE_DIR).mkdir(exist_ok=True)
    (root / PROJECT_STATE_DIR / ".gitignore").write_text("*\n", encoding="utf-8")
    return path
