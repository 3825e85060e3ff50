"""Where things live: the active store (and why), the project, state and cache folders, settings.

Precedence for the store: explicit argument (`--store`) > `DVX_STORE` > the project's `dvx.toml` >
the embedded default store under the user's data folder. This module and the CLI are the only places
that read environment variables.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
from pathlib import Path

import msgspec

from dvx.errors import UsageError
from dvx.fs import normalise_url

PROJECT_FILE = "dvx.toml"
PROJECT_STATE_DIR = ".dvx"
DEFAULT_CACHE_MAX = 20 << 30
DEFAULT_CHUNK_CACHE_MAX = 4 << 30
APP = "dvx"


class Settings(msgspec.Struct, frozen=True):
    store_url: str
    store_source: str
    project_dir: Path | None
    state_dir: Path
    cache_dir: Path
    cache_max_bytes: int
    jobs: int | None
    author: str
    store_options: dict = msgspec.field(default_factory=dict)
    named_stores: dict = msgspec.field(default_factory=dict)
    project: dict = msgspec.field(default_factory=dict)  # the parsed dvx.toml ({} outside a project)
    # The local chunk cache (<cache_dir>/chunks): its byte limit (0 = off), and whether `get` fills it.
    chunk_cache_max_bytes: int = DEFAULT_CHUNK_CACHE_MAX
    chunk_cache_on_get: bool = False

    @property
    def chunk_cache_dir(self) -> Path:
        return self.cache_dir / "chunks"

    @property
    def project_file(self) -> Path | None:
        return self.project_dir / PROJECT_FILE if self.project_dir else None

    def store_spec(self, name_or_url: str | None = None) -> tuple[str, dict]:
        """(URL, options) of the active store, of a store named in dvx.toml's [stores.NAME], or of a URL
        (which picks up the options dvx.toml gives for that URL, if any)."""
        if name_or_url is None:
            return self.store_url, dict(self.store_options)
        if name_or_url in self.named_stores:
            return _url_and_options(self.named_stores[name_or_url])
        return _spec_for_url(normalise_url(name_or_url), self.named_stores)

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


def _toml():
    """tomllib (tomli before Python 3.11), loaded only when a project file is read."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # pragma: no cover

    return tomli  # pragma: no cover


def _user_dir(kind: str) -> str:
    """The user's data, state or cache folder for dvx (XDG on Linux); platformdirs loads only if asked."""
    import platformdirs

    return getattr(platformdirs, f"user_{kind}_dir")(APP)


