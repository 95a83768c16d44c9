"""deployments/ci/: the GitHub Actions workflow's and the GitLab CI file's own commands, taken from the YAML and
run as the CI service would run them (bash -eo pipefail, the service's variables), without the service:
`bake validate --json` with the findings as annotations on a changed template set, and on main the
`image-pipeline` deployment run for the commit, waited for, against a real Prefect server and process worker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml

from tests.e2e.conftest import REPO
from tests.e2e.deployment_fixtures import process_worker
from tests.support import new_family, remove_family
from tests.support.servers import PrefectServer

pytestmark = pytest.mark.e2e
pytest_plugins = ("tests.e2e.deployment_fixtures",)  # server, api, deployments
CI = REPO / "deployments" / "ci"
VENV_BIN = str(Path(sys.executable).parent)


def github_step(step_id: str) -> str:
    workflow = yaml.safe_load((CI / "github-actions.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"] if s.get("id") == step_id]
    assert len(steps) == 1, step_id
    return str(steps[0]["run"])


def gitlab_script(job: str) -> str:
    return "\n".join(yaml.safe_load((CI / "gitlab-ci.yml").read_text())[job]["script"])


def run_ci(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """As both services run a step: bash with -e and pipefail, the job's variables in the environment."""
    base = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "BAKERY_CHECKOUT")}
    full = {**base, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "BAKERY_LOCAL_SERVER": "off", **env}
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture
def changed_checkout(tmp_path: Path) -> Path:
    """A checkout whose packer/ is a public template set with two lint warnings (a changed template), and the spec."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "tests" / "fixtures" / "templates" / "learn-docker", checkout / "packer")
    shutil.rmtree(checkout / "packer" / "plugins")  # required_plugins: Packer 1.7+ only (this Packer is 1.6)
    (checkout / "packer" / "test").mkdir()
    shutil.copy(REPO / "packer" / "test" / "image_spec.yaml", checkout / "packer" / "test" / "image_spec.yaml")
    (checkout / "deployments" / "ci").mkdir(parents=True)
    shutil.copy(CI / "annotate.py", checkout / "deployments" / "ci" / "annotate.py")
    (checkout / ".venv").symlink_to(REPO / ".venv")
    return checkout


def test_github_validate_step_annotates_the_lint_findings(changed_checkout: Path, tmp_path: Path) -> None:
    done = run_ci(github_step("validate"), changed_checkout, BAKERY_STATE_DIR=str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    annotations = done.stdout.splitlines()
    assert any(
        a.startswith("::warning file=packer/example.pkr.hcl,line=6,title=bakery cleanup-last::") for a in annotations
    ), done.stdout
    assert any("title=bakery version-tag::" in a for a in annotations), done.stdout
    report = json.loads((changed_checkout / "validate.json").read_text())
    assert report["valid"] is True and report["warnings"] == 2


def test_gitlab_validate_job_writes_a_code_quality_report_and_fails_a_broken_template(
    changed_checkout: Path, tmp_path: Path
) -> None:
    script = gitlab_script("validate")
    done = run_ci(script, changed_checkout, BAKERY_STATE_DIR=str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    quality = json.loads((changed_checkout / "gl-code-quality-report.json").read_text())
    assert {(q["check_name"], q["location"]["path"], q["severity"]) for q in quality} == {
        ("bakery-cleanup-last", "packer/example.pkr.hcl", "minor"),
        ("bakery-version-tag", "packer/example.pkr.hcl", "minor"),
    }
    template = changed_checkout / "packer" / "example.pkr.hcl"
    template.write_text(template.read_text() + "\nsource {\n")  # a syntax error: the job fails with bake's status
    broken = run_ci(script, changed_checkout, BAKERY_STATE_DIR=str(tmp_path / "state"))
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert "example.pkr.hcl" in broken.stderr


def flow_runs_of(api: httpx.Client, commit: str) -> list[dict[str, Any]]:
    runs = api.post("/flow_runs/filter", json={"flows": {"name": {"any_": ["image-pipeline"]}}}).json()
    return [r for r in runs if r["parameters"].get("commit") == commit]


def test_main_build_step_runs_the_deployment_for_the_commit_and_waits_for_it(
    server: PrefectServer, api: httpx.Client, deployments: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    commit = head.stdout.strip()
    other = "0" * 40
    with process_worker(server, tmp_path) as log:
        # GitLab's job for a commit the worker's checkout is not at: the run fails, and so does the job.
        wrong = run_ci(gitlab_script("build"), tmp_path, PREFECT_API_URL=server.url, CI_COMMIT_SHA=other)
        assert wrong.returncode == 1, wrong.stdout[-3000:] + wrong.stderr[-3000:]
        assert "finished in state 'Failed'" in wrong.stdout + wrong.stderr
        [failed] = flow_runs_of(api, other)
        assert "the checkout this run uses" in failed["state"]["message"], failed["state"]

        # GitHub's step for the commit the checkout is at: built, tested, staged, and the step waited for it.
        # Its image family is this test's own (one more --param): the step never moves the user's app-base tags.
        step = github_step("pipeline").strip()
        assert step.startswith("prefect deployment run ") and "\n" not in step, step
        family = new_family("e2e-ci")
        try:
            done = run_ci(f"{step} --param family={family}", tmp_path, PREFECT_API_URL=server.url, GITHUB_SHA=commit)
        finally:
            remove_family(docker.from_env(), family)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + log.read_text()[-3000:]
    [run] = flow_runs_of(api, commit)
    assert run["state_type"] == "COMPLETED"
    assert "finished successfully" in done.stdout + done.stderr
