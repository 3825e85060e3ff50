"""Transient faults on the wire (503 throttling, connections reset before or after the server handled
a request) are retried, and nothing is lost or duplicated: every cloud backend, through a faulty
proxy in front of its emulator, configured by dvx.toml's per-store `endpoint_url`
(Azure: by its connection string)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

import dvx
from conftest import read_tree, write_tree
from http_proxy import FaultyProxy
from server_azure import azure_endpoint, connection_string_via
from server_gcs import gcs_endpoint
from servers import new_azure_container, new_gcs_bucket, new_s3_bucket, s3_endpoint


def _s3_project(proxy_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict]:
    return f's3://{new_s3_bucket()}/faulty-{uuid.uuid4().hex[:6]}', {"endpoint_url": proxy_url}


def _gcs_project(proxy_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict]:
    return f'gs://{new_gcs_bucket()}/faulty-{uuid.uuid4().hex[:6]}', {"endpoint_url": proxy_url}


def _azure_project(proxy_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict]:
    # adlfs builds https:// account URLs from options, so an http proxy goes in the connection string.
    container = new_azure_container()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string_via(proxy_url))
    return f"az://{container}/faulty-{uuid.uuid4().hex[:6]}", {}


BACKENDS = {
    "s3": (s3_endpoint, _s3_project),
    "gcs": (gcs_endpoint, _gcs_project),
    "azure": (azure_endpoint, _azure_project),
}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_commit_and_get_survive_transient_faults(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every 4th request fails (503, reset before, reset after — in turn); two commits, a tag and a get
    still succeed with exactly two versions and the right bytes."""
    endpoint, project = BACKENDS[backend]
    with FaultyProxy(endpoint()) as proxy:
        url, options = project(proxy.url, monkeypatch)
        work = tmp_path / "proj"
        work.mkdir()
        lines = [f'url = "{url}"'] + [f'{k} = "{v}"' for k, v in options.items()]
        (work / "dvx.toml").write_text("[store]\n" + "\n".join(lines) + "\n")
        monkeypatch.chdir(work)
        monkeypatch.delenv("DVX_STORE")
        files = {"a.txt": "alpha\n" * 5000, "b.bin": os.urandom(3 << 20)}
        src = write_tree(tmp_path / "src", files)
        proxy.fail_every = 4
        for message in ("one", "two"):
            ds = dvx.Dataset.create("flaky")
            ds.sync(src)
            ds.commit(message, tags=["prod"], force_tags=True)
            (src / "a.txt").write_text("changed " + message)
        assert [v.ref for v in dvx.log("flaky")] == ["flaky@v2", "flaky@v1"]
        out = dvx.get("flaky@prod", tmp_path / "out")
        assert read_tree(out)["b.bin"] == (src / "b.bin").read_bytes()
        assert sum(proxy.faults.values()) >= 3, proxy.faults
