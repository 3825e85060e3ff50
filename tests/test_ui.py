"""`dvx ui` over real HTTP: every JSON endpoint, downloads, thumbnails, escaping and path safety,
read-only and token rules, the command itself, and the reads a page costs on long histories."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import ui_store
from conftest import dvx_executable

import dvx
from dvx.api import browse
from dvx.api.repo import Repo
from dvx.errors import UsageError
from dvx.refs import parse_ref
from dvx.ui import serve

pytest.importorskip("starlette")


def _env_for(root: Path) -> dict[str, str]:
    return {"DVX_STORE": str(root / "store"), "DVX_STATE_DIR": str(root / "state"),
            "DVX_CACHE_DIR": str(root / "cache"), "DVX_DATA_DIR": str(root / "data")}


@pytest.fixture(scope="module")
def fixture_store(tmp_path_factory) -> dict:
    """The UI fixture store (tests/ui_store.py), built once for the module, and a server on it."""
    root = tmp_path_factory.mktemp("ui")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in _env_for(root).items():
            patch.setenv(key, value)
        refs = ui_store.build(root / "work")
        server = serve(store=str(root / "store"), port=0, background=True)
        try:
            yield {"root": root, "refs": refs, "server": server, "base": server.url.rstrip("/")}
        finally:
            server.stop()


@pytest.fixture(autouse=True)
def _fixture_env(fixture_store, monkeypatch):
    for key, value in _env_for(fixture_store["root"]).items():
        monkeypatch.setenv(key, value)


def fetch(base: str, path: str, params: dict | None = None, headers: dict | None = None,
          method: str = "GET") -> tuple[int, dict, bytes]:
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get_json(fixture_store, endpoint: str, expect: int = 200, **params):
    status, headers, body = fetch(fixture_store["base"], endpoint, params)
    assert status == expect, body
    assert headers["content-type"].startswith("application/json")
    return json.loads(body)


# -- endpoints ------------------------------------------------------------------------------------
def test_info_names_the_store(fixture_store):
    info = get_json(fixture_store, "/api/info")
    assert info["store"] == str(fixture_store["root"] / "store") and info["read_only"] is True


def test_names_lists_datasets_with_latest_tags_and_sizes(fixture_store):
    page = get_json(fixture_store, "/api/names", kind="dataset")
    assert page["total"] == 2 and [r["name"] for r in page["items"]] == ["pets", "vision/pets-small"]
    pets = page["items"][0]
    assert pets["latest"] == "pets@v2" and pets["versions"] == 2
    assert pets["tags"] == {"baseline": 1, "reviewed": 2}
    assert pets["files"] == 7 and pets["bytes"] == dvx.version("pets@v2").bytes
    assert 0 < pets["stored_bytes"] <= pets["bytes"] and pets["created"]


def test_names_filter_and_paging(fixture_store):
    assert [r["name"] for r in get_json(fixture_store, "/api/names", q="SMALL")["items"]] == ["vision/pets-small"]
    assert get_json(fixture_store, "/api/names", q="nothing-like-it")["items"] == []
    second = get_json(fixture_store, "/api/names", offset=1, limit=1)
    assert second["total"] == 2 and [r["name"] for r in second["items"]] == ["vision/pets-small"]
    assert get_json(fixture_store, "/api/names", 400, limit=0)["type"] == "UsageError"
    assert get_json(fixture_store, "/api/names", 400, offset="x")["error"].startswith("query parameter 'offset'")


def test_models_list_shows_aliases_and_metrics(fixture_store):
    page = get_json(fixture_store, "/api/names", kind="model")
    (model,) = page["items"]
    assert model["name"] == "pet-classifier" and model["tags"] == {"production": 2, "staging": 3}
    assert model["metrics"] == {"accuracy": 0.86, "loss": 0.31}


def test_history_is_newest_first_with_sizes_and_tags(fixture_store):
    history = get_json(fixture_store, "/api/history", name="pets")
    assert history["total"] == 2 and [v["ref"] for v in history["items"]] == ["pets@v2", "pets@v1"]
    v2 = history["items"][0]
    assert v2["message"] == ui_store.HOSTILE_MESSAGE and v2["parents"] == ["pets@v1"] and v2["tags"] == ["reviewed"]
    assert v2["files"] == 7 and v2["new_bytes"] > 0 and v2["author"]
    assert get_json(fixture_store, "/api/history", name="pets", offset=1, limit=1)["items"][0]["ref"] == "pets@v1"
    assert get_json(fixture_store, "/api/history", 404, name="no-such")["type"] == "NotFoundError"
    assert get_json(fixture_store, "/api/history", 400, name="../etc")["type"] == "UsageError"
    assert get_json(fixture_store, "/api/history", 400)["error"] == "missing query parameter 'name'"


def test_model_history_has_metrics_and_sorts_by_them(fixture_store):
    newest = get_json(fixture_store, "/api/history", name="pet-classifier", kind="model")
    assert [v["version"] for v in newest["items"]] == [3, 2, 1]
    assert newest["items"][1]["tags"] == ["production"] and newest["items"][1]["metrics"] == {"accuracy": 0.88,
                                                                                             "loss": 0.35}
    best = get_json(fixture_store, "/api/history", name="pet-classifier", kind="model", sort="accuracy:desc")
    assert [v["metrics"]["accuracy"] for v in best["items"]] == [0.88, 0.86, 0.81]
    assert best["items"][0] | {"created": None} == newest["items"][1] | {"created": None}  # the same row shape
    lowest_loss = get_json(fixture_store, "/api/history", name="pet-classifier", kind="model", sort="loss")
    assert [v["version"] for v in lowest_loss["items"]] == [3, 2, 1]
    assert best["items"][0]["inputs"] == ["pets@v2"] and best["total"] == 3
    paged = get_json(fixture_store, "/api/history", name="pet-classifier", kind="model", sort="accuracy", limit=1,
                     offset=2)
    assert [v["version"] for v in paged["items"]] == [2]
    assert get_json(fixture_store, "/api/history", 400, name="pets", sort="accuracy")["type"] == "UsageError"


def test_alias_history_lists_every_move(fixture_store):
    aliases = {a["alias"]: a for a in get_json(fixture_store, "/api/aliases", name="pet-classifier")}
    production = aliases["production"]
    assert production["version"] == 2
    assert [(e["action"], e["from_version"], e["to_version"], e["message"]) for e in production["history"]] == [
        ("set", None, 1, "first release"), ("move", 1, 2, "better accuracy")]
    assert aliases["staging"]["version"] == 3


def test_version_shows_totals_and_parents(fixture_store):
    info = get_json(fixture_store, "/api/version", ref="pets@reviewed")
    assert info["ref"] == "pets@v2" and info["parents"] == ["pets@v1"] and info["stored_bytes"] > 0
    model = get_json(fixture_store, "/api/version", ref="pet-classifier@production", kind="model")
    assert model["version"] == 2 and model["metrics"]["accuracy"] == 0.88
    assert get_json(fixture_store, "/api/version", 404, ref="pets@v9")["type"] == "NotFoundError"
    assert get_json(fixture_store, "/api/version", 400, ref="pets@v2", kind="table")["type"] == "UsageError"


def test_tree_lists_folders_then_files(fixture_store):
    tree = get_json(fixture_store, "/api/tree", ref="pets@v2")
    assert [(e["type"], e["name"]) for e in tree["entries"]] == [
        ("folder", "images"), ("folder", "train"), ("file", ui_store.HOSTILE), ("file", "README.md")]
    assert tree["entries"][0]["files"] == 3 and tree["folders"] == 2 and tree["files"] == 2
    images = get_json(fixture_store, "/api/tree", ref="pets@v2", path="images")
    assert [e["path"] for e in images["entries"]] == ["images/bird.png", "images/cat.png", "images/dog.png"]
    window = get_json(fixture_store, "/api/tree", ref="pets@v2", path="images/", offset=1, limit=1)
    assert window["total"] == 3 and [e["name"] for e in window["entries"]] == ["cat.png"]
    assert get_json(fixture_store, "/api/tree", 404, ref="pets@v2", path="nope")["type"] == "NotFoundError"


def test_previews_are_tables_text_images_or_a_reason(fixture_store):
    csv = get_json(fixture_store, "/api/preview", ref="pets@v2", path="train/labels.csv")
    assert csv["type"] == "table" and csv["columns"] == ["id", "name", "value"]
    assert len(csv["rows"]) == browse.PREVIEW_ROWS and csv["rows"][5] == ["5", "NAME5", "7.5"] and csv["truncated"]
    parquet = get_json(fixture_store, "/api/preview", ref="pets@v2", path="train/features.parquet")
    assert parquet["type"] == "table" and parquet["total_rows"] == 220 and parquet["rows"][1] == [1, "class1", 0.1]
    text = get_json(fixture_store, "/api/preview", ref="pets@v2", path="README.md")
    assert text["type"] == "text" and "<b>dataset</b>" in text["text"] and not text["truncated"]
    image = get_json(fixture_store, "/api/preview", ref="pets@v2", path="images/cat.png")
    assert image["type"] == "image"
    binary = get_json(fixture_store, "/api/preview", ref="pet-classifier@v1", path="model.bin", kind="model")
    assert binary["type"] in ("none", "text")  # random bytes: binary unless they happen to hold no NUL
    hostile = get_json(fixture_store, "/api/preview", ref="pets@v2", path=ui_store.HOSTILE)
    assert hostile["path"] == ui_store.HOSTILE and hostile["rows"] == [["1", "2"]]


def test_download_streams_the_exact_bytes_as_an_attachment(fixture_store):
    status, headers, body = fetch(fixture_store["base"], "/api/raw", {"ref": "pets@v2", "path": "train/labels.csv"})
    assert status == 200 and body == dvx.open("pets@v2/train/labels.csv").read()
    assert headers["content-type"] == "application/octet-stream" and headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"] == "attachment; filename*=UTF-8''labels.csv"
    status, headers, body = fetch(fixture_store["base"], "/api/raw", {"ref": "pets@v2", "path": ui_store.HOSTILE})
    assert body == b"a,b\n1,2\n"
    assert headers["content-disposition"] == "attachment; filename*=UTF-8''" + urllib.parse.quote(ui_store.HOSTILE, safe="")


def test_thumbnail_is_a_small_png(fixture_store):
    from PIL import Image

    status, headers, body = fetch(fixture_store["base"], "/api/thumbnail",
                                  {"ref": "pets@v2", "path": "images/bird.png", "size": 32})
    assert status == 200 and headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(body)) as image:
        assert image.size == (32, 32)
    status, _, body = fetch(fixture_store["base"], "/api/thumbnail", {"ref": "pets@v2", "path": "README.md"})
    assert status == 400 and b"has no thumbnail" in body


def test_diff_counts_files_and_rows(fixture_store):
    diff = get_json(fixture_store, "/api/diff", a="pets@v1", b="pets@v2")
    assert diff["total"] == 4
    assert {k: diff["summary"][k] for k in ("added", "removed", "modified")} == {"added": 1, "removed": 1, "modified": 2}
    changes = {c["path"]: c for c in diff["items"]}
    assert changes["images/bird.png"]["change"] == "added" and changes["docs/notes.txt"]["change"] == "removed"
    assert changes["train/labels.csv"]["table"] and changes["train/features.parquet"]["table"]
    rows = get_json(fixture_store, "/api/diff/rows", a="pets@v1", b="pets@v2", path="train/labels.csv")
    assert (rows["rows_a"], rows["rows_b"], rows["added"], rows["removed"]) == (120, 130, 11, 1)
    parquet = get_json(fixture_store, "/api/diff/rows", a="pets@v1", b="pets@v2", path="train/features.parquet")
    assert (parquet["rows_a"], parquet["rows_b"], parquet["added"], parquet["removed"]) == (200, 220, 20, 0)
    assert get_json(fixture_store, "/api/diff/rows", 400, a="pets@v1", b="pets@v2", path="README.md")["type"] == "UsageError"
    page = get_json(fixture_store, "/api/diff", a="pets@v1", b="pets@v2", offset=3, limit=2)
    assert page["total"] == 4 and len(page["items"]) == 1


def test_lineage_places_upstream_left_and_downstream_right(fixture_store):
    graph = get_json(fixture_store, "/api/lineage", ref="pets@v2")
    columns = {n["ref"]: n["column"] for n in graph["nodes"]}
    assert columns["pets@v2"] == 0 and columns["pets@v1"] == -1
    assert columns["vision/pets-small@v1"] == 1 and columns["pet-classifier@v1"] == 1
    assert {(e["from"], e["to"], e["kind"]) for e in graph["edges"]} >= {
        (f"model:{dvx.Model.version('pet-classifier@v1').id}", graph["focus"], "input")}
    positions = [(n["column"], n["row"]) for n in graph["nodes"]]
    assert len(positions) == len(set(positions))


def test_unknown_api_paths_are_json_404s(fixture_store):
    assert get_json(fixture_store, "/api/nothing", 404)["type"] == "NotFoundError"


# -- safety ---------------------------------------------------------------------------------------
def test_pages_are_one_static_shell_that_holds_no_store_data(fixture_store):
    for page in ("/datasets", "/datasets/pets/-/v2/file/" + urllib.parse.quote(ui_store.HOSTILE), "/models/x<y>"):
        status, headers, body = fetch(fixture_store["base"], page)
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"onerror" not in body and b"pets" not in body
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
    status, headers, _ = fetch(fixture_store["base"], "/")
    assert status == 307 and headers["location"] == "/datasets"


@pytest.mark.parametrize("path", ["../../../../etc/passwd", "/etc/passwd", "train/../../x", "a\x00b", "images/../README.md"])
def test_paths_cannot_leave_the_version(fixture_store, path):
    status, _, body = fetch(fixture_store["base"], "/api/raw", {"ref": "pets@v2", "path": path})
    assert status in (400, 404), body
    assert b"root:" not in body


@pytest.mark.parametrize("asset", ["..%2Fserver.py", "%2e%2e/server.py", "../server.py", "index.html", "app.js.map"])
def test_static_serves_only_its_own_assets(fixture_store, asset):
    conn = http.client.HTTPConnection(fixture_store["server"].host, fixture_store["server"].port, timeout=10)
    conn.request("GET", "/static/" + asset)
    response = conn.getresponse()
    body = response.read()
    assert b"import " not in body and b"def " not in body
    assert response.status == 404 or response.getheader("content-type").startswith("text/html")


def test_refs_cannot_name_other_stores_or_files(fixture_store):
    for ref in ("../pets@v1", "/etc/passwd@v1", "pets@v1/../../x", "file:///etc@v1"):
        status, _, body = fetch(fixture_store["base"], "/api/tree", {"ref": ref})
        assert status == 400, (ref, body)


def test_only_reads_are_allowed(fixture_store):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, body = fetch(fixture_store["base"], "/api/names", method=method)
        assert status == 405 and headers["allow"] == "GET, HEAD" and b"read-only" in body


def test_requests_for_other_host_names_are_refused(fixture_store):
    """A page on another site that rebinds its DNS name to 127.0.0.1 sends its own Host: refused."""
    status, _, _ = fetch(fixture_store["base"], "/api/names", headers={"Host": "attacker.example"})
    assert status == 400
    assert fetch(fixture_store["base"], "/api/info", headers={"Host": "localhost"})[0] == 200


def test_a_host_other_than_localhost_needs_the_printed_token(fixture_store):
    server = serve(store=str(fixture_store["root"] / "store"), host="127.0.0.2", port=0, background=True)
    try:
        base = f"http://127.0.0.2:{server.port}"
        assert server.token and server.url == f"{base}/?token={server.token}"
        status, _, body = fetch(base, "/api/info")
        assert status == 401 and b"token" in body
        assert fetch(base, "/datasets")[0] == 401
        assert fetch(base, "/api/info", {"token": "wrong"})[0] == 401
        status, headers, _ = fetch(base, "/datasets", {"token": server.token, "q": "pets"})
        assert status == 303 and headers["location"] == "/datasets?q=pets"
        cookie = headers["set-cookie"].split(";")[0]
        assert "httponly" in headers["set-cookie"].lower() and "samesite=strict" in headers["set-cookie"].lower()
        assert fetch(base, "/api/info", headers={"Cookie": cookie})[0] == 200
        assert fetch(base, "/api/info", headers={"Authorization": f"Bearer {server.token}"})[0] == 200
        assert fetch(base, "/api/info", headers={"Cookie": "dvx_ui_token=nope"})[0] == 401
    finally:
        server.stop()


def test_previews_stay_bounded_on_large_files(tmp_path, fixture_store):
    big = tmp_path / "big"
    big.mkdir()
    (big / "log.txt").write_text("line of text\n" * 200_000)  # 2.6 MB
    (big / "table.csv").write_text("a,b\n" + "1,2\n" * 500_000)
    ds = dvx.Dataset.create("big-files")
    ds.add(big)
    ds.commit("big")
    text = get_json(fixture_store, "/api/preview", ref="big-files@v1", path="log.txt")
    assert text["truncated"] and len(text["text"].encode()) == browse.PREVIEW_TEXT_BYTES
    table = get_json(fixture_store, "/api/preview", ref="big-files@v1", path="table.csv")
    assert len(table["rows"]) == browse.PREVIEW_ROWS and table["truncated"]
    status, headers, body = fetch(fixture_store["base"], "/api/raw", {"ref": "big-files@v1", "path": "table.csv"})
    assert status == 200 and len(body) == int(headers["content-length"]) == (big / "table.csv").stat().st_size


# -- the command ----------------------------------------------------------------------------------
def test_dvx_ui_command_prints_its_address_and_serves(fixture_store):
    process = subprocess.Popen([dvx_executable(), "ui", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/)$", line.strip())
        assert match, line
        with urllib.request.urlopen(match.group(1) + "api/names?kind=model", timeout=10) as response:
            assert json.loads(response.read())["items"][0]["name"] == "pet-classifier"
    finally:
        process.terminate()
        process.wait(10)


def test_dvx_ui_refuses_a_busy_port(fixture_store):
    result = subprocess.run([dvx_executable(), "ui", "--port", str(fixture_store["server"].port)], check=False,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("dvx: error: cannot listen on 127.0.0.1:")


# -- cost on long histories -----------------------------------------------------------------------
def test_a_history_page_reads_only_its_versions(tmp_path, store_reads):
    folder = tmp_path / "data"
    folder.mkdir()
    for number in range(1, 121):
        (folder / "counter.txt").write_text(str(number))
        ds = dvx.Dataset.create("long")
        ds.sync(folder)
        ds.commit(f"change {number}")
    store_reads.clear()
    page = browse.history_page(Repo(), "long", offset=50, limit=20)
    assert [v["version"] for v in page["items"]] == list(range(70, 50, -1)) and page["total"] == 120
    version_reads = [k for k, _ in store_reads if "/versions/" in k]
    assert len(version_reads) == 20, version_reads


def test_a_damaged_chunk_ends_the_download_instead_of_sending_wrong_bytes(tmp_path, fixture_store):
    from dvx.chunks.pack import pack_key

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "blob.bin").write_bytes(os.urandom(3 << 20))  # several chunks in a pack of its own
    ds = dvx.Dataset.create("damaged")
    ds.add(tmp_path / "d")
    ds.commit("to be damaged")
    repo = Repo()
    (entry,) = repo.read_manifest(repo.refs().resolve(parse_ref("damaged@v1")).manifest).files
    chunk = entry.chunks[len(entry.chunks) // 2]
    with open(fixture_store["root"] / "store" / pack_key(chunk.pack), "r+b") as pack:
        pack.seek(chunk.offset + chunk.length // 2)
        byte = pack.read(1)
        pack.seek(-1, os.SEEK_CUR)
        pack.write(bytes([byte[0] ^ 0xFF]))
    conn = http.client.HTTPConnection(fixture_store["server"].host, fixture_store["server"].port, timeout=30)
    conn.request("GET", "/api/raw?" + urllib.parse.urlencode({"ref": "damaged@v1", "path": "blob.bin"}))
    response = conn.getresponse()
    assert response.status == 200  # the headers went out before the damage was met
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert len(cut.value.partial) < entry.size


def test_without_the_ui_extra_the_error_says_what_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "dvx.ui.server", raising=False)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if `pip install dvx` without [ui]
    with pytest.raises(UsageError, match=r'needs the ui extra \(uvicorn is missing\): pip install "dvx\[ui\]"'):
        serve(port=0, background=True)
