"""The CI integration as shipped: the GitHub Actions workflow (docs template and dvx's own use of it on
the fixture project) and the pre-commit hooks run their real commands and fail on real problems."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from conftest import dvx_executable

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "ci-project"


def _dvx_steps(workflow: Path) -> list[str]:
    """The `run:` commands of the workflow's steps that are dvx commands, in order."""
    steps = yaml.safe_load(workflow.read_text())["jobs"]["data-checks"]["steps"]
    return [step["run"] for step in steps if step.get("run", "").startswith("dvx ")]


def _bash(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _env(tmp_path: Path) -> dict:
    return dict(os.environ, DVX_STORE=str(tmp_path / "store"), DVX_STATE_DIR=str(tmp_path / "state"),
                DVX_CACHE_DIR=str(tmp_path / "cache"),
                PATH=f"{Path(dvx_executable()).parent}{os.pathsep}{os.environ['PATH']}")


def test_workflow_files_are_valid_and_share_their_dvx_steps():
    """Both workflows parse as YAML, and dvx's own runs exactly the documented template's dvx steps."""
    own = ROOT / ".github" / "workflows" / "data-checks.yml"
    template = ROOT / "docs" / "ci" / "data-checks.yml"
    for path in (own, template):
        doc = yaml.safe_load(path.read_text())
        assert doc["jobs"]["data-checks"]["steps"], path
    assert _dvx_steps(own) == _dvx_steps(template)
    assert any("dvx check" in step for step in _dvx_steps(own))


def test_workflow_steps_pass_on_the_fixture_and_fail_on_drift(tmp_path: Path):
    """Build the fixture store (as the workflow does), run every dvx step: all pass and the JUnit file is
    written; then break the data and the steps fail."""
    project = tmp_path / "ci-project"
    shutil.copytree(FIXTURE, project, ignore=shutil.ignore_patterns("data", ".dvx", "dvx-checks.xml"))
    env = _env(tmp_path)
    built = _bash("bash make-store.sh", project, env)
    assert built.returncode == 0, built.stderr
    for step in _dvx_steps(ROOT / ".github" / "workflows" / "data-checks.yml"):
        proc = _bash(step, project, env)
        assert proc.returncode == 0, (step, proc.stdout, proc.stderr)
    report = ET.parse(project / "dvx-checks.xml").getroot()
    assert report.iter("testcase") and not list(report.iter("failure"))

    (project / "data" / "events" / "events.csv").write_text("tampered\n")
    assert _bash("dvx pull events && dvx status", project, env).returncode == 0  # pull repairs the folder
    (project / "data" / "events" / "events.csv").write_text("tampered\n")
    assert _bash("dvx status", project, env).returncode == 1


def test_pre_commit_hooks_run_dvx_status(tmp_path: Path):
    """The hooks' entry command is what pre-commit runs (no file arguments): exit 0 when the pinned
    folders match, 1 when they drift."""
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"dvx-status", "dvx-status-system"}
    project = tmp_path / "ci-project"
    shutil.copytree(FIXTURE, project, ignore=shutil.ignore_patterns("data", ".dvx", "dvx-checks.xml"))
    env = _env(tmp_path)
    assert _bash("bash make-store.sh && dvx pull", project, env).returncode == 0
    for hook in hooks:
        assert hook["pass_filenames"] is False and hook["always_run"] is True
        assert _bash(hook["entry"], project, env).returncode == 0
    (project / "data" / "events" / "README.md").unlink()
    for hook in hooks:
        proc = _bash(hook["entry"], project, env)
        assert proc.returncode == 1 and "missing" in proc.stdout