def find_project(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return None


def read_project_file(project_dir: Path) -> dict:
    tomllib = _toml()
    path = project_dir / PROJECT_FILE
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    check_project(project, path)
    return project


def check_project(project: dict, path: Path) -> None:
    """dvx.toml's shape: a format this dvx reads, tables where tables go, values of the right type."""
    version = project.get("format_version", 1)
    if version != 1 or isinstance(version, bool):
        raise UsageError(f"{path}: format_version {version!r} is not supported by this dvx (it reads 1)")
    for table in ("store", "stores", "cache", "transfer"):
        if not isinstance(project.get(table, {}), dict):
            raise UsageError(f"{path}: {table} must be a table ([{table}])")
    url = project.get("store", {}).get("url")
    if url is not None and (not isinstance(url, str) or not url.strip()):
        raise UsageError(f"{path}: [store] url must be a non-empty string")
    cache = project.get("cache", {})
    for key in ("max_size", "chunk_max_size"):
        if key in cache:
            value = cache[key]
            try:
                size = parse_size(value) if not isinstance(value, bool) else -1
            except UsageError:
                size = -1
            if size < 0:
                raise UsageError(f"{path}: [cache] {key} = {value!r} is not a size (write e.g. \"20GiB\")")
    if not isinstance(cache.get("chunks_on_get", False), bool):
        raise UsageError(f"{path}: [cache] chunks_on_get must be true or false")
    jobs = project.get("transfer", {}).get("jobs")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise UsageError(f"{path}: [transfer] jobs must be a whole number of at least 1")


def default_author() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{os.uname().nodename}"  # what socket.gethostname() returns, without importing socket


def _url_and_options(entry: dict) -> tuple[str, dict]:
    return entry["url"], {k: v for k, v in entry.items() if k != "url"}


def _spec_for_url(url: str, stores: dict[str, dict]) -> tuple[str, dict]:
    """A URL with the options dvx.toml gives it (the project's [store] first, then [stores.NAME])."""
    for entry in stores.values():
        if entry["url"] == url:
            return _url_and_options(entry)
    return url, {}


def _project_url(url: str, project_dir: Path) -> str:
    """Relative folder paths in dvx.toml are relative to the project, not to where dvx runs."""
    if "://" not in url and not os.path.isabs(os.path.expanduser(url)):
        return str(project_dir / url)
    return url


def _named_stores(project: dict, project_dir: Path | None) -> dict[str, dict]:
    """dvx.toml's [stores.NAME] tables: url plus per-store options, for --store/--to/--from NAME."""
    tables = project.get("stores", {})
    if not isinstance(tables, dict):
        raise UsageError(f"{project_dir / PROJECT_FILE}: [stores] must hold tables like [stores.NAME]")
    named = {}
    for name, table in tables.items():
        if not isinstance(table, dict) or not isinstance(table.get("url"), str):
            raise UsageError(f"{project_dir / PROJECT_FILE}: [stores.{name}] needs a url")
        named[name] = {**table, "url": normalise_url(_project_url(table["url"], project_dir))}
    return named


def _jobs(value: str | int | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        jobs = int(value)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise UsageError(f"invalid number of jobs {value!r}: use a whole number of at least 1")
    return jobs


def _flag(value: str | bool | None, what: str) -> bool:
    if value is None or value == "" or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"invalid {what} {value!r}: use 1 or 0 (true or false)")


def load_settings(store: str | None = None, cwd: str | os.PathLike[str] | None = None) -> Settings:
    cwd_path = Path(cwd or os.getcwd()).absolute()
    env = os.environ
    project_dir = find_project(cwd_path)
    project = read_project_file(project_dir) if project_dir else {}
    store_table = project.get("store") if isinstance(project.get("store"), dict) else {}
    project_store = store_table.get("url")
    named = _named_stores(project, project_dir)
    if project_store:
        # The project's own store, under the one key no [stores.NAME] can have, so it is found by URL
        # (first) even when another store is active (e.g. fetch --from it).
        named = {"": {**store_table, "url": normalise_url(_project_url(project_store, project_dir))}, **named}

    if store and store in named:
        url, source = named[store]["url"], f"--store option (store {store!r} of {project_dir / PROJECT_FILE})"
    elif store:
        url, source = store, "--store option"
    elif env.get("DVX_STORE"):
        url, source = env["DVX_STORE"], "DVX_STORE environment variable"
    elif project_store:
        url, source = _project_url(project_store, project_dir), f"{project_dir / PROJECT_FILE}"
    else:
        data_dir = Path(env.get("DVX_DATA_DIR") or _user_dir("data"))
        url, source = str(data_dir / "store"), "embedded default store"

    if env.get("DVX_STATE_DIR"):
        state_dir = Path(env["DVX_STATE_DIR"])
    elif project_dir:
        state_dir = project_dir / PROJECT_STATE_DIR
    else:
        state_dir = Path(_user_dir("state"))
    cache_dir = Path(env.get("DVX_CACHE_DIR") or _user_dir("cache"))
    cache_cfg = project.get("cache", {}) if isinstance(project.get("cache"), dict) else {}
    cache_max = parse_size(env.get("DVX_CACHE_MAX_SIZE") or cache_cfg.get("max_size") or DEFAULT_CACHE_MAX)
    chunk_max = env.get("DVX_CHUNK_CACHE_MAX_SIZE") or cache_cfg.get("chunk_max_size")
    chunk_max = DEFAULT_CHUNK_CACHE_MAX if chunk_max is None or chunk_max == "" else parse_size(chunk_max)
    on_get = _flag(env.get("DVX_CHUNK_CACHE_GET") or cache_cfg.get("chunks_on_get"),
                  "DVX_CHUNK_CACHE_GET (or [cache] chunks_on_get)")
    url, options = _spec_for_url(normalise_url(url), named)
    jobs = _jobs(env.get("DVX_JOBS") or project.get("transfer", {}).get("jobs"))
    return Settings(
        store_url=url,
        store_options=options,
        project=project,
        named_stores=named,
        store_source=source,
        project_dir=project_dir,
        state_dir=state_dir,
        cache_dir=cache_dir,
        cache_max_bytes=cache_max,
        chunk_cache_max_bytes=chunk_max,
        chunk_cache_on_get=on_get,
        jobs=jobs,
        author=env.get("DVX_AUTHOR") or default_author(),
    )


def init_project(folder: str | os.PathLike[str], store: str | None) -> Path:
    """Write dvx.toml (and the .dvx/ state folder) in `folder`."""
    import tomlkit

    root = Path(folder).absolute()
    if not root.is_dir():
        raise UsageError(f"cannot make {root} a project: it is not a folder")
    path = root / PROJECT_FILE
    if path.exists():
        raise UsageError(f"{path} already exists")
    content: dict = {"format_version": 1}
    if store:
        content["store"] = {"url": store if "://" in store else os.path.abspath(os.path.expanduser(store))}
    path.write_text(tomlkit.dumps(content), encoding="utf-8")
    (root / PROJECT_STATE_DIR).mkdir(exist_ok=True)
    (root / PROJECT_STATE_DIR / ".gitignore").write_text("*\n", encoding="utf-8")
    return path
