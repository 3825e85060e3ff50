"""A small store with something of everything the web UI shows: two datasets (one derived from the
other) with CSV, Parquet, images, text and a hostile file name; a model trained on them with metrics
and an alias moved twice. Used by tests/test_ui.py, tests/test_ui_browser.py and docs screenshots."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import dvx

HOSTILE = "<img src=x onerror=alert(1)>.csv"
HOSTILE_MESSAGE = "<script>alert('msg')</script> & friends"


def _png(color: tuple[int, int, int], size: tuple[int, int] = (64, 40)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def _parquet(rows: int, offset: int = 0) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": list(range(offset, offset + rows)), "label": [f"class{i % 3}" for i in range(rows)],
                      "score": [i / 10 for i in range(rows)]})
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def _write(root: Path, files: dict[str, bytes | str]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)


def build(work: Path, store: str | None = None) -> dict[str, str]:
    """Fill `store` (default: DVX_STORE) and return the refs the tests look at."""
    work.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{i},name{i},{i * 1.5}\n" for i in range(120))
    v1 = {
        "train/labels.csv": "id,name,value\n" + rows,
        "train/features.parquet": _parquet(200),
        "images/cat.png": _png((200, 120, 40)),
        "images/dog.png": _png((40, 120, 200)),
        "README.md": "# Pets\n\nA small <b>dataset</b> for the UI tests.\n",
        "docs/notes.txt": "plain text notes\n" * 20,
        HOSTILE: "a,b\n1,2\n",
    }
    folder = work / "pets"
    _write(folder, v1)
    ds = dvx.Dataset.create("pets", message="first cut", store=store)
    ds.add(folder)
    ds.commit("first cut", tags=["baseline"])

    changed = dict(v1)
    changed["train/labels.csv"] = "id,name,value\n" + rows.replace("5,name5,7.5\n", "5,NAME5,7.5\n") + \
        "".join(f"{i},name{i},{i * 1.5}\n" for i in range(120, 130))
    changed["train/features.parquet"] = _parquet(220)
    changed["images/bird.png"] = _png((20, 160, 60), (80, 80))
    del changed["docs/notes.txt"]
    shutil.rmtree(folder)
    _write(folder, changed)
    ds = dvx.Dataset.create("pets", message=HOSTILE_MESSAGE, store=store)
    ds.sync(folder)
    ds.commit(HOSTILE_MESSAGE, tags=["reviewed"])

    small = work / "pets-small"
    _write(small, {"train/labels.csv": "id,name,value\n" + rows[:200]})
    derived = dvx.Dataset.create("vision/pets-small", parents=["pets@v2"], message="a sample", store=store)
    derived.sync(small)
    derived.commit("a sample of pets@v2")

    weights = work / "weights"
    for number, (accuracy, loss) in enumerate([(0.81, 0.52), (0.88, 0.35), (0.86, 0.31)], start=1):
        _write(weights, {"model.bin": os.urandom(2048), "config.json": f'{{"epochs": {number * 10}}}'})
        dvx.Model.register("pet-classifier", weights, datasets=["pets@v2"], metrics={"accuracy": accuracy, "loss": loss},
                           params={"lr": 0.001 * number}, message=f"run {number}", store=store)
    dvx.Model.alias("pet-classifier@v1", "production", message="first release", store=store)
    dvx.Model.alias("pet-classifier@v2", "production", message="better accuracy", store=store)
    dvx.Model.alias("pet-classifier@v3", "staging", store=store)
    return {"dataset": "pets", "v1": "pets@v1", "v2": "pets@v2", "derived": "vision/pets-small@v1",
            "model": "pet-classifier"}
