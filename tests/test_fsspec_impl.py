"""The read-only dvx:// filesystem: fsspec's own reusable test suite, every supported operation, URL
resolution, pandas and pyarrow round trips, and refused writes."""

from __future__ import annotations

import os
import pickle
import posixpath
import random
import subprocess
import sys
from hashlib import md5
from pathlib import Path

import fsspec
import pytest
from fsspec.tests.abstract import AbstractFixtures, AbstractGetTests

import dvx
from conftest import run_dvx, write_tree
from dvx.fsspec_impl import DvxFileSystem, DvxInvalidPathError, DvxNotFoundError


@pytest.fixture(autouse=True)
def fresh_filesystems():
    """fsspec keeps filesystem instances for the whole process: start every test without them."""
    DvxFileSystem.clear_instance_cache()
    yield
    DvxFileSystem.clear_instance_cache()


def rand(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def commit_tree(name: str, files: dict[str, bytes | str], folder: Path, to: str = "", message: str = "") -> dvx.Version:
    write_tree(folder, files)
    ds = dvx.Dataset.create(name)
    ds.add(folder, to=to)
    return ds.commit(message or "test").version


# -- fsspec's reusable suite --------------------------------------------------------------------------------
# Of fsspec.tests.abstract, only AbstractGetTests reads from the filesystem under test; the copy, put, pipe,
# mv and open classes write to it, so they are not included. The scenario fixtures build each source tree
# as a dvx version (under `source/` of ABSTRACT@v1) instead of writing it through the filesystem.

ABSTRACT = "fsspec/abstract"


class TestDvxAbstractGet(AbstractFixtures, AbstractGetTests):
    @pytest.fixture
    def fs(self):
        return fsspec.filesystem("dvx")

    @pytest.fixture
    def fs_path(self):
        return f"dvx://{ABSTRACT}@v1"

    @pytest.fixture
    def fs_join(self):
        return posixpath.join

    @pytest.fixture
    def supports_empty_directories(self):
        return False  # a version holds files; folders exist through the files under them

    def _version(self, tmp_path, fs_path, files: dict[str, bytes | str]) -> str:
        commit_tree(ABSTRACT, files, tmp_path / "scenario", to="source")
        return posixpath.join(fs_path, "source")

    @pytest.fixture
    def fs_bulk_operations_scenario_0(self, tmp_path, fs_path):
        return self._version(tmp_path, fs_path, {
            "file1": b"", "file2": b"", "subdir/subfile1": b"", "subdir/subfile2": b"",
            "subdir/nesteddir/nestedfile": b""})

    @pytest.fixture
    def fs_glob_edge_cases_files(self, tmp_path, fs_path):
        files = {"file1": b"", "file2": b""}
        for i in range(2):
            files.update({f"subdir{i}/subfile1": b"", f"subdir{i}/subfile2": b"",
                          f"subdir{i}/nesteddir/nestedfile": b""})
        return self._version(tmp_path, fs_path, files)

    @pytest.fixture
    def fs_dir_and_file_with_same_name_prefix(self, tmp_path, fs_path):
        return self._version(tmp_path, fs_path, {"subdir.txt": b"", "subdir/subfile.txt": b""})

    @pytest.fixture
    def fs_10_files_with_hashed_names(self, tmp_path, fs_path):
        return self._version(tmp_path, fs_path,
                             {f"{md5(str(i).encode()).hexdigest()}.txt": str(i) for i in range(10)})

    def test_get_directory_recursive(self, fs, fs_join, fs_path, local_fs, local_join, local_target, tmp_path):
        """fsspec's version creates src/file with fs.mkdir and fs.touch; here it is committed instead, and
        the same assertions run."""
        commit_tree(ABSTRACT, {"src/file": b""}, tmp_path / "scenario")
        src = fs_join(fs_path, "src")
        target = local_target

        assert not local_fs.exists(target)
        for loop in range(2):
            fs.get(src, target, recursive=True)
            assert local_fs.isdir(target)
            if loop == 0:
                assert local_fs.isfile(local_join(target, "file"))
                assert not local_fs.exists(local_join(target, "src"))
            else:
                assert local_fs.isfile(local_join(target, "file"))
                assert local_fs.isdir(local_join(target, "src"))
                assert local_fs.isfile(local_join(target, "src", "file"))
        local_fs.rm(target, recursive=True)

        assert not local_fs.exists(target)
        for loop in range(2):
            fs.get(src + "/", target, recursive=True)
            assert local_fs.isdir(target)
            assert local_fs.isfile(local_join(target, "file"))
            assert not local_fs.exists(local_join(target, "src"))


# -- registration and import cost ------------------------------------------------------------------------------

def test_registered_through_the_entry_point():
    """`pip install dvx` is enough: fsspec finds the class through the fsspec.specs entry point."""
    assert fsspec.get_filesystem_class("dvx") is DvxFileSystem
    assert isinstance(fsspec.filesystem("dvx"), DvxFileSystem)


def test_import_dvx_does_not_import_fsspec():
    code = ("import sys, dvx, dvx.api, dvx.api.reading; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fsspec', 'dvx.fsspec_impl')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- operations ------------------------------------------------------------------------------------------------

@pytest.fixture
def cifar(tmp_path) -> dict[str, bytes]:
    """vision/cifar@v1 and @v2 (v2 changes labels.csv and adds a file); returns v2's content."""
    v1 = {"labels.csv": "id,label\n1,cat\n", "train/a.png": rand(1, 5000), "train/b.png": rand(2, 300_000),
          "test/c.png": rand(3, 10)}
    commit_tree("vision/cifar", v1, tmp_path / "v1")
    v2 = {**v1, "labels.csv": "id,label\n1,cat\n2,dog\n", "train/d.png": rand(4, 70_000)}
    write_tree(tmp_path / "v2", v2)
    ds = dvx.Dataset.create("vision/cifar")
    ds.sync(tmp_path / "v2")
    assert ds.commit("v2").version.ref == "vision/cifar@v2"
    return {k: (v.encode() if isinstance(v, str) else v) for k, v in v2.items()}


def test_ls_info_find_glob(cifar):
    fs = fsspec.filesystem("dvx")
    assert fs.ls("dvx://vision/cifar@v2", detail=False) == [
        "vision/cifar@v2/labels.csv", "vision/cifar@v2/test", "vision/cifar@v2/train"]
    rows = {r["name"]: r for r in fs.ls("vision/cifar@v2/train")}
    assert sorted(rows) == ["vision/cifar@v2/train/a.png", "vision/cifar@v2/train/b.png",
                            "vision/cifar@v2/train/d.png"]
    b = rows["vision/cifar@v2/train/b.png"]
    assert (b["type"], b["size"], b["version"]) == ("file", 300_000, "vision/cifar@v2")
    assert b["digest"] == dvx.files("vision/cifar@v2", glob="train/b.png")[0].digest
    assert fs.ls("vision/cifar@v2/train/a.png", detail=False) == ["vision/cifar@v2/train/a.png"]

    folder = fs.info("vision/cifar@v2/train/")
    assert (folder["type"], folder["name"]) == ("directory", "vision/cifar@v2/train")
    root = fs.info("dvx://vision/cifar@v1")
    assert root["type"] == "directory" and root["version_id"] == dvx.version("vision/cifar@v1").id

    assert fs.find("vision/cifar@v2/train") == sorted(rows)
    assert fs.find("vision/cifar@v2", maxdepth=1) == ["vision/cifar@v2/labels.csv"]
    assert "vision/cifar@v2/test" in fs.find("vision/cifar@v2", withdirs=True)
    assert set(fs.find("vision/cifar@v2", detail=True)) == {f"vision/cifar@v2/{p}" for p in cifar}
    assert fs.glob("vision/cifar@v2/train/*.png") == sorted(rows)
    assert fs.glob("dvx://vision/cifar@v2/**/c.png") == ["vision/cifar@v2/test/c.png"]
    assert fs.glob("vision/cifar@v1/train/d*") == []
    assert fs.du("vision/cifar@v2") == sum(len(v) for v in cifar.values())


def test_exists_isdir_isfile_size(cifar):
    fs = fsspec.filesystem("dvx")
    assert fs.exists("vision/cifar@v2/train/d.png") and not fs.exists("vision/cifar@v1/train/d.png")
    assert fs.isdir("vision/cifar@v2/train") and not fs.isfile("vision/cifar@v2/train")
    assert fs.isfile("vision/cifar@v2/labels.csv") and not fs.isdir("vision/cifar@v2/labels.csv")
    assert fs.size("vision/cifar@v2/train/b.png") == 300_000
    assert fs.sizes(["vision/cifar@v2/labels.csv", "vision/cifar@v1/labels.csv"]) == [
        len(cifar["labels.csv"]), len("id,label\n1,cat\n")]
    assert fs.exists("")
    for missing in ("vision/cifar@v9/labels.csv", "vision/nope@v1/x", "nope/x", "vision/cifar@v2/nope",
                    "vision/cifar@/x", "vision/cifar@v2/a/../b"):
        assert not fs.exists(missing), missing
        assert not fs.isdir(missing) and not fs.isfile(missing)
    with pytest.raises(FileNotFoundError, match="v9"):
        fs.info("vision/cifar@v9/labels.csv")
    with pytest.raises(dvx.NotFoundError):  # also a dvx error, with dvx's message
        fs.info("vision/cifar@v2/nope")
    with pytest.raises(DvxInvalidPathError):
        fs.info("vision/cifar@v2/a//b")


def test_cat_file_ranges_and_open_seek(cifar):
    fs = fsspec.filesystem("dvx")
    data = cifar["train/b.png"]
    path = "vision/cifar@v2/train/b.png"
    assert fs.cat_file(path) == data
    assert fs.cat_file(path, start=1000, end=2000) == data[1000:2000]
    assert fs.cat_file(path, start=-100) == data[-100:]
    assert fs.cat_file(path, start=10, end=-10) == data[10:-10]
    assert fs.cat_file(path, start=299_990, end=400_000) == data[299_990:]
    assert fs.cat_file(path, start=5, end=5) == b""
    assert fs.cat_ranges([path, path], [0, 250_000], [10, 250_100]) == [data[:10], data[250_000:250_100]]
    assert fs.cat("vision/cifar@v2/labels.csv") == cifar["labels.csv"]
    assert fs.head(path, 50) == data[:50] and fs.tail(path, 50) == data[-50:]
    with fs.open(path) as f:
        assert f.size == 300_000
        assert f.read(10) == data[:10]
        f.seek(150_000)
        assert f.read(70_000) == data[150_000:220_000]
        f.seek(-5, 2)
        assert f.read() == data[-5:]
        f.seek(3)
        assert f.tell() == 3 and f.read(4) == data[3:7]
        assert f.info()["version"] == "vision/cifar@v2"
    with fs.open("vision/cifar@v2/labels.csv", "r") as f:
        assert f.readlines() == ["id,label\n", "1,cat\n", "2,dog\n"]
    with fsspec.open("dvx://vision/cifar@v1/labels.csv", "rt") as f:
        assert f.read() == "id,label\n1,cat\n"
    with pytest.raises(IsADirectoryError):
        fs.open("vision/cifar@v2/train")
    with pytest.raises(FileNotFoundError):
        fs.open("vision/cifar@v2/train/zzz.png")


def test_get_to_local(cifar, tmp_path):
    fs = fsspec.filesystem("dvx")
    fs.get("vision/cifar@v2/train/b.png", str(tmp_path / "b.png"))
    assert (tmp_path / "b.png").read_bytes() == cifar["train/b.png"]
    fs.get("dvx://vision/cifar@v2/", str(tmp_path / "all"), recursive=True)
    got = {p.relative_to(tmp_path / "all").as_posix(): p.read_bytes()
           for p in (tmp_path / "all").rglob("*") if p.is_file()}
    assert got == cifar


def test_bare_names_resolve_once_per_instance(cifar, tmp_path):
    """NAME without '@' is the longest existing name that prefixes the path, resolved to the latest version
    once per filesystem instance; info() says which version that is. NAME@vN never changes meaning."""
    commit_tree("vision", {"cifar/labels.csv": "the other dataset"}, tmp_path / "other")
    fs = fsspec.filesystem("dvx")
    info = fs.info("vision/cifar/labels.csv")
    assert (info["version"], info["version_id"]) == ("vision/cifar@v2", dvx.version("vision/cifar@v2").id)
    assert fs.cat("dvx://vision/cifar/labels.csv") == cifar["labels.csv"]
    assert fs.cat("vision/cifar@v1/labels.csv") == b"id,label\n1,cat\n"
    assert fs.ls("vision/cifar", detail=False)[0] == "vision/cifar/labels.csv"
    assert fs.pin("vision/cifar/train/a.png") == "vision/cifar@v2/train/a.png"
    assert fs.cat("vision@v1/cifar/labels.csv") == b"the other dataset"

    commit_tree("vision/cifar", {"labels.csv": "v3"}, tmp_path / "v3")
    assert fs.info("vision/cifar/labels.csv")["version"] == "vision/cifar@v2"  # same instance: same version
    assert fsspec.filesystem("dvx") is fs  # fsspec hands out the same instance...
    assert fsspec.filesystem("dvx", skip_instance_cache=True).cat("vision/cifar/labels.csv") == b"v3"
    fs.invalidate_cache()  # ...until told to look again
    assert fs.info("vision/cifar/labels.csv")["version"] == "vision/cifar@v3"
    assert fs.cat("vision/cifar@v2/labels.csv") == cifar["labels.csv"]

    commit_tree("mnist", {"x.txt": "new name"}, tmp_path / "new")
    assert fs.cat("mnist/x.txt") == b"new name"  # no known name fits: it lists the names again


def test_tags_and_id_prefixes(cifar):
    dvx.tag("vision/cifar@v1", "production")
    fs = fsspec.filesystem("dvx")
    v1 = dvx.version("vision/cifar@v1")
    assert fs.cat("vision/cifar@production/labels.csv") == b"id,label\n1,cat\n"
    assert fs.info(f"vision/cifar@{v1.short_id}/labels.csv")["version"] == "vision/cifar@v1"
    assert fs.info("vision/cifar@latest")["version"] == "vision/cifar@v2"


def test_root_lists_names(cifar, tmp_path):
    commit_tree("mnist", {"a": "1"}, tmp_path / "mnist")
    fs = fsspec.filesystem("dvx")
    assert fs.ls("", detail=False) == ["mnist", "vision/cifar"]
    assert fs.ls("dvx://", detail=True)[0]["type"] == "directory"


def test_pinned_version_inside_a_project(cifar, tmp_path, monkeypatch):
    """Inside a project, a bare NAME means the version the project pins, as everywhere in dvx."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    dvx.init(".")
    dvx.pin("vision/cifar@v1")
    fs = fsspec.filesystem("dvx")
    assert fs.info("vision/cifar/labels.csv")["version"] == "vision/cifar@v1"
    assert fs.cat("vision/cifar@latest/labels.csv") == cifar["labels.csv"]


def test_explicit_store_and_instances_per_store(cifar, tmp_path, isolated, monkeypatch):
    """store= picks another store; with no store= the filesystem follows DVX_STORE / the project, so a
    changed environment doesn't reuse a filesystem bound to the old store."""
    default = fsspec.filesystem("dvx")
    assert default.exists("vision/cifar@v2")
    other = tmp_path / "other-store"
    monkeypatch.setenv("DVX_STORE", str(other))
    commit_tree("elsewhere", {"z.txt": "z"}, tmp_path / "z")
    moved = fsspec.filesystem("dvx")
    assert moved is not default
    assert moved.exists("elsewhere@v1/z.txt") and not moved.exists("vision/cifar@v2")
    explicit = fsspec.filesystem("dvx", store=str(isolated["store"]))
    assert explicit.cat("vision/cifar@v1/labels.csv") == b"id,label\n1,cat\n"
    assert fsspec.open("dvx://elsewhere@v1/z.txt").open().read() == b"z"


def test_models_by_prefix_or_kind(tmp_path):
    write_tree(tmp_path / "ckpt", {"weights.bin": rand(5, 1000), "config.json": "{}"})
    dvx.Model.register("resnet", str(tmp_path / "ckpt"), aliases=["production"])
    commit_tree("resnet", {"readme.txt": "a dataset of the same name"}, tmp_path / "ds")
    fs = fsspec.filesystem("dvx")
    assert fs.cat("dvx://model:resnet@production/weights.bin") == rand(5, 1000)
    assert fs.info("model:resnet/config.json")["kind"] == "model"
    assert fs.ls("model:resnet@v1", detail=False) == ["model:resnet@v1/config.json", "model:resnet@v1/weights.bin"]
    assert fs.cat("resnet@v1/readme.txt") == b"a dataset of the same name"
    models = fsspec.filesystem("dvx", kind="model")
    assert models.cat("resnet@v1/config.json") == b"{}"
    assert models.cat("dataset:resnet@v1/readme.txt") == b"a dataset of the same name"
    assert models.pin("resnet/config.json") == "resnet@v1/config.json"
    assert fs.pin("model:resnet/config.json") == "model:resnet@v1/config.json"
    assert fs.ls("model:", detail=False) == ["model:resnet"]
    with pytest.raises(dvx.UsageError):
        fsspec.filesystem("dvx", kind="pipeline")


def test_links_read_as_their_target(tmp_path):
    write_tree(tmp_path / "src", {"data/real.txt": "content"})
    os.symlink("real.txt", tmp_path / "src" / "data" / "alias.txt")
    ds = dvx.Dataset.create("linked")
    ds.add(tmp_path / "src")
    ds.commit("links")
    fs = fsspec.filesystem("dvx")
    info = fs.info("linked@v1/data/alias.txt")
    assert (info["type"], info["size"], info["link"]) == ("file", 7, "real.txt")
    assert fs.cat("linked@v1/data/alias.txt") == b"content"


def test_files_pickle_to_the_exact_version(cifar, tmp_path):
    """A file opened by a bare name carries NAME@vN, so a worker that unpickles it reads the same bytes
    even after a new version appears."""
    fs = fsspec.filesystem("dvx")
    f = fs.open("vision/cifar/train/b.png")
    f.seek(100)
    assert f.path == "vision/cifar@v2/train/b.png"
    commit_tree("vision/cifar", {"train/b.png": "changed"}, tmp_path / "v3")
    clone = pickle.loads(pickle.dumps(f))
    assert clone.tell() == 100 and clone.read(50) == cifar["train/b.png"][100:150]
    clone.close()
    f.close()
    assert pickle.loads(pickle.dumps(fs)).exists("vision/cifar@v2/train/b.png")


# -- writes are refused -------------------------------------------------------------------------------------

def test_every_write_is_refused_with_a_clear_error(cifar, tmp_path):
    fs = fsspec.filesystem("dvx")
    (tmp_path / "local.txt").write_text("x")
    path = "vision/cifar@v2/new.txt"
    attempts = [
        lambda: fs.open(path, "wb"), lambda: fs.open(path, "w"), lambda: fs.open(path, "ab"),
        lambda: fs.open(path, "xb"), lambda: fs.pipe(path, b"x"), lambda: fs.pipe_file(path, b"x"),
        lambda: fs.write_bytes(path, b"x"), lambda: fs.write_text(path, "x"), lambda: fs.touch(path),
        lambda: fs.mkdir("vision/cifar@v2/d"), lambda: fs.makedirs("vision/cifar@v2/d", exist_ok=True),
        lambda: fs.rm("vision/cifar@v2/labels.csv"), lambda: fs.rm_file("vision/cifar@v2/labels.csv"),
        lambda: fs.rmdir("vision/cifar@v2/test"), lambda: fs.put(str(tmp_path / "local.txt"), path),
        lambda: fs.put_file(str(tmp_path / "local.txt"), path),
        lambda: fs.cp_file("vision/cifar@v2/labels.csv", path), lambda: fs.copy("vision/cifar@v2/labels.csv", path),
        lambda: fs.mv("vision/cifar@v2/labels.csv", path),
        lambda: fsspec.open("dvx://" + path, "wb").open(),
    ]
    for attempt in attempts:
        with pytest.raises(PermissionError, match="read-only: dvx versions are immutable.*dvx dataset commit"):
            attempt()
    assert fs.cat("vision/cifar@v2/labels.csv") == cifar["labels.csv"]
    assert not fs.exists(path)


# -- pandas and pyarrow ---------------------------------------------------------------------------------------

def test_pandas_csv_round_trip(tmp_path, monkeypatch, isolated):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"id": range(2000), "label": [f"class-{i % 7}" for i in range(2000)],
                          "score": [i / 3 for i in range(2000)]})
    (tmp_path / "csv").mkdir()
    frame.to_csv(tmp_path / "csv" / "labels.csv", index=False)
    commit_tree("tables", {}, tmp_path / "csv")
    back = pd.read_csv("dvx://tables@v1/labels.csv")
    pd.testing.assert_frame_equal(back, frame)
    pd.testing.assert_frame_equal(pd.read_csv("dvx://tables/labels.csv"), frame)
    monkeypatch.delenv("DVX_STORE")  # the default store is elsewhere now: storage_options picks this one
    assert not fsspec.filesystem("dvx").exists("tables@v1")
    pd.testing.assert_frame_equal(
        pd.read_csv("dvx://tables@v1/labels.csv", storage_options={"store": str(isolated["store"])}), frame)
    with pytest.raises(FileNotFoundError):
        pd.read_csv("dvx://tables@v1/missing.csv")


