"""The `dvx` command, run as a real subprocess like a user or a CI job would: the main flow, --json on
every reading command, exit codes and the one-line error format."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest

from conftest import read_tree, run_dvx, write_tree

EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_INTEGRITY = 2, 3, 4, 5


def dvx_json(*args: str, **kw):
    """Run a command with --json and parse its stdout."""
    proc = run_dvx(*args, "--json", **kw)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:  # pragma: no cover - reported as a test failure
        raise AssertionError(f"dvx {' '.join(args)} --json printed invalid JSON: {exc}\n{proc.stdout}") from None


def assert_one_error_line(proc, code: int, *fragments: str) -> str:
    """The process failed with `code` and printed exactly one stderr line 'dvx: error: …' naming fragments."""
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}\n{proc.stderr}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{proc.stderr}"
    assert lines[0].startswith("dvx: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def one_version(tmp_path: Path) -> dict:
    """A dataset `ds` with one committed version made through the CLI."""
    write_tree(tmp_path / "src", {"a.txt": "alpha\n", "sub/b.txt": "beta\n"})
    run_dvx("dataset", "create", "ds")
    run_dvx("dataset", "add", str(tmp_path / "src"))
    info = dvx_json("dataset", "commit", "-m", "first")
    return info


# -- the main flow ---------------------------------------------------------------------------------------

def test_main_flow(tmp_path: Path):
    """create → add → status → commit → list → log → show → ls → diff → tag → get, each with the output
    a user reads."""
    src = write_tree(tmp_path / "src", {"train/a.csv": "x,y\n1,2\n", "train/b.csv": "x,y\n3,4\n", "README": "hi"})
    out = run_dvx("dataset", "create", "vision/cifar", "-m", "initial import").stdout
    assert "vision/cifar" in out
    out = run_dvx("dataset", "add", str(src)).stdout
    assert "3 files" in out
    status = run_dvx("dataset", "status").stdout
    assert re.search(r"^A\s+train/a\.csv$", status, re.M) and re.search(r"^A\s+README$", status, re.M)

    commit = run_dvx("dataset", "commit").stdout
    match = re.search(r"vision/cifar@v1\s+([0-9a-f]{32})", commit)
    assert match, commit
    v1_id = match.group(1)

    listing = run_dvx("dataset", "list").stdout
    assert re.search(r"^vision/cifar\s+vision/cifar@v1\s+1\s+3\b", listing, re.M), listing

    write_tree(src, {"train/c.csv": "x,y\n5,6\n"})
    (src / "README").unlink()
    run_dvx("dataset", "create", "vision/cifar")
    run_dvx("dataset", "sync", str(src))
    commit2 = run_dvx("dataset", "commit", "-m", "second", "--tag", "prod").stdout
    assert "vision/cifar@v2" in commit2

    log = run_dvx("dataset", "log", "vision/cifar").stdout
    assert log.index("v2") < log.index("v1") and v1_id[:12] in log and "(prod)" in log
    graph = run_dvx("dataset", "log", "vision/cifar", "--graph").stdout
    assert graph.startswith("* v2") and "* v1" in graph and "initial import" in graph

    show = run_dvx("dataset", "show", "vision/cifar@v1").stdout
    assert re.search(r"^id:\s+" + v1_id + "$", show, re.M) and re.search(r"^files:\s+3$", show, re.M)

    ls = run_dvx("ls", "vision/cifar@v1").stdout
    assert re.search(r"README$", ls, re.M) and re.search(r"train/\s+\(2 files\)", ls)
    ls_sub = run_dvx("ls", "vision/cifar", "train").stdout
    assert "train/c.csv" in ls_sub

    diff = run_dvx("diff", "vision/cifar@v1", "vision/cifar@v2").stdout
    assert re.search(r"^A\s+train/c\.csv$", diff, re.M) and re.search(r"^D\s+README$", diff, re.M)
    stat = run_dvx("diff", "vision/cifar@v1", "vision/cifar@v2", "--stat").stdout
    assert "1 added" in stat and "1 removed" in stat and "train/c.csv" not in stat

    assert "gold -> vision/cifar@v1" in run_dvx("tag", "vision/cifar@v1", "gold").stdout
    assert "vision/cifar@v1" in run_dvx("dataset", "show", "vision/cifar@gold").stdout

    dest = tmp_path / "out"
    printed = run_dvx("get", "vision/cifar@v1", "-o", str(dest)).stdout.strip()
    assert Path(printed) == dest
    assert read_tree(dest) == {"train/a.csv": b"x,y\n1,2\n", "train/b.csv": b"x,y\n3,4\n", "README": b"hi"}
    cached = Path(run_dvx("get", f"vision/cifar@{v1_id[:10]}").stdout.strip())
    assert read_tree(cached) == read_tree(dest)
    only = run_dvx("get", "vision/cifar@prod", "-o", str(tmp_path / "g"), "--glob", "train/c*").stdout.strip()
    assert read_tree(Path(only)) == {"train/c.csv": b"x,y\n5,6\n"}


def test_drafts_survive_between_commands_and_can_be_named(tmp_path: Path):
    """Each command is a new process: the draft persists; --dataset picks a draft other than the current."""
    write_tree(tmp_path / "a", {"a.txt": "1"})
    write_tree(tmp_path / "b", {"b.txt": "2"})
    run_dvx("dataset", "create", "first")
    run_dvx("dataset", "create", "second")
    run_dvx("dataset", "add", str(tmp_path / "a"), "--dataset", "first")
    run_dvx("dataset", "add", str(tmp_path / "b"))  # the current draft: second
    assert dvx_json("dataset", "commit", "--dataset", "first")["ref"] == "first@v1"
    second = dvx_json("dataset", "commit")
    assert second["ref"] == "second@v1"
    assert [r["path"] for r in dvx_json("ls", "first")] == ["a.txt"]
    assert [r["path"] for r in dvx_json("ls", "second")] == ["b.txt"]


def test_add_to_exclude_remove_discard(tmp_path: Path):
    """--to and --exclude shape what add takes; remove drops by glob; discard closes the draft."""
    write_tree(tmp_path / "src", {"img.png": "p", "notes.log": "l", "deep/x.png": "q"})
    run_dvx("dataset", "create", "shape")
    run_dvx("dataset", "add", str(tmp_path / "src"), "--to", "images", "--exclude", "*.log")
    status = dvx_json("dataset", "status")
    assert sorted(c["path"] for c in status["changes"]) == ["images/deep/x.png", "images/img.png"]
    assert dvx_json("dataset", "remove", "images/deep")["removed"] == ["images/deep/x.png"]
    run_dvx("dataset", "discard")
    proc = run_dvx("dataset", "status", check=False)
    assert_one_error_line(proc, EXIT_NOT_FOUND)


def test_commit_without_changes_says_so(one_version: dict):
    """Committing an unchanged draft reports the current version and makes no new one."""
    run_dvx("dataset", "create", "ds")
    out = run_dvx("dataset", "commit").stdout
    assert "nothing changed" in out and "ds@v1" in out
    assert [v["version"] for v in dvx_json("dataset", "log", "ds")] == [1]


# -- --json everywhere --------------------------------------------------------------------------------------

def test_json_output_of_every_reading_command(tmp_path: Path, one_version: dict):
    """--json on create/add/status/commit/list/log/show/ls/diff/get/tag/store prints one JSON document
    with the fields scripts rely on."""
    assert one_version["ref"] == "ds@v1" and one_version["created_new_version"] is True
    assert re.fullmatch(r"[0-9a-f]{32}", one_version["id"])
    write_tree(tmp_path / "more", {"c.txt": "gamma\n"})
    created = dvx_json("dataset", "create", "ds")
    assert created["name"] == "ds" and created["parents"] == ["ds@v1"]
    added = dvx_json("dataset", "add", str(tmp_path / "more"))
    assert added["files"] == 1 and added["read_files"] == 1
    status = dvx_json("dataset", "status")
    assert status["changes"] == [{"change": "added", "path": "c.txt", "old_size": 0, "new_size": 6}]
    commit = dvx_json("dataset", "commit", "-m", "more")
    assert commit["ref"] == "ds@v2" and commit["parents"] == ["ds@v1"]

    listing = dvx_json("dataset", "list")
    assert [(r["name"], r["latest"], r["versions"]) for r in listing] == [("ds", "ds@v2", 2)]
    log = dvx_json("dataset", "log", "ds")
    assert [v["ref"] for v in log] == ["ds@v2", "ds@v1"]
    show = dvx_json("dataset", "show", "ds@v1")
    assert show["id"] == one_version["id"] and show["files"] == 2
    ls = dvx_json("ls", "ds", "--recursive")
    assert [(r["path"], r["size"]) for r in ls] == [("a.txt", 6), ("c.txt", 6), ("sub/b.txt", 5)]
    diff = dvx_json("diff", "ds@v1", "ds@v2")
    assert diff["summary"]["added"] == 1 and diff["changes"][0]["path"] == "c.txt"
    got = dvx_json("get", "ds@v1", "-o", str(tmp_path / "out"))
    assert Path(got["path"]) == tmp_path / "out"
    tag = dvx_json("tag", "ds@v2", "prod")
    assert tag["ref"] == "ds@v2" and tag["id"] == commit["id"]
    store = dvx_json("store")
    assert store["initialised"] is True and store["url"]
    # --json is also accepted before the command.
    assert json.loads(run_dvx("--json", "dataset", "list").stdout) == listing


def test_get_part_and_glob_json(tmp_path: Path):
    """get --part I/N splits the version between workers; --glob selects; both report their folder."""
    files = {f"f{i}.bin": random.Random(i).randbytes(1000 + i) for i in range(6)}
    write_tree(tmp_path / "src", files)
    run_dvx("dataset", "create", "parts")
    run_dvx("dataset", "add", str(tmp_path / "src"))
    run_dvx("dataset", "commit")
    seen = {}
    for index in range(3):
        got = dvx_json("get", "parts", "--part", f"{index}/3", "-o", str(tmp_path / f"p{index}"))
        seen.update(read_tree(Path(got["path"])))
        assert len(read_tree(Path(got["path"]))) == 2
    assert seen == files
    globbed = dvx_json("get", "parts", "--glob", "f1.bin", "--glob", "f2*")
    assert sorted(read_tree(Path(globbed["path"]))) == ["f1.bin", "f2.bin"]
    proc = run_dvx("get", "parts", "--part", "3/3", check=False)
    assert_one_error_line(proc, EXIT_USAGE, "3/3")


@pytest.mark.parametrize("mode", ["hardlink", "symlink", "reflink"])
def test_get_link_modes(tmp_path: Path, one_version: dict, mode: str):
    """--link modes put the right content in -o DIR."""
    run_dvx("get", "ds", "-o", str(tmp_path / "out"), "--link", mode)
    assert read_tree(tmp_path / "out") == {"a.txt": b"alpha\n", "sub/b.txt": b"beta\n"}


# -- init and the store in use ----------------------------------------------------------------------------

def test_store_shows_where_the_store_comes_from(tmp_path: Path, isolated):
    """`dvx store` names the active store and why: default, DVX_STORE, --store, or the project's dvx.toml."""
    no_env = {"DVX_STORE": None}
    default = dvx_json("store", env=no_env)
    assert default["source"] == "embedded default store"
    assert Path(default["url"]).is_relative_to(isolated["data"]) and default["initialised"] is False
    from_env = dvx_json("store")
    assert from_env["source"] == "DVX_STORE environment variable" and from_env["url"] == str(isolated["store"])
    option = dvx_json("store", "--store", str(tmp_path / "opt"))
    assert option["source"] == "--store option" and option["url"] == str(tmp_path / "opt")
    assert "--store option" in run_dvx("--store", str(tmp_path / "opt"), "store").stdout

    project = tmp_path / "proj"
    project.mkdir()
    out = run_dvx("init", "--store", str(tmp_path / "pstore"), cwd=project).stdout
    assert "dvx.toml" in out and (project / "dvx.toml").is_file() and (project / ".dvx").is_dir()
    in_project = dvx_json("store", cwd=project, env=no_env)
    assert in_project["url"] == str(tmp_path / "pstore")
    assert in_project["source"] == str(project / "dvx.toml")
    (project / "nested").mkdir()
    assert dvx_json("store", cwd=project / "nested", env=no_env)["url"] == str(tmp_path / "pstore")
    # DVX_STORE beats dvx.toml, --store beats both.
    assert dvx_json("store", cwd=project)["url"] == str(isolated["store"])
    assert dvx_json("store", "--store", str(tmp_path / "opt"), cwd=project)["url"] == str(tmp_path / "opt")
    human = run_dvx("store", cwd=project, env=no_env).stdout
    assert str(tmp_path / "pstore") in human and "dvx.toml" in human


