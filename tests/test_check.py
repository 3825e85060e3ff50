"""`dvx check`: expectations on pinned versions, run as a CI job would run them (real CLI in subprocesses):
every expectation kind passing and failing, exit codes 0/1/2/3, --json against docs/check-schema.json,
--junit parsed back."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_dvx, write_tree

DOCS = Path(__file__).resolve().parent.parent / "docs"
WEIRD = 'weird/we<&>"ird.csv'  # a path that must be escaped in XML
LABELS_V1 = "id,label\n1,cat\n2,dog\n"
LABELS_V2 = "id,label,split\n1,cat,train\n\n2,dog,train\n3,cow,test\n"  # a blank line is not a row
BIG_ROWS = 20_000  # other's big/rows.csv spans several chunks, so streaming crosses chunk boundaries


# -- running the command ----------------------------------------------------------------------------------

def run_check(*args: str, code: int | None = 0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`dvx check ARGS`; asserts the exit code (unless None) and that no traceback was printed."""
    proc = run_dvx("check", *args, check=False, env=env)
    if code is not None:
        assert proc.returncode == code, (f"dvx check {' '.join(args)} exited {proc.returncode}, expected {code}\n"
                                         f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def check_json(*args: str, code: int = 0) -> dict:
    return json.loads(run_check(*args, "--json", code=code).stdout)


# -- one store for the whole module, copied into each test's isolated store ------------------------------

def _parquet(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.table(columns), out)
    return out.getvalue()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict:
    """Datasets made once through the CLI: ds@v1 (10 files), ds@v2 (17: 8 added, 1 removed, 1 modified,
    1 renamed, one of them a link, two Parquet files and a broken one) and other@v1 (a multi-chunk CSV),
    with ds@v2 and other@v1 pinned."""
    base = tmp_path_factory.mktemp("check-template")
    env = {"DVX_STORE": str(base / "store"), "DVX_STATE_DIR": str(base / "state"),
           "DVX_CACHE_DIR": str(base / "cache"), "DVX_DATA_DIR": str(base / "data"), "HOME": str(base / "home"),
           "DVX_CACHE_MAX_SIZE": None, "DVX_JOBS": None, "DVX_AUTHOR": None, "NO_COLOR": "1"}
    work = base / "work"
    work.mkdir()

    def dvx(*args: str) -> subprocess.CompletedProcess:
        return run_dvx(*args, cwd=work, env=env)

    dvx("init")
    v1 = {"labels.csv": LABELS_V1, "README": "readme v1\n", **{f"train/{i}.txt": f"sample {i}\n" for i in range(8)}}
    write_tree(base / "v1", v1)
    dvx("dataset", "create", "ds")
    dvx("dataset", "add", str(base / "v1"))
    first = json.loads(dvx("dataset", "commit", "-m", "one", "--json").stdout)

    v2 = {k: v for k, v in v1.items() if k not in ("train/7.txt", "README")}
    v2.update({
        "labels.csv": LABELS_V2, "docs/README": v1["README"], "train/8.txt": "sample 8\n", "train/9.txt": "sample 9\n",
        "train/.DS_Store": "finder junk\n", WEIRD: "a;b\n1;2\n",
        "features/part-0.parquet": _parquet({"id": [1, 2, 3], "score": [0.5, 0.25, 1.0], "label": ["a", "b", "c"]}),
        "features/part-1.parquet": _parquet({"id": [4, 5], "score": [0.1, 0.2], "label": ["d", "e"]}),
        "features/broken.parquet": b"this is not a parquet file",
    })
    write_tree(base / "v2", v2)
    os.symlink("labels.csv", base / "v2" / "current.csv")
    dvx("dataset", "create", "ds")
    dvx("dataset", "sync", str(base / "v2"))
    second = json.loads(dvx("dataset", "commit", "-m", "two", "--json").stdout)
    assert second["files"] == 17

    write_tree(base / "other", {"big/rows.csv": "n,square\n" + "".join(f"{i},{i * i}\n" for i in range(BIG_ROWS))})
    dvx("dataset", "create", "other")
    dvx("dataset", "add", str(base / "other"))
    other = json.loads(dvx("dataset", "commit", "-m", "big", "--json").stdout)
    dvx("pin", "ds@v2")
    dvx("pin", "other@v1")
    return {"base": base, "work": work, "v1": first, "v2": second, "other": other}


@pytest.fixture
def project(template: dict, isolated) -> dict:
    """The template's store and dvx.toml in this test's isolated store and work folder."""
    shutil.copytree(template["base"] / "store", isolated["store"])
    shutil.copy(template["work"] / "dvx.toml", isolated["work"] / "dvx.toml")
    (isolated["work"] / ".dvx").mkdir()
    return {**template, "toml": isolated["work"] / "dvx.toml"}


def expect(project: dict, text: str, *, pin_v1: bool = False) -> None:
    """The template's dvx.toml plus `text` (optionally with ds pinned at v1 instead of v2)."""
    base = (project["work"] / "dvx.toml").read_text()
    if pin_v1:
        base = base.replace('version = "ds@v2"', 'version = "ds@v1"').replace(project["v2"]["id"], project["v1"]["id"])
    project["toml"].write_text(base + "\n" + text)


def by_check(report: dict, name: str = "ds") -> dict[str, dict]:
    pin = next(p for p in report["pins"] if p["name"] == name)
    return {c["check"]: c for c in pin["checks"]}


PASSING = """
[datasets.ds.expect]
files = { min = 17, max = 17 }
bytes = { min = BYTES, max = "1MiB" }
require = ["labels.csv", "train", "features/part-*.parquet"]
forbid = ["*.tmp", "**/Thumbs.db"]
changes = { added = 0.8, removed = 0.1, modified = 0.2 }   # exactly at the limits

[[datasets.ds.expect.csv]]
glob = "labels.csv"
columns = ["split", "id"]
rows = { min = 3, max = 3 }

[[datasets.ds.expect.csv]]
glob = "current.csv"          # a link to labels.csv
columns = ["id", "label", "split"]
exact = true

[[datasets.ds.expect.csv]]
glob = "weird/*.csv"
delimiter = ";"
columns = ["a", "b"]
rows_total = { min = 1, max = 1 }

[[datasets.ds.expect.parquet]]
glob = "features/part-*.parquet"
columns = ["id", "label"]
types = { id = "int64", score = "float64", label = "string" }
rows = { min = 2 }
rows_total = { min = 5, max = 5 }
"""

FAILING = """
[datasets.ds.expect]
files = { max = 10 }
bytes = { min = "1GiB" }
require = ["labels.csv", "test/*"]
forbid = ["*/.DS_Store", "*.parquet", "weird/*<&>*"]
changes = { added = 0.5, removed = 0.0, modified = 0.19 }

[[datasets.ds.expect.csv]]
glob = "labels.csv"
columns = ["id", "label", "weight"]
rows = { min = 10 }

[[datasets.ds.expect.csv]]
glob = "labels.csv"
columns = ["label", "id", "split"]
exact = true
rows_total = { max = 2 }

[[datasets.ds.expect.csv]]
glob = "missing/*.csv"
columns = ["x"]

[[datasets.ds.expect.csv]]
glob = "weird"
columns = ["a", "c"]

[[datasets.ds.expect.parquet]]
glob = "features/*.parquet"
columns = ["id", "embedding"]
types = { id = "int32", score = "double", extra = "string" }
rows = { max = 2 }
rows_total = { max = 4 }
"""


# -- every kind, passing and failing ----------------------------------------------------------------------

def test_every_expectation_kind_passes(project: dict):
    expect(project, PASSING.replace("BYTES", str(project["v2"]["bytes"])))
    proc = run_check(code=0)
    assert "FAIL" not in proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0] == "ds@v2"
    parts = ["features/part-0.parquet", "features/part-1.parquet"]
    expected = [
        "files", "bytes", "require:labels.csv", "require:train", "require:features/part-*.parquet", "forbid:*.tmp",
        "forbid:**/Thumbs.db", "changes:added", "changes:removed", "changes:modified",
        "csv[0]:match", "csv[0]:columns:labels.csv", "csv[0]:rows:labels.csv",
        "csv[1]:match", "csv[1]:columns:current.csv",
        "csv[2]:match", f"csv[2]:columns:{WEIRD}", "csv[2]:rows_total",
        "parquet[0]:match", *[f"parquet[0]:{kind}:{p}" for p in parts for kind in ("columns", "types", "rows")],
        "parquet[0]:rows_total",
    ]
    assert [line.split(": ", 1)[0] for line in lines[1:-1]] == [f"  PASS  {c}" for c in expected]
    assert lines[-1] == f"ok: {len(expected)} checks on 1 pin, {len(expected)} passed"
    assert "  PASS  files: 17 files, expected exactly 17" in lines
    assert "  PASS  csv[0]:rows:labels.csv: 3 rows, expected exactly 3" in lines
    report = check_json()
    assert report["ok"] and report["summary"] == {"pins": 1, "checks": len(expected), "passed": len(expected),
                                                  "failed": 0}
    checks = by_check(report)
    assert checks["changes:added"]["details"] == {"parent": "ds@v1", "parent_files": 10, "count": 8, "share": 0.8,
                                                  "limit": 0.8}
    assert checks["changes:modified"]["details"]["count"] == 2  # labels.csv and the rename README → docs/README
    assert checks["parquet[0]:types:features/part-0.parquet"]["details"]["types"] == {
        "id": "int64", "score": "double", "label": "string"}