def test_parquet_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pd = pytest.importorskip("pandas")
    table = pa.table({"id": list(range(50_000)), "value": [float(i) * 1.5 for i in range(50_000)],
                      "name": [f"row-{i}" for i in range(50_000)]})
    (tmp_path / "pq" / "part").mkdir(parents=True)
    pq.write_table(table, tmp_path / "pq" / "part" / "part-0.parquet", row_group_size=10_000)
    pq.write_table(table.slice(0, 10), tmp_path / "pq" / "part" / "part-1.parquet")
    commit_tree("events", {}, tmp_path / "pq")

    fs = fsspec.filesystem("dvx")
    assert pq.read_table("dvx://events@v1/part/part-0.parquet", filesystem=fs).equals(table)
    assert pq.read_table("events@v1/part/part-0.parquet", filesystem=fs, columns=["name"]).column(0).equals(
        table.column("name"))
    assert pq.ParquetFile(fs.open("events@v1/part/part-0.parquet")).metadata.num_row_groups == 5
    folder = pq.read_table("events@v1/part", filesystem=fs)
    assert folder.num_rows == 50_010
    frame = pd.read_parquet("dvx://events@v1/part/part-0.parquet")
    assert list(frame["id"][:3]) == [0, 1, 2] and len(frame) == 50_000
    assert pd.read_parquet("dvx://events/part/part-1.parquet")["name"].tolist() == [f"row-{i}" for i in range(10)]


def test_cli_and_filesystem_agree_on_content(cifar, tmp_path):
    out = tmp_path / "cli"
    run_dvx("get", "vision/cifar@v2", "-o", str(out))
    fs = fsspec.filesystem("dvx")
    for path, content in cifar.items():
        assert (out / path).read_bytes() == fs.cat(f"vision/cifar@v2/{path}") == content