def test_init_twice_is_an_error(tmp_path: Path):
    """init refuses to overwrite an existing dvx.toml."""
    run_dvx("init")
    proc = run_dvx("init", check=False)
    assert_one_error_line(proc, EXIT_USAGE, "dvx.toml")


def test_project_store_is_used_for_commits(tmp_path: Path, isolated):
    """In an initialised project with no DVX_STORE, versions go to the store named in dvx.toml, and
    `dataset add .` takes neither dvx.toml nor .dvx/."""
    env = {"DVX_STORE": None, "DVX_STATE_DIR": None}
    run_dvx("init", "--store", str(tmp_path / "pstore"), env=env)
    write_tree(isolated["work"], {"data.csv": "1\n"})
    run_dvx("dataset", "create", "proj", env=env)
    run_dvx("dataset", "add", ".", env=env)
    run_dvx("dataset", "commit", env=env)
    assert (tmp_path / "pstore" / "config.json").is_file()
    assert not isolated["store"].exists()
    assert [r["path"] for r in dvx_json("ls", "proj", "-r", env=env)] == ["data.csv"]


# -- errors and exit codes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, code, fragment", [
    (["get", "nosuch"], EXIT_NOT_FOUND, "nosuch"),
    (["dataset", "show", "ds@v7"], EXIT_NOT_FOUND, "ds@v7"),
    (["ls", "ds@nosuchtag"], EXIT_NOT_FOUND, "nosuchtag"),
    (["ls", "ds", "no/such/path"], EXIT_NOT_FOUND, "no/such/path"),
    (["dataset", "log", "nosuch"], EXIT_NOT_FOUND, "nosuch"),
    (["get", "bad name"], EXIT_USAGE, "bad name"),
    (["get", "ds@"], EXIT_USAGE, "ds@"),
    (["dataset", "create", "a//b"], EXIT_USAGE, "a//b"),
    (["tag", "ds@v1", "v2"], EXIT_USAGE, "v2"),
    (["dataset", "add", "/no/such/folder", "--dataset", "ds"], EXIT_NOT_FOUND, "/no/such/folder"),
])
def test_user_mistakes_are_one_line_with_their_exit_code(one_version: dict, args, code: int, fragment: str):
    """Unknown things exit 3, malformed names and references exit 2; one 'dvx: error:' line naming the
    thing, no traceback."""
    if args[:2] == ["dataset", "add"]:
        run_dvx("dataset", "create", "ds")
    proc = run_dvx(*args, check=False)
    assert_one_error_line(proc, code, fragment)
    assert proc.stdout == ""


