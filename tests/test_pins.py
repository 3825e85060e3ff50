"""Pins in dvx.toml: `dvx pin`, `dvx pull`, `dvx status`, and `dvx.get("NAME")` meaning the pinned version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import read_tree, run_dvx, write_tree


def _commit(tmp_path: Path, name: str, files: dict, message: str = "") -> None:
    folder = write_tree(tmp_path / f"src-{name}-{len(list(tmp_path.iterdir()))}", files)
    run_dvx("dataset", "create", name)
    run_dvx("dataset", "sync", str(folder))
    run_dvx("dataset", "commit", "-m", message or name)


@pytest.fixture
def project(tmp_path: Path, isolated) -> Path:
    """A project (dvx init) whose store has cifar@v1, cifar@v2 (tagged production) and model m@v1."""
    _commit(tmp_path, "cifar", {"labels.csv": "id,label\n1,cat\n", "train/a.bin": b"\x00" * 5000})
    _commit(tmp_path, "cifar", {"labels.csv": "id,label\n1,cat\n2,dog\n", "train/a.bin": b"\x00" * 5000})
    run_dvx("tag", "cifar@v2", "production")
    run_dvx("model", "register", "m", str(write_tree(tmp_path / "ckpt", {"w.bin": b"weights"})), "--alias", "prod")
    run_dvx("init")
    return isolated["work"]


def test_pin_resolves_an_alias_once_and_keeps_the_rest_of_dvx_toml(project: Path):
    """`dvx pin NAME@tag` writes the version and id it means now; comments and expect tables survive,
    and re-pinning updates the same table."""
    toml = project / "dvx.toml"
    toml.write_text(toml.read_text() + '\n# data the code uses\n[datasets.cifar.expect]\nfiles = { min = 1 }\n')
    out = json.loads(run_dvx("pin", "cifar@production", "--path", "data/cifar", "--json").stdout)
    assert (out["version"], out["source"], out["path"]) == ("cifar@v2", "cifar@production", "data/cifar")
    run_dvx("pin", "m@prod", "--model")
    text = toml.read_text()
    assert "# data the code uses" in text and "files = { min = 1 }" in text
    run_dvx("tag", "cifar@v1", "production", "--force")
    assert json.loads(run_dvx("pin", "cifar@production", "--json").stdout)["version"] == "cifar@v1"
    import tomllib

    doc = tomllib.loads(toml.read_text())
    assert doc["datasets"]["cifar"]["version"] == "cifar@v1" and doc["datasets"]["cifar"]["path"] == "data/cifar"
    assert doc["datasets"]["cifar"]["expect"] == {"files": {"min": 1}}
    assert doc["models"]["m"]["version"] == "m@v1" and len(doc["models"]["m"]["id"]) == 32


def test_pull_then_status_reports_every_kind_of_drift(project: Path):
    """status: absent folder → drift; after pull → clean (exit 0); a modified, a missing and an extra
    file → drift (exit 1) listed by path; a pinned version missing from the store → drift."""
    run_dvx("pin", "cifar@v2", "--path", "data/cifar")
    run_dvx("pin", "m@v1", "--model", "--path", "models/m")
    before = run_dvx("status", check=False)
    assert before.returncode == 1 and "dvx pull cifar" in before.stdout
    pulled = json.loads(run_dvx("pull", "--json").stdout)
    assert [p["version"] for p in pulled] == ["cifar@v2", "m@v1"]
    assert read_tree(project / "data/cifar")["labels.csv"] == b"id,label\n1,cat\n2,dog\n"
    assert (project / "models/m/w.bin").read_bytes() == b"weights"
    clean = run_dvx("status", "--json")
    assert json.loads(clean.stdout)["clean"] is True

    (project / "data/cifar/labels.csv").write_text("id,label\n1,cow\n2,dog\n")
    (project / "data/cifar/train/a.bin").unlink()
    (project / "data/cifar/notes.txt").write_text("scratch")
    drift = run_dvx("status", "--json", check=False)
    assert drift.returncode == 1
    state = {p["name"]: p for p in json.loads(drift.stdout)["pins"]}
    assert (state["cifar"]["modified"], state["cifar"]["missing"], state["cifar"]["extra"]) == (
        ["labels.csv"], ["train/a.bin"], ["notes.txt"])
    assert state["m"]["clean"] is True
    human = run_dvx("status", check=False).stdout
    assert "modified labels.csv" in human and "missing  train/a.bin" in human and "extra    notes.txt" in human

    run_dvx("pull", "cifar")  # restores the missing and modified files (the extra one stays, and is reported)
    after = json.loads(run_dvx("status", "cifar", "--json", check=False).stdout)["pins"][0]
    assert (after["modified"], after["missing"], after["extra"]) == ([], [], ["notes.txt"])


def test_status_is_fast_on_unchanged_files_and_notices_same_size_edits(project: Path, isolated):
    """The stat cache: one full comparison remembers the pulled files (so later runs don't re-read
    them); an edit of the same size (different mtime) is still found."""
    run_dvx("pin", "cifar@v2", "--path", "data/cifar")
    run_dvx("pull")
    time.sleep(0.1)  # past the racy-timestamp window, so the first status may remember the files
    assert run_dvx("status").returncode == 0
    import sqlite3

    with sqlite3.connect(isolated["cache"] / "statcache.sqlite") as db:
        remembered = {row[0] for row in db.execute("SELECT path FROM files_v1")}
    assert {str(project / "data/cifar/labels.csv"), str(project / "data/cifar/train/a.bin")} <= remembered
    labels = project / "data/cifar/labels.csv"
    labels.write_text("id,label\n1,cow\n2,dog\n".replace("cow", "cat").replace("dog", "dgo"))
    assert run_dvx("status", check=False).returncode == 1


def test_pinned_version_missing_from_the_store_is_drift(project: Path, tmp_path: Path):
    run_dvx("pin", "cifar@v2")
    other = tmp_path / "other-store"
    _env = {"DVX_STORE": str(other)}
    run_dvx("dataset", "create", "x", env=_env)
    run_dvx("dataset", "add", str(write_tree(tmp_path / "x", {"a": "a"})), env=_env)
    run_dvx("dataset", "commit", env=_env)
    proc = run_dvx("status", "--json", env=_env, check=False)
    assert proc.returncode == 1
    pin = json.loads(proc.stdout)["pins"][0]
    assert pin["store"] == "missing" and "cifar@v2" in pin["store_error"]


def test_bare_name_means_the_pinned_version_in_python_and_cli(project: Path):
    """Inside the project, dvx.get("cifar") / `dvx get cifar` / Model.get("m") give the pinned versions;
    NAME@latest still gives the latest; outside the project NAME is the latest again."""
    run_dvx("pin", "cifar@v1")
    code = ("import dvx; print(dvx.version('cifar').ref, dvx.version('cifar@latest').ref, "
            "open(dvx.get('cifar') / 'labels.csv').read().count(chr(10)), dvx.Model.get('m').ref)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=project, env=os.environ).stdout.split()
    assert out == ["cifar@v1", "cifar@v2", "2", "m@v1"]
    assert json.loads(run_dvx("ls", "cifar", "--json").stdout)
    outside = subprocess.run([sys.executable, "-c", "import dvx; print(dvx.version('cifar').ref)"],
                             capture_output=True, text=True, check=True, cwd=project.parent).stdout.strip()
    assert outside == "cifar@v2"


@pytest.mark.parametrize("table, message", [
    ('[datasets.cifar]\nversion = "cifar@v1"\n', "id"),
    ('[datasets.cifar]\nid = "' + "a" * 32 + '"\nversion = "other@v1"\n', "cifar@vN"),
    ('[datasets.cifar]\nid = "' + "a" * 32 + '"\nversion = "cifar@v1"\npath = "../outside"\n', "inside"),
    ('[datasets.cifar]\nid = "' + "a" * 32 + '"\nversion = "cifar@v1"\ncolour = "red"\n', "colour"),
    ('datasets = 3\n', "[datasets]"),
])
def test_malformed_pins_are_usage_errors(project: Path, table: str, message: str):
    """A hand-edited pin that makes no sense is exit 2 with the file and the table named."""
    (project / "dvx.toml").write_text((project / "dvx.toml").read_text() + "\n" + table)
    proc = run_dvx("status", check=False)
    assert proc.returncode == 2 and message in proc.stderr and "dvx.toml" in proc.stderr


def test_pin_commands_outside_a_project_say_what_to_do(tmp_path: Path, isolated):
    for args in (["pin", "x@v1"], ["pull"], ["status"]):
        proc = run_dvx(*args, check=False)
        assert proc.returncode == 2 and "dvx init" in proc.stderr, args