def test_every_expectation_kind_fails(project: dict, isolated):
    expect(project, FAILING)
    junit = isolated["work"] / "out" / "junit.xml"
    junit.parent.mkdir()
    proc = run_check("--junit", junit, code=1)
    assert "FAILED:" in proc.stdout.splitlines()[-1]
    report = check_json(code=1)
    assert report["ok"] is False
    checks = by_check(report)
    passed = {c for c, r in checks.items() if r["passed"]}
    assert passed == {"require:labels.csv", "csv[0]:match", "csv[1]:match", "csv[3]:match", "parquet[0]:match",
                      "parquet[0]:rows:features/part-1.parquet"}

    def failed(check: str, *fragments: str) -> dict:
        result = checks.pop(check)
        assert result["passed"] is False, result
        for fragment in fragments:
            assert fragment in result["message"], (fragment, result["message"])
        return result["details"]

    failed("files", "17 files, expected at most 10")
    failed("bytes", f"{project['v2']['bytes']} bytes, expected at least {1 << 30}")
    failed("require:test/*", "no file matches 'test/*'")
    assert failed("forbid:*/.DS_Store", "train/.DS_Store")["offenders"] == ["train/.DS_Store"]
    assert failed("forbid:*.parquet", "3 files")["matches"] == 3
    failed("forbid:weird/*<&>*", WEIRD)
    failed("changes:added", "8 of 10 files added against ds@v1 (80.0%), at most 50.0% allowed")
    failed("changes:removed", "1 of 10 files removed", "at most 0.0%")
    failed("changes:modified", "2 of 10 files modified", "(20.0%), at most 19.0%")
    assert failed("csv[0]:columns:labels.csv", "missing column(s) [weight]")["missing"] == ["weight"]
    failed("csv[0]:rows:labels.csv", "3 rows, expected at least 10")
    failed("csv[1]:columns:labels.csv", "header is [id, label, split], expected exactly [label, id, split]")
    failed("csv[1]:rows_total", "3 rows in 1 file, expected at most 2")
    failed("csv[2]:match", "no file matches 'missing/*.csv'")
    failed(f"csv[3]:columns:{WEIRD}", "missing column(s) [a, c]", "header is [a;b]")  # default delimiter ","
    for part in ("columns", "types", "rows"):
        failed(f"parquet[0]:{part}:features/broken.parquet", "cannot read features/broken.parquet as Parquet")
    failed("parquet[0]:columns:features/part-0.parquet", "missing column(s) [embedding]")
    failed("parquet[0]:types:features/part-0.parquet", "id is int64, expected int32", "extra is missing")
    failed("parquet[0]:rows:features/part-0.parquet", "3 rows, expected at most 2")
    failed("parquet[0]:columns:features/part-1.parquet", "[embedding]")
    failed("parquet[0]:types:features/part-1.parquet", "id is int64, expected int32")
    failed("parquet[0]:rows_total", "cannot read 1 of 3 files: features/broken.parquet")
    assert set(checks) == passed, "a failing check the test does not know about"
    assert_matches_schema(report)

    tree = ET.parse(junit)  # written although the checks failed
    root = tree.getroot()
    total, failures = report["summary"]["checks"], report["summary"]["failed"]
    assert (root.tag, root.get("tests"), root.get("failures"), root.get("errors")) == (
        "testsuites", str(total), str(failures), "0")
    [suite] = root.findall("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("ds", str(total), str(failures))
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [c["check"] for c in by_check(report).values()]
    assert {c.get("classname") for c in cases} == {"dvx.ds"}
    failing = {c.get("name"): c.find("failure") for c in cases if c.find("failure") is not None}
    assert len(failing) == failures
    assert failing["files"].get("message") == "17 files, expected at most 10"
    odd = failing[f"csv[3]:columns:{WEIRD}"]  # '<&>"' in the name, the message and the text, all escaped
    assert odd.get("message") == "missing column(s) [a, c]; header is [a;b]" and WEIRD in odd.text
    assert failing["forbid:weird/*<&>*"].get("message").endswith(WEIRD)
    raw = junit.read_text(encoding="utf-8")
    assert 'we&lt;&amp;&gt;&quot;ird.csv' in raw and WEIRD not in raw
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props == {"kind": "dataset", "version": "ds@v2", "id": project["v2"]["id"]}


def test_a_csv_whose_data_changes_between_versions(project: dict):
    """The same expectations fail on v1 (no split column, 2 rows) and pass on v2."""
    table = """
[datasets.ds.expect]
changes = { modified = 0.5 }

[[datasets.ds.expect.csv]]
glob = "labels.csv"
columns = ["id", "label", "split"]
rows = { min = 3 }
"""
    expect(project, table, pin_v1=True)
    checks = by_check(check_json(code=1))
    assert checks["csv[0]:columns:labels.csv"]["message"] == "missing column(s) [split]; header is [id, label]"
    assert checks["csv[0]:rows:labels.csv"]["details"] == {"path": "labels.csv", "rows": 2, "min": 3, "max": None}
    assert checks["changes:modified"]["passed"]  # v1 has no parent: passes, and says so
    assert checks["changes:modified"]["message"] == "ds@v1 has no parent version: nothing to compare"
    assert checks["changes:modified"]["details"]["parent"] is None
    expect(project, table)
    report = check_json(code=0)
    assert by_check(report)["csv[0]:rows:labels.csv"]["details"]["rows"] == 3
    assert report["pins"][0]["version"] == "ds@v2"


def test_large_csv_is_streamed_across_chunks(project: dict):
    """Row counts over a file of several chunks (streamed), the header alone read through a seekable file."""
    expect(project, f"""
[[datasets.other.expect.csv]]
glob = "big/rows.csv"
columns = ["n", "square"]
exact = true
rows = {{ min = {BIG_ROWS}, max = {BIG_ROWS} }}

[[datasets.other.expect.csv]]
glob = "big"
columns = ["square"]
""")
    checks = by_check(check_json("other"), "other")
    assert all(c["passed"] for c in checks.values()), checks
    assert checks["csv[0]:rows:big/rows.csv"]["details"]["rows"] == BIG_ROWS


# -- --json against docs/check-schema.json ----------------------------------------------------------------

def _validate(value, schema: dict, root: dict, where: str = "$") -> None:
    """The subset of JSON Schema docs/check-schema.json uses: $ref, type, enum, required, properties,
    additionalProperties, items, minimum, pattern."""
    import re

    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        _validate(value, target, root, where)
        return
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]

        def is_a(kind: str) -> bool:
            if kind in ("integer", "number"):
                numeric = isinstance(value, int) if kind == "integer" else isinstance(value, (int, float))
                return numeric and not isinstance(value, bool)
            return isinstance(value, kinds[kind])
        assert any(is_a(k) for k in allowed), f"{where}: {value!r} is not {allowed}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "minimum" in schema and isinstance(value, (int, float)) and not isinstance(value, bool):
        assert value >= schema["minimum"], f"{where}: {value} < {schema['minimum']}"
    if "pattern" in schema and isinstance(value, str):
        assert re.search(schema["pattern"], value), f"{where}: {value!r} does not match {schema['pattern']}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key!r}"
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                _validate(item, properties[key], root, f"{where}.{key}")
            else:
                assert extra is not False, f"{where}: unexpected key {key!r}"
                if isinstance(extra, dict):
                    _validate(item, extra, root, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _validate(item, schema["items"], root, f"{where}[{i}]")


def assert_matches_schema(report: dict) -> None:
    schema = json.loads((DOCS / "check-schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    _validate(report, schema, schema)
    try:
        import jsonschema
    except ImportError:  # not a dependency: the walker above is the check that always runs
        return
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(report)


def test_json_output_matches_the_schema(project: dict):
    """Passing, failing, a pin without a parent, a named pin without expectations and a pinned version
    missing from the store, all in one report that the schema accepts."""
    expect(project, PASSING.replace("BYTES", "1") + """
[datasets.ghost]
source = "ghost@v1"
version = "ghost@v1"
id = "0123456789abcdef0123456789abcdef"

[datasets.ghost.expect]
files = { min = 1 }
""", pin_v1=True)
    report = check_json("ds", "other", "ghost", code=1)
    assert_matches_schema(report)
    assert [p["name"] for p in report["pins"]] == ["ds", "ghost", "other"]
    ds, ghost, other = report["pins"]
    assert ds["version"] == "ds@v1" and ds["id"] == project["v1"]["id"]
    assert other["checks"] == [] and other["ok"] and "no expectations" in other["note"]
    assert ghost["checks"][0]["check"] == "version" and not ghost["ok"]
    assert "not in store" in ghost["checks"][0]["message"]
    with pytest.raises(AssertionError):  # the walker really checks: a wrong type is caught
        _validate({**report, "ok": "yes"}, json.loads((DOCS / "check-schema.json").read_text()),
                  json.loads((DOCS / "check-schema.json").read_text()))


# -- naming pins, nothing to check -------------------------------------------------------------------------

def test_named_pins_and_pins_without_expectations(project: dict, isolated):
    proc = run_check(code=0)  # nothing has expectations yet: nothing to check is not a failure
    assert "nothing to check: no pin in" in proc.stdout
    junit = isolated["work"] / "j.xml"
    proc = run_check("other", "--junit", junit, code=0)
    assert proc.stdout.splitlines()[0].startswith("other@v1  (no expectations: add [datasets.\"other\".expect]")
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("skipped")) == ("other", "1", "1")
    assert suite.find("testcase/skipped") is not None
    proc = run_check("nope", "other", code=3)
    assert proc.stderr.strip().startswith("dvx: error: not pinned in") and proc.stderr.strip().endswith(": nope")
    expect(project, "[datasets.ds.expect]\nfiles = { min = 1 }\n")
    report = check_json()  # without names: only the pins that have expectations
    assert [p["name"] for p in report["pins"]] == ["ds"]


# -- configuration errors: exit 2 before anything runs ---------------------------------------------------

@pytest.mark.parametrize("table, key, fragment", [
    ("fils = { min = 1 }", "", "unknown key(s) fils"),
    ("files = { mn = 1 }", "files:", "unknown key(s) mn"),
    ("files = { min = 5, max = 2 }", "files:", "min (5) is greater than max (2)"),
    ("files = { min = true }", "files.min:", "must be a whole number"),
    ("files = {}", "files:", "needs min, max or both"),
    ("bytes = { max = \"lots\" }", "bytes.max:", "invalid size 'lots'"),
    ("bytes = { min = \"2GiB\", max = \"1GiB\" }", "bytes:", "greater than max"),
    ("require = \"labels.csv\"", "require:", "must be a list of globs"),
    ("forbid = [\"[abc\"]", "forbid[0]:", "'[' without a closing ']'"),
    ("forbid = [\"../x\"]", "forbid[0]:", "no '.' or '..' parts"),
    ("changes = { removed = 1.5 }", "changes.removed:", "between 0 and 1"),
    ("changes = { renamed = 0.1 }", "changes:", "unknown key(s) renamed"),
    ("csv = [{ columns = [\"a\"] }]", "csv[0]:", "needs glob"),
    ("csv = [{ glob = \"*.csv\", rows = { min = 3, max = 1 } }]", "csv[0].rows:", "greater than max"),
    ("csv = [{ glob = \"*.csv\", exact = true }]", "csv[0].exact:", "needs columns"),
    ("csv = [{ glob = \"*.csv\", columns = [\"a\"], delimiter = \";;\" }]", "csv[0].delimiter:", "one character"),
    ("parquet = [{ glob = \"*.parquet\", types = [\"int64\"] }]", "parquet[0].types:", "must be a table"),
])
def test_invalid_expectations_exit_2(project: dict, isolated, table: str, key: str, fragment: str):
    """A bad table names the file, the table and the key, and nothing is checked: the valid table of
    other (whose file counts would pass) is not run, and no JUnit file is written."""
    expect(project, f"[datasets.other.expect]\nfiles = {{ min = 1 }}\n\n[datasets.ds.expect]\n{table}\n")
    junit = isolated["work"] / "junit.xml"
    proc = run_check("--junit", junit, code=2)
    assert proc.stdout == "" and not junit.exists()
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"dvx: error: {project['toml']}: [datasets.\"ds\".expect] {key}"), line
    assert fragment in line, line


def test_parquet_expectations_need_pyarrow(project: dict, tmp_path: Path):
    fake = write_tree(tmp_path / "no-pyarrow", {"pyarrow/__init__.py": "raise ImportError('no pyarrow here')\n"})
    expect(project, "[[datasets.ds.expect.parquet]]\nglob = \"features/*\"\nrows = { min = 1 }\n")
    proc = run_check(code=2, env={"PYTHONPATH": str(fake)})
    assert "[datasets.\"ds\".expect] parquet[0]: checking Parquet files needs pyarrow: " \
           "pip install \"dvx[parquet]\"" in proc.stderr


def test_not_a_project_or_nothing_pinned_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    proc = run_check(code=2)
    assert proc.stderr.startswith("dvx: error: no project here")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run_dvx("init", cwd=fresh)
    monkeypatch.chdir(fresh)
    proc = run_check(code=2)
    assert proc.stderr.startswith(f"dvx: error: nothing is pinned in {fresh / 'dvx.toml'}")


def test_malformed_project_file_exits_2(project: dict):
    project["toml"].write_text("[datasets.ds\n")
    proc = run_check(code=2)
    assert "is not valid TOML" in proc.stderr


# -- the Python side ---------------------------------------------------------------------------------------

def test_run_checks_in_process_and_junit_escaping(project: dict):
    from dvx.api import Repo
    from dvx.api.checks import CheckReport, CheckResult, PinChecks, run_checks
    from dvx.api.pinning import Pin

    expect(project, "[datasets.ds.expect]\nforbid = [\"*.DS_Store\"]\n")
    repo = Repo()
    try:
        report = run_checks(repo, ["ds"])
    finally:
        repo.close()
    assert not report.ok and [r.check for r in report.results] == ["forbid:*.DS_Store"]
    assert report.results[0].details["offenders"] == ["train/.DS_Store"]
    assert report.to_dict()["summary"] == {"pins": 1, "checks": 1, "passed": 0, "failed": 1}

    pin = Pin("dataset", "a/b", "0" * 32, "a/b@v1", "a/b@v1")
    odd = 'x<&>"\x01\'y'  # markup characters and a control character XML 1.0 cannot hold
    report = CheckReport("dvx.toml", [PinChecks(pin, "a/b@v1", [
        CheckResult("a/b", "a/b@v1", f"forbid:{odd}", False, f"found {odd}"),
        CheckResult("a/b", "a/b@v1", "files", True, "ok")])])
    root = ET.fromstring(report.to_junit())
    case = root.find("testsuite/testcase")
    assert case.get("classname") == "dvx.a/b"
    assert case.get("name") == "forbid:x<&>\"\ufffd'y"
    assert case.find("failure").get("message") == "found x<&>\"\ufffd'y"
    assert (root.get("tests"), root.get("failures")) == ("2", "1")