def test_conflicting_draft_exits_4(tmp_path: Path):
    """Creating a draft that is already open is a conflict (exit 4) that says how to resolve it."""
    run_dvx("dataset", "create", "twice")
    proc = run_dvx("dataset", "create", "twice", check=False)
    line = assert_one_error_line(proc, EXIT_CONFLICT, "twice")
    assert "discard" in line
    run_dvx("dataset", "create", "twice", "--replace")


def test_moving_a_tag_without_force_exits_4(tmp_path: Path, one_version: dict):
    """A tag already on another version is a conflict unless --force."""
    write_tree(tmp_path / "more", {"z": "z"})
    run_dvx("dataset", "create", "ds")
    run_dvx("dataset", "add", str(tmp_path / "more"))
    run_dvx("dataset", "commit")
    run_dvx("tag", "ds@v1", "prod")
    assert_one_error_line(run_dvx("tag", "ds@v2", "prod", check=False), EXIT_CONFLICT, "prod")
    assert dvx_json("tag", "ds@v2", "prod", "--force")["ref"] == "ds@v2"
    assert dvx_json("dataset", "show", "ds@prod")["ref"] == "ds@v2"


def test_damaged_pack_exits_5_naming_version_and_file(tmp_path: Path, isolated, one_version: dict):
    """A flipped byte in a pack makes get fail with exit 5 and a message naming NAME@vN and the file."""
    (pack,) = sorted((isolated["store"] / "packs").rglob("*.pack"))
    pack.chmod(0o644)
    data = bytearray(pack.read_bytes())
    data[2] ^= 0xFF
    pack.write_bytes(bytes(data))
    proc = run_dvx("get", "ds", "-o", str(tmp_path / "out"), check=False)
    line = assert_one_error_line(proc, EXIT_INTEGRITY, "ds@v1")
    assert "a.txt" in line or "sub/b.txt" in line


