"""Architecture checks on the source (after dulwich's tests/test_source.py): imports point one way only,
only the CLI and dvx/api/config.py read the environment, only dvx/fs talks to fsspec and cloud SDKs.

Layers, lowest first: fs(0) < chunks(1) < manifests(2) < refs(3) < api(4) < ui(5) < cli(6); the web UI
(dvx/ui) presents the API like the CLI does, and the CLI starts it. The shared leaf
modules dvx/errors.py and dvx/locks.py are importable by everyone and import only each other; dvx/__init__.py is the top and may import anything, but nothing may import it
(that is, nothing may do `import dvx` or `from dvx import NAME` for a NAME that is not a sub-module).
Integrations (dvx/fsspec_impl.py, the dvx:// filesystem) sit on top of the API like the CLI: they may
import dvx.api and the shared leaf modules only (and fsspec), and nothing in dvx imports them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dvx"

LAYERS = {"fs": 0, "chunks": 1, "manifests": 2, "refs": 3, "api": 4, "ui": 5, "cli": 6}
INTEGRATION = 7  # integrations on top of the API; they may import only dvx.api and the shared modules
INTEGRATIONS = {"fsspec_impl": {"fsspec"}}  # module → the cloud-SDK packages it may import
TOP = 100  # dvx/__init__.py
FREE = -1  # shared leaf modules, importable by every layer
SHARED = {"errors", "locks"}
CLOUD_SDKS = {"fsspec", "s3fs", "gcsfs", "adlfs", "boto3", "botocore", "aiobotocore", "google", "azure"}
ENV_READERS = {"dvx/api/config.py"}  # plus everything under dvx/cli/


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name, e.g. "dvx.api.repo" or "fsspec"
    line: int


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _is_submodule(dotted: str) -> bool:
    """True when `dotted` (dvx.x.y) names a module or package in the source tree."""
    rel = Path(*dotted.split("."))
    return (PACKAGE.parent / rel.with_suffix(".py")).is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def imports_of(path: Path) -> list[Import]:
    package = _module_name(path) if _is_package(path) else _module_name(path).rpartition(".")[0]
    return imports_in(path.read_text(encoding="utf-8"), package)


def imports_in(source: str, package: str) -> list[Import]:
    """Every import in `source` (a module of `package`), at any depth (function-level and TYPE_CHECKING
    ones too), made absolute. `from dvx import X` counts as importing dvx.X when X is a sub-module, else
    as importing `dvx` itself. String imports through importlib.import_module / __import__ are included."""
    tree = ast.parse(source)
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if base.split(".")[0] == "dvx" and _is_submodule(candidate):
                    found.append(Import(candidate, node.lineno))
                else:
                    found.append(Import(base, node.lineno))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                found.append(Import(node.args[0].value, node.lineno))
    return found


def layer_of_module(dotted: str) -> int | None:
    """Layer of an in-package module name; None for anything outside dvx."""
    parts = dotted.split(".")
    if parts[0] != "dvx":
        return None
    if len(parts) == 1:
        return TOP
    if parts[1] in SHARED:
        return FREE
    if parts[1] in INTEGRATIONS:
        return INTEGRATION
    if parts[1] in LAYERS:
        return LAYERS[parts[1]]
    raise AssertionError(f"module {dotted} belongs to no layer: add it to LAYERS in tests/test_layers.py")


def layer_of_file(path: Path) -> int:
    return layer_of_module(_module_name(path))


SOURCES = _sources()
IDS = [_rel(p) for p in SOURCES]


def test_the_source_tree_is_found():
    """The checks below would pass vacuously on an empty tree: make sure every layer has modules."""
    packages = {p.relative_to(PACKAGE).parts[0] for p in SOURCES if len(p.relative_to(PACKAGE).parts) > 1}
    assert set(LAYERS) <= packages, f"layers without source: {set(LAYERS) - packages}"
    assert (PACKAGE / "errors.py").is_file() and (PACKAGE / "__init__.py").is_file()


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_every_module_belongs_to_a_layer(path: Path):
    """A new top-level module or package must be placed in the layer order before it can land."""
    assert layer_of_file(path) in {*LAYERS.values(), INTEGRATION, FREE, TOP}


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_imports_point_down(path: Path):
    """No module imports a higher layer (nor `dvx` itself); shared leaf modules import no layer."""
    own = layer_of_file(path)
    bad = []
    for imp in imports_of(path):
        target = layer_of_module(imp.module)
        if target is None:
            continue
        if own == FREE:
            if target != FREE:
                bad.append(imp)  # shared leaf modules must not depend on any layer
        elif own == TOP:
            continue
        elif own == INTEGRATION:
            if target not in (FREE, LAYERS["api"]):
                bad.append(imp)  # only the API (and errors/locks), like the CLI
        elif target == TOP or target > own:
            bad.append(imp)
    assert not bad, f"{_rel(path)} imports a higher layer: " + ", ".join(f"{i.module} (line {i.line})" for i in bad)


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_only_fs_imports_fsspec_and_cloud_sdks(path: Path):
    """fsspec, s3fs, gcsfs, adlfs (and the SDKs under them) are imported only inside dvx/fs."""
    if _rel(path).startswith("dvx/fs/"):
        return
    allowed = INTEGRATIONS.get(_module_name(path).split(".")[-1], set()) if layer_of_file(path) == INTEGRATION else set()
    bad = [i for i in imports_of(path) if i.module.split(".")[0] in CLOUD_SDKS - allowed]
    assert not bad, f"{_rel(path)} imports " + ", ".join(f"{i.module} (line {i.line})" for i in bad)


def _environment_reads(tree: ast.AST) -> list[int]:
    """Lines that touch os.environ / os.environb / os.getenv / os.putenv or import them from os."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "environb", "getenv", "putenv", "unsetenv") \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                a.name in ("environ", "environb", "getenv", "putenv", "unsetenv") for a in node.names):
            lines.append(node.lineno)
    return lines


