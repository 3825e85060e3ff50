"""The model registry: register, aliases (CAS, history, protection), tags, metrics, list/show/get, dedup."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
from pathlib import Path

import pytest

import dvx
from conftest import dvx_executable, read_tree, run_dvx, write_tree


def _one_error_line(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dvx: error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_safetensors(path: Path, tensors: dict[str, bytes]) -> None:
    """A real safetensors file (8-byte header length, JSON header, raw F32 data) — no extra dependency."""
    header, offset = {}, 0
    for name, data in tensors.items():
        header[name] = {"dtype": "F32", "shape": [len(data) // 4], "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for data in tensors.values():
            f.write(data)


def checkpoint(layers: int, layer_bytes: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"layer{i:02d}.weight": rng.randbytes(layer_bytes) for i in range(layers)}


@pytest.fixture
def data_version(isolated, tmp_path: Path) -> str:
    write_tree(tmp_path / "data", {"train.csv": "x,y\n1,2\n"})
    run_dvx("dataset", "create", "cifar")
    run_dvx("dataset", "add", str(tmp_path / "data"))
    run_dvx("dataset", "commit", "-m", "data")
    return "cifar@v1"


def test_register_alias_show_get_through_the_cli(tmp_path: Path, data_version: str):
    """The whole registry flow with the installed command: register with lineage, metrics, params and an
    alias; a second version; move and protect an alias; show, list, log and get by alias."""
    ckpt = write_tree(tmp_path / "ckpt", {"config.json": '{"arch": "resnet"}', "weights.bin": os.urandom(200_000)})
    out = json.loads(run_dvx("model", "register", "vision/resnet", str(ckpt), "--dataset", data_version,
                             "--metric", "accuracy=0.91", "--param", "lr=0.1", "--param", "optimizer=adam",
                             "--framework", "pytorch", "-m", "first", "--alias", "staging", "--json").stdout)
    assert out["ref"] == "vision/resnet@v1" and out["aliases"] == ["staging"]
    assert out["metrics"] == {"accuracy": 0.91} and out["params"] == {"lr": 0.1, "optimizer": "adam"}
    assert out["input_refs"] == ["cifar@v1"] and out["framework"] == "pytorch"
    (ckpt / "weights.bin").write_bytes(os.urandom(200_000))
    run_dvx("model", "register", "vision/resnet", str(ckpt), "--metric", "accuracy=0.95", "--alias", "staging",
            "--tag", "candidate")
    moved = json.loads(run_dvx("model", "alias", "vision/resnet@v2", "production", "--protect", "-m", "ship",
                               "--json").stdout)
    assert moved["version"] == 2 and moved["protected"]

    refused = run_dvx("model", "alias", "vision/resnet@v1", "production", check=False)
    _one_error_line(refused, 4, "protected", "--force")
    run_dvx("model", "alias", "vision/resnet@v1", "production", "--force", "-m", "rollback")

    show = json.loads(run_dvx("model", "show", "vision/resnet@staging", "--json").stdout)
    assert (show["version"], show["aliases"], show["tags"]) == (2, ["staging"], ["candidate"])
    assert show["parents"] == ["vision/resnet@v1"] and show["bytes"] == 200_000 + len('{"arch": "resnet"}')
    assert 200_000 <= show["stored_new_bytes"] < 210_000  # the new weights; config.json is shared
    human = run_dvx("model", "show", "vision/resnet@v1").stdout
    assert "trained on:           cifar@v1" in human and "accuracy=0.91" in human

    log = json.loads(run_dvx("model", "log", "vision/resnet", "--json").stdout)
    assert [v["version"] for v in log["versions"]] == [2, 1]
    production = next(a for a in log["aliases"] if a["alias"] == "production")
    assert [(e["action"], e["from_version"], e["to_version"], e["message"]) for e in production["history"]] == [
        ("set", None, 2, "ship"), ("move", 2, 1, "rollback")]
    assert production["protected"] and all(e["by"] and e["at"] for e in production["history"])
    assert "v2 -> v1  rollback" in run_dvx("model", "log", "vision/resnet").stdout

    got = json.loads(run_dvx("model", "get", "vision/resnet@production", "-o", str(tmp_path / "out"),
                             "--json").stdout)
    assert got["version"] == 1 and Path(got["path"]) == tmp_path / "out"
    assert read_tree(tmp_path / "out")["config.json"] == b'{"arch": "resnet"}'
    cached = run_dvx("model", "get", "vision/resnet@v2").stdout.strip()
    assert (Path(cached) / "weights.bin").read_bytes() == (ckpt / "weights.bin").read_bytes()


def test_list_filters_and_sorts_by_metric(tmp_path: Path, isolated):
    """`model list`: latest per model; --alias; --tag; NAME --sort metric:desc picks the best; --limit."""
    for name, scores in (("a", [0.5, 0.9, 0.7]), ("b", [0.8])):
        for score in scores:
            folder = write_tree(tmp_path / f"{name}{score}", {"w.bin": f"{name}{score}" * 100})
            args = ["--tag", "good"] if score > 0.75 else []
            run_dvx("model", "register", name, str(folder), "--metric", f"score={score}", *args)
    run_dvx("model", "alias", "a@v2", "production")
    latest = json.loads(run_dvx("model", "list", "--json").stdout)
    assert [(v["name"], v["version"]) for v in latest] == [("a", 3), ("b", 1)]
    by_alias = json.loads(run_dvx("model", "list", "--alias", "production", "--json").stdout)
    assert [(v["name"], v["version"]) for v in by_alias] == [("a", 2)]
    tagged = json.loads(run_dvx("model", "list", "--tag", "good", "--json").stdout)
    assert sorted((v["name"], v["version"]) for v in tagged) == [("a", 2), ("b", 1)]
    best = json.loads(run_dvx("model", "list", "a", "--sort", "score:desc", "--limit", "2", "--json").stdout)
    assert [v["version"] for v in best] == [2, 3]
    across = json.loads(run_dvx("model", "list", "--all", "--sort", "score", "--json").stdout)
    assert [v["metrics"]["score"] for v in across] == [0.5, 0.7, 0.8, 0.9]
    assert dvx.Model.best("a", "score").version == 2
    assert dvx.Model.best("a", "score", mode="min").version == 1
    table = run_dvx("model", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["version", "id", "created"] and table[1].startswith("a@v3")
    _one_error_line(run_dvx("model", "list", "--sort", "score:sideways", check=False), 2, "sort")
    _one_error_line(run_dvx("model", "list", "--sort", "nope", check=False), 3, "nope")


def test_tags_and_metrics_change_without_changing_the_content_id(tmp_path: Path, isolated):
    """`model set` and `model tag` update the annotations (with history) and never the version id."""
    folder = write_tree(tmp_path / "m", {"w.bin": b"weights"})
    first = json.loads(run_dvx("model", "register", "m", str(folder), "--metric", "loss=0.3", "--json").stdout)
    after = json.loads(run_dvx("model", "set", "m@v1", "--metric", "loss=0.25", "--metric", "f1=0.8",
                               "--param", "epochs=10", "--meta", "owner=ada", "--json").stdout)
    assert after["id"] == first["id"]
    assert after["metrics"] == {"loss": 0.25, "f1": 0.8} and after["params"] == {"epochs": 10}
    assert after["metadata"] == {"owner": "ada"}
    run_dvx("model", "tag", "m@v1", "validated")
    run_dvx("model", "tag", "m@v1", "validated")  # idempotent
    assert json.loads(run_dvx("model", "show", "m", "--json").stdout)["tags"] == ["validated"]
    run_dvx("model", "tag", "m@v1", "validated", "--delete")
    assert dvx.Model.version("m@v1").labels == []
    _one_error_line(run_dvx("model", "tag", "m@v1", "validated", "--delete", check=False), 3, "validated")
    _one_error_line(run_dvx("model", "set", "m@v1", "--metric", "loss=low", check=False), 2, "not a number")
    _one_error_line(run_dvx("model", "set", "m@v1", "--metric", "loss", check=False), 2, "KEY=VALUE")
    _one_error_line(run_dvx("model", "set", "m@v1", check=False), 2, "nothing to update")
    from dvx.api.repo import Repo

    history = Repo().refs("model").get_annotations("m", 1).history
    assert [sorted(e.changes) for e in history] == [["metrics"], ["metadata", "metrics", "params"],
                                                    ["tags_added"], ["tags_removed"]]


def test_user_mistakes_are_one_line_errors(tmp_path: Path, isolated):
    """Missing paths, unknown datasets, bad names and refs: clear messages and documented exit codes."""
    folder = write_tree(tmp_path / "m", {"w.bin": b"w"})
    _one_error_line(run_dvx("model", "register", "m", str(tmp_path / "nope"), check=False), 3, "nope")
    _one_error_line(run_dvx("model", "register", "m", str(folder), "--dataset", "ghost@v1", check=False), 3,
                    "ghost")
    _one_error_line(run_dvx("model", "register", "bad name", str(folder), check=False), 2, "invalid name")
    _one_error_line(run_dvx("model", "register", "m", str(folder), "--alias", "v2", check=False), 2, "v2")
    assert dvx.Model.names() == []  # nothing was registered by the failed attempts
    run_dvx("model", "register", "m", str(folder))
    _one_error_line(run_dvx("model", "alias", "m", "production", check=False), 2, "m@vN")
    _one_error_line(run_dvx("model", "alias", "m@v9", "production", check=False), 3, "m@v9")
    _one_error_line(run_dvx("model", "alias", "m", "production", "--delete", check=False), 3, "production")
    _one_error_line(run_dvx("model", "show", "m@production", check=False), 3, "production")
    _one_error_line(run_dvx("model", "log", "other", check=False), 3, "other")


def test_protected_alias_refuses_register_before_storing_anything(tmp_path: Path, isolated):
    """`register --alias production` while production is protected fails before a version is made."""
    folder = write_tree(tmp_path / "m", {"w.bin": b"one"})
    run_dvx("model", "register", "m", str(folder), "--alias", "production")
    run_dvx("model", "alias", "m@v1", "production", "--protect")
    (folder / "w.bin").write_bytes(b"two")
    _one_error_line(run_dvx("model", "register", "m", str(folder), "--alias", "production", check=False), 4,
                    "protected")
    assert [v.version for v in dvx.Model.list("m", all_versions=True)] == [1]
    run_dvx("model", "register", "m", str(folder), "--alias", "production", "--force")
    assert dvx.Model.version("m@production").version == 2


def test_python_api_from_a_training_script(tmp_path: Path, data_version: str):
    """What a training script does: save a checkpoint, register it with its data and metrics, then a
    serving script loads `NAME@production` by path."""
    script = tmp_path / "train.py"
    script.write_text(
        "import sys, pathlib, dvx\n"
        "out = pathlib.Path(sys.argv[1]); out.mkdir()\n"
        "(out / 'model.pt').write_bytes(b'tensor bytes' * 1000)\n"
        "v = dvx.Model.register('clf', out, datasets='cifar@v1', metrics={'acc': 0.9}, params={'lr': 3e-4},\n"
        "                       framework='pytorch', message='nightly', aliases='production')\n"
        "print(v.ref, v.id)\n")
    python = Path(dvx_executable()).parent / "python"
    proc = subprocess.run([str(python), str(script), str(tmp_path / "ckpt")], capture_output=True, text=True,
                          check=True, cwd=tmp_path)
    ref, version_id = proc.stdout.split()
    assert ref == "clf@v1"
    fetched = dvx.Model.get("clf@production")
    assert fetched.version.id == version_id and fetched.version.inputs == [dvx.version(data_version).id]
    assert (fetched.path / "model.pt").read_bytes() == b"tensor bytes" * 1000
    assert fetched.version.params == {"lr": 3e-4} and fetched.version.framework == "pytorch"
    with pytest.raises(dvx.UsageError):
        dvx.Model.register("clf", [])


_ALIAS_MOVER = """
set -e
for i in 1 2 3 4; do
  dvx model alias "m@v$(( ($1 + i) % 3 + 1 ))" production -m "mover $1 step $i"