def test_debug_shows_the_traceback(one_version: dict):
    """--debug (before or after the command) shows the Python traceback of a failure."""
    for args in (["--debug", "get", "nosuch"], ["get", "nosuch", "--debug"]):
        proc = run_dvx(*args, check=False)
        assert proc.returncode != 0
        assert "Traceback (most recent call last)" in proc.stderr
        assert "NotFoundError" in proc.stderr


def test_usage_errors_from_option_parsing_are_one_line_too():
    """An unknown option or an invalid choice is a user mistake like any other: exit 2 and one
    'dvx: error:' line naming it, without click's multi-line usage block."""
    proc = run_dvx("get", "x", "--bogus", check=False)
    assert_one_error_line(proc, EXIT_USAGE, "--bogus")
    proc = run_dvx("get", "x", "--link", "teleport", check=False)
    assert_one_error_line(proc, EXIT_USAGE, "teleport")


def test_missing_arguments_exit_2_without_traceback():
    """Forgetting a required argument exits 2 and names it, without a traceback."""
    proc = run_dvx("dataset", "add", check=False)
    assert proc.returncode == EXIT_USAGE
    assert "PATHS" in proc.stderr or "path" in proc.stderr.lower()


def test_help_and_version():
    """--help lists the command groups; --version prints the version."""
    helptext = run_dvx("--help").stdout
    for command in ("dataset", "get", "ls", "diff", "tag", "init", "store"):
        assert re.search(rf"^\s+{command}\b", helptext, re.M), command
    assert re.search(r"\d+\.\d+\.\d+", run_dvx("--version").stdout)