def _argv_or_terminal(tree: ast.AST) -> list[int]:
    """Lines that read sys.argv or ask whether a stream is a terminal."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "argv" and isinstance(node.value, ast.Name) \
                and node.value.id == "sys":
            lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr == "isatty":
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "argv" for a in node.names):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_only_cli_and_config_read_the_environment(path: Path):
    """Environment variables are read in dvx/cli/ and dvx/api/config.py only (settings flow down as values)."""
    rel = _rel(path)
    if rel.startswith("dvx/cli/") or rel in ENV_READERS:
        return
    lines = _environment_reads(ast.parse(path.read_text(encoding="utf-8")))
    assert not lines, f"{rel} reads the environment at lines {lines}"


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_only_cli_reads_argv_or_the_terminal(path: Path):
    """argv and terminal checks belong to the CLI; lower layers take arguments and callbacks."""
    rel = _rel(path)
    if rel.startswith("dvx/cli/"):
        return
    lines = _argv_or_terminal(ast.parse(path.read_text(encoding="utf-8")))
    assert not lines, f"{rel} reads argv or the terminal at lines {lines}"


# -- the checker itself ----------------------------------------------------------------------------------

def test_checker_sees_function_level_and_relative_imports():
    """The import scanner finds imports inside functions, relative imports, `from dvx import X` and
    importlib calls, so a violation cannot hide in any of those spellings."""
    source = (
        "def f():\n"
        "    from dvx.api import repo\n"
        "    import dvx.cli.main\n"
        "from .. import manifests\n"
        "from . import pack\n"
        "from dvx import Dataset\n"
        "import importlib\n"
        "importlib.import_module('dvx.refs')\n"
    )
    modules = {i.module for i in imports_in(source, "dvx.chunks")}
    assert {"dvx.api.repo", "dvx.cli.main", "dvx.manifests", "dvx.chunks.pack", "dvx", "dvx.refs"} <= modules
    assert layer_of_module("dvx") == TOP
    assert layer_of_module("dvx.api.repo") > LAYERS["chunks"]


def test_checker_finds_environment_reads():
    """The environment scanner flags the spellings a module could use."""
    tree = ast.parse("import os\nfrom os import getenv\nx = os.environ.get('A')\ny = os.getenv('B')\n")
    assert sorted(_environment_reads(tree)) == [2, 3, 4]