done
"""


def test_concurrent_alias_moves_keep_one_history_chain(tmp_path: Path, isolated):
    """8 processes move one alias 4 times each: the compare-and-swap keeps every move in one chain of
    history (each starting where the previous ended) and the alias ends where the last event says."""
    for n in range(3):
        run_dvx("model", "register", "m", str(write_tree(tmp_path / f"v{n}", {"w.bin": f"weights {n}"})))
    env = dict(os.environ, PATH=f"{Path(dvx_executable()).parent}{os.pathsep}{os.environ['PATH']}")
    movers = [subprocess.Popen(["bash", "-c", _ALIAS_MOVER, "-", str(n)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for n in range(8)]
    for proc in movers:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    _, aliases = dvx.Model.log("m")
    (production,) = aliases
    moves = [e for e in production.history]
    previous = None
    for event in moves:
        assert event.from_version == previous
        previous = event.to_version
    assert production.version == previous == dvx.Model.version("m@production").version
    # Moves to the version the alias already held are no-ops; every other one is recorded.
    assert sum(1 for e in moves if e.message) == len(moves)
    assert {e.message.split(" step")[0] for e in moves} <= {f"mover {n}" for n in range(8)}
    assert len(moves) >= 8


def test_partly_changed_checkpoint_stores_only_the_changed_tensors(tmp_path: Path, isolated):
    """A safetensors checkpoint of 16 layers × 1 MiB where 2 layers change (12.5 %): the new version
    stores little more than those 12.5 % (chunks straddling a changed tensor's edges), and `model show`
    says so."""
    layers = checkpoint(16, 1 << 20, seed=1)
    path = tmp_path / "ckpt" / "model.safetensors"
    write_safetensors(path, layers)
    run_dvx("model", "register", "llm", str(path.parent), "-m", "base")
    tuned = dict(layers)
    for name in ("layer05.weight", "layer11.weight"):
        tuned[name] = random.Random(name).randbytes(1 << 20)
    write_safetensors(path, tuned)
    run_dvx("model", "register", "llm", str(path.parent), "-m", "fine-tuned")
    info = json.loads(run_dvx("model", "show", "llm@v2", "--json").stdout)
    share = info["stored_new_bytes"] / info["bytes"]
    assert 0.125 <= share <= 0.17, share
    assert info["new_bytes"] == info["stored_new_bytes"]
    assert "new in this version:" in run_dvx("model", "show", "llm@v2").stdout
    assert dvx.Model.get("llm@v1").path.joinpath("model.safetensors").stat().st_size == path.stat().st_size


def test_push_and_fetch_models_with_aliases_and_annotations(tmp_path: Path, isolated):
    """`dvx push --model` copies model versions with their lineage, aliases, tags and metrics; a fetch
    back into an empty store gives the same ids, and the metrics and aliases are there."""
    folder = write_tree(tmp_path / "m", {"w.bin": os.urandom(100_000)})
    run_dvx("model", "register", "m", str(folder), "--metric", "acc=0.9", "--tag", "candidate", "--alias", "prod")
    (folder / "w.bin").write_bytes(os.urandom(100_000))
    run_dvx("model", "register", "m", str(folder), "--metric", "acc=0.95")
    other = tmp_path / "other-store"
    pushed = json.loads(run_dvx("push", "m@v2", "--model", "--to", str(other), "--json").stdout)
    assert sorted(pushed["versions_copied"]) == ["m@v1", "m@v2"]  # v2 with its parent
    there = dvx.Model.list("m", all_versions=True, store=str(other))
    here = dvx.Model.list("m", all_versions=True)
    assert [(v.ref, v.id, v.metrics, v.labels, v.aliases) for v in there] == \
        [(v.ref, v.id, v.metrics, v.labels, v.aliases) for v in here]
    fresh = tmp_path / "fresh-store"
    run_dvx("fetch", "m", "--model", "--from", str(other), "--store", str(fresh))
    assert dvx.Model.best("m", "acc", store=str(fresh)).version == 2
    assert (dvx.Model.get("m@prod", store=str(fresh)).path / "w.bin").stat().st_size == 100_000
    assert run_dvx("push", "m@v2", "--to", str(other), check=False).returncode == 3  # not a dataset