def test_empty_store_listing_is_friendly():
    """On a store with nothing in it, `dataset list` explains how to start and --json gives []."""
    assert "dvx dataset create" in run_dvx("dataset", "list").stdout
    assert dvx_json("dataset", "list") == []


def test_every_command_resolves_and_a_dataset_command_loads_only_its_own_code(tmp_path: Path):
    """Commands are imported when run (a cold start is paid by every command): `dvx dataset create`
    must not import the model, gc, lineage, UI or transfer code, and every listed command must load."""
    import subprocess
    import sys

    probe = """
import sys
import click
from dvx.cli.main import cli, main
try:
    main(["dataset", "create", "probe", "-m", "x"])
except SystemExit as exc:
    assert not exc.code, exc.code
loaded = sorted(m for m in ("dvx.cli.model", "dvx.cli.gc", "dvx.cli.lineage", "dvx.cli.ui", "dvx.ui",
                            "dvx.api.transfer", "dvx.api.models", "dvx.api.shared_drafts", "tempfile",
                            "socket") if m in sys.modules)
print("loaded:", loaded)
ctx = click.Context(cli)
for name in cli.list_commands(ctx):
    command = cli.get_command(ctx, name)
    assert command is not None and command.name == name, name
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            assert command.get_command(ctx, sub) is not None, (name, sub)
print("commands:", len(cli.list_commands(ctx)))
"""
    env = {**os.environ, "DVX_STORE": str(tmp_path / "store"), "DVX_STATE_DIR": str(tmp_path / "state"),
           "DVX_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "loaded: []" in out.stdout
    assert "commands: 18" in out.stdout
