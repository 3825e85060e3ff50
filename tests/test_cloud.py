"""Every dvx feature, unchanged, on the cloud backends (each against its real emulator on 127.0.0.1)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import dvx
from conftest import read_tree, write_tree
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
