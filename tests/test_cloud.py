"""Every dvx feature, unchanged, on the cloud backends (each against its real emulator on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

import dvx
from conftest import dvx_executable, read_tree, run_dvx, write_tree
from dvx.api.repo import Repo
from servers import new_azure_container, new_gcs_bucket, new_s3_bucket

CLOUD_URLS = {
    "s3": lambda: f"s3://{new_s3_bucket()}/datasets-{uuid.uuid4().hex[:6]}",
    "gcs": lambda: f"gs://{new_gcs_bucket()}/datasets-{uuid.uuid4().hex[:6]}",
    "azure": lambda: f"az://{new_azure_container()}/datasets-{uuid.uuid4().hex[:6]}",
}


@pytest.fixture(params=sorted(CLOUD_URLS))
def cloud_store(request, monkeypatch: pytest.MonkeyPatch) -> str:
    url = CLOUD_URLS[request.param]()
    monkeypatch.setenv("DVX_STORE", url)
    return url


def test_version_round_trip_on_a_cloud_store(cloud_store: str, tmp_path: Path):
    """create → add → commit → change → commit → get both versions back, dedup across versions."""
    files = {"a.txt": "alpha", "sub/b.bin": bytes(range(256)) * 400, "empty": b""}
    src = write_tree(tmp_path / "src", files)
    ds = dvx.Dataset.create("cloudy")
    ds.add(src)
    v1 = ds.commit("first")
    (src / "a.txt").write_text("alpha, changed")
    ds = dvx.Dataset.create("cloudy")
    added = ds.add(src)
    v2 = ds.commit("second", tags=["prod"])
    assert (v1.ref, v2.ref) == ("cloudy@v1", "cloudy@v2")
    assert added.stored_bytes < 100  # only the changed small file is new
    assert read_tree(dvx.get("cloudy@v1", tmp_path / "out1")) == {k: v.encode() if isinstance(v, str) else v
                                                                   for k, v in files.items()}
    assert read_tree(dvx.get("cloudy@prod", tmp_path / "out2"))["a.txt"] == b"alpha, changed"
    assert [c.path for c in dvx.diff("cloudy@v1", "cloudy@v2")] == ["a.txt"]
    with dvx.open("cloudy@v2/sub/b.bin") as f:
        f.seek(1000)
        assert f.read(3) == (bytes(range(256)) * 400)[1000:1003]
    assert dvx.store_info()["url"] == cloud_store


def test_cli_flow_on_a_cloud_store(cloud_store: str, tmp_path: Path):
    """create → add → commit → get → diff through the installed `dvx` command on each backend."""
    src = write_tree(tmp_path / "src", {"train/a.csv": "x,y\n1,2\n", "readme.md": "hello"})
    run_dvx("dataset", "create", "cli", "-m", "start")
    run_dvx("dataset", "add", str(src))
    run_dvx("dataset", "commit", "-m", "one", "--tag", "prod")
    (src / "readme.md").write_text("hello again")
    run_dvx("dataset", "create", "cli")
    run_dvx("dataset", "add", str(src))
    run_dvx("dataset", "commit", "-m", "two")
    out = tmp_path / "out"
    run_dvx("get", "cli@prod", "-o", str(out))
    assert read_tree(out) == {"train/a.csv": b"x,y\n1,2\n", "readme.md": b"hello"}
    changes = json.loads(run_dvx("diff", "cli@v1", "cli@v2", "--json").stdout)["changes"]
    assert [c["path"] for c in changes] == ["readme.md"]
    assert json.loads(run_dvx("store", "--json").stdout)["url"] == cloud_store


WRITERS = 8
_WRITER = """
set -e
dvx dataset create shared
dvx dataset add "$1"
dvx dataset commit -m "from $2" --tag prod --force
"""


def test_concurrent_commits_and_tag_moves_lose_nothing(cloud_store: str, tmp_path: Path):
    """Eight processes commit to one dataset at once and each moves the tag `prod`: there end eight
    versions (one per writer, none lost), and prod points at one of them with every move in its
    history."""
    writers = []
    for n in range(WRITERS):
        folder = write_tree(tmp_path / f"w{n}", {"who.txt": f"writer {n}", "shared.txt": "same"})
        env = dict(os.environ, DVX_STATE_DIR=str(tmp_path / f"state{n}"),
                   PATH=f"{Path(dvx_executable()).parent}{os.pathsep}{os.environ['PATH']}")
        writers.append(subprocess.Popen(["bash", "-c", _WRITER, "-", str(folder), f"w{n}"], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in writers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    versions = dvx.log("shared")
    assert sorted(v.version for v in versions) == list(range(1, WRITERS + 1))
    assert sorted(v.message for v in versions) == sorted(f"from w{n}" for n in range(WRITERS))
    contents = {dvx.open(f"{v.ref}/who.txt").read() for v in versions}
    assert contents == {f"writer {n}".encode() for n in range(WRITERS)}
    tag = Repo().refs().get_tag("shared", "prod")
    assert tag.version in range(1, WRITERS + 1)
    assert len(tag.history) == WRITERS and tag.history[-1].to_version == tag.version
    assert sorted(e.to_version for e in tag.history) == list(range(1, WRITERS + 1))
    previous = None
    for event in tag.history:  # one chain: every move starts where the one before ended
        assert event.from_version == previous
        previous = event.to_version


def test_wrong_azure_key_is_one_error_line_without_the_secret(tmp_path: Path):
    """Denied credentials are a store error (exit 6) on one line, and the key never appears in it."""
    from server_azure import azure_connection_string

    container = new_azure_container()
    wrong_key = "d3Jvbmcta2V5LWZvci10ZXN0cy1vbmx5LW5vdC1hLXJlYWwtc2VjcmV0LWF0LWFsbA=="
    good = azure_connection_string()
    fields = dict(part.split("=", 1) for part in good.rstrip(";").split(";"))
    bad = good.replace(fields["AccountKey"], wrong_key)
    env = {"DVX_STORE": f"az://{container}/x", "AZURE_STORAGE_CONNECTION_STRING": bad}
    for args in (("store",), ("dataset", "list", "--json")):
        proc = run_dvx(*args, env=env, check=False)
        assert proc.returncode == 6, proc.stderr
        assert proc.stderr.startswith("dvx: error:") and proc.stderr.count("\n") == 1, proc.stderr
        assert wrong_key not in proc.stderr + proc.stdout


_ALIAS_MOVER = """
set -e
for i in 1 2 3; do dvx model alias "m@v$(( ($1 + i) % 2 + 1 ))" production -m "mover $1"; done
"""


def test_model_registry_on_a_cloud_store(cloud_store: str, tmp_path: Path):
    """Register with lineage and metrics, protect and move aliases, update metrics, get by alias — and
    three processes moving one alias leave a single history chain — on each backend."""
    data = write_tree(tmp_path / "data", {"t.csv": "x\n1\n"})
    run_dvx("dataset", "create", "d")
    run_dvx("dataset", "add", str(data))
    run_dvx("dataset", "commit")
    ckpt = write_tree(tmp_path / "ckpt", {"w.bin": os.urandom(50_000), "cfg.json": "{}"})
    run_dvx("model", "register", "m", str(ckpt), "--dataset", "d@v1", "--metric", "acc=0.8", "--alias", "staging")
    (ckpt / "w.bin").write_bytes(os.urandom(50_000))
    run_dvx("model", "register", "m", str(ckpt), "--metric", "acc=0.9")
    run_dvx("model", "alias", "m@v2", "production", "--protect")
    assert run_dvx("model", "alias", "m@v1", "production", check=False).returncode == 4
    run_dvx("model", "set", "m@v1", "--metric", "acc=0.95")
    assert dvx.Model.best("m", "acc").version == 1
    assert (dvx.Model.get("m@production").path / "w.bin").read_bytes() == (ckpt / "w.bin").read_bytes()
    assert [v.ref for v in dvx.Model.list(alias="staging")] == ["m@v1"]
    assert dvx.Model.version("m@v1").input_refs == ["d@v1"]
    run_dvx("model", "alias", "m@v2", "production", "--unprotect")
    env = dict(os.environ, PATH=f"{Path(dvx_executable()).parent}{os.pathsep}{os.environ['PATH']}")
    movers = [subprocess.Popen(["bash", "-c", _ALIAS_MOVER, "-", str(n)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for n in range(3)]
    for proc in movers:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    _, aliases = dvx.Model.log("m")
    production = next(a for a in aliases if a.alias == "production")
    previous = None
    for event in production.history:
        assert event.from_version == previous
        previous = event.to_version
    assert production.version == previous
